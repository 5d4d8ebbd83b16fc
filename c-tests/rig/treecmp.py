#!/usr/bin/env python3
"""Describe a directory tree and compare two of them.

  treecmp.py scan DIR [--no-content] [-o FILE]
      print (or write to FILE) the JSON description of DIR
  treecmp.py compare EXPECTED ACTUAL [--no-content] [--owners] [--max N]
      EXPECTED and ACTUAL are each a directory or a JSON description;
      prints the differences (at most N, default 20) and a summary line,
      exits 0 when the trees match, 1 when they differ, 2 on misuse.

A description maps every path below the top (relative, "/"-separated; the
top itself is left out: an extracted or mounted root has whatever mode
its mount point or target directory had) to
  {"type": "f"|"d"|"l"|"c"|"b"|"p"|"s", "mode": permission bits with
   setuid/setgid/sticky, "uid": .., "gid": ..,
   "size": bytes (files), "sha256": hex (files, unless --no-content),
   "target": symlink target (links)}.
File contents are hashed in 1 MiB reads; with --no-content nothing but
lstat() and readlink() touches the tree (a metadata-only walk).
Owners are compared only with --owners.  Timestamps are never compared.

Python standard library only.
"""

import argparse
import hashlib
import json
import os
import stat
import sys

CHUNK = 1 << 20

TYPES = [
    (stat.S_ISREG, "f"), (stat.S_ISDIR, "d"), (stat.S_ISLNK, "l"),
    (stat.S_ISCHR, "c"), (stat.S_ISBLK, "b"), (stat.S_ISFIFO, "p"),
    (stat.S_ISSOCK, "s"),
]


def kind(mode):
    for test, name in TYPES:
        if test(mode):
            return name
    return "?"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def describe(path, st, content):
    e = {"type": kind(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
         "uid": st.st_uid, "gid": st.st_gid}
    if e["type"] == "f":
        e["size"] = st.st_size
        if content:
            e["sha256"] = sha256_file(path)
    elif e["type"] == "l":
        e["target"] = os.readlink(path)
    return e


def scan(top, content=True):
    """The description of the tree under top (errors propagate)."""
    out = {}

    def walk(d, rel):
        with os.scandir(d) as it:
            names = sorted(e.name for e in it)
        for name in names:
            p = os.path.join(d, name)
            r = name if not rel else rel + "/" + name
            st = os.lstat(p)
            out[r] = describe(p, st, content)
            if stat.S_ISDIR(st.st_mode):
                walk(p, r)

    walk(top, "")
    return out


def load(src, content):
    if os.path.isdir(src):
        return scan(src, content)
    with open(src) as f:
        return json.load(f)


def fmt(e):
    if e is None:
        return "(absent)"
    s = f"{e['type']} {e['mode']:04o}"
    if "size" in e:
        s += f" size={e['size']}"
    if "sha256" in e:
        s += f" sha256={e['sha256'][:16]}"
    if "target" in e:
        s += f" -> {e['target']!r}"
    return s


def compare(exp, act, content=True, owners=False):
    """List of (path, expected, actual) for every differing path."""
    keys = ["type", "mode", "size", "target"]
    if content:
        keys.append("sha256")
    if owners:
        keys += ["uid", "gid"]
    diffs = []
    for path in sorted(set(exp) | set(act)):
        a, b = exp.get(path), act.get(path)
        if a is None or b is None:
            diffs.append((path, a, b))
            continue
        for k in keys:
            if a.get(k) != b.get(k):
                diffs.append((path, a, b))
                break
    return diffs


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scan")
    s.add_argument("dir")
    s.add_argument("--no-content", action="store_true")
    s.add_argument("-o", dest="out")
    c = sub.add_parser("compare")
    c.add_argument("expected")
    c.add_argument("actual")
    c.add_argument("--no-content", action="store_true")
    c.add_argument("--owners", action="store_true")
    c.add_argument("--max", type=int, default=20)
    a = ap.parse_args(argv)

    if a.cmd == "scan":
        d = scan(a.dir, not a.no_content)
        text = json.dumps(d, sort_keys=True, indent=0) + "\n"
        if a.out:
            tmp = a.out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, a.out)
        else:
            sys.stdout.write(text)
        return 0

    content = not a.no_content
    try:
        exp = load(a.expected, content)
        act = load(a.actual, content)
    except OSError as e:
        print(f"treecmp: {e}")
        return 1
    diffs = compare(exp, act, content, a.owners)
    for path, x, y in diffs[:a.max]:
        print(f"treecmp: {path}: expected {fmt(x)}, got {fmt(y)}")
    if len(diffs) > a.max:
        print(f"treecmp: ... and {len(diffs) - a.max} more")
    nfiles = sum(1 for e in exp.values() if e["type"] == "f")
    nbytes = sum(e.get("size", 0) for e in exp.values())
    what = "content, " if content else ""
    print(f"treecmp: {len(exp)} entries ({nfiles} files, {nbytes} bytes) "
          f"compared by {what}type, mode, size, link target"
          f"{', owner' if a.owners else ''}: {len(diffs)} differences")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
