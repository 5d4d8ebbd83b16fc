#!/usr/bin/env python3
"""Check the `flatten` and `decompress` views against an independent oracle.

Usage: flatten_tests.py WORKDIR FETCH

WORKDIR holds layered-fixtures.txt and blobs/sha256/ from
push_layered_fixtures.py; FETCH is the c-tests/fetch program.  Run as root
(GNU tar restores owners, setuid bits and xattrs).

For every image of layered-fixtures.txt:

* oracle: each saved layer blob is decompressed here (gzip module, `zstd`
  CLI) and its sha256 checked against the image config's diff_id; then the
  layers are applied bottom-up into a temporary directory the way
  docker/containerd apply layers: in each layer the whiteouts `.wh.x`
  (delete x and its subtree) and opaque markers `.wh..wh..opq` (empty the
  directory) act first, on the lower layers' result only; then the other
  entries are extracted in order: a directory over a directory keeps the
  content and takes the new metadata, any other clash removes the old
  entry (a whole subtree for a directory), hard links link to the entry
  already extracted at their target.  Directory mtimes are set last, from
  the topmost header of each directory.
* `decompress=none` (explicit and by default) gives each layer's raw blob;
  `decompress=auto` gives its uncompressed tar.
* `flatten` gives one tar that (i) Python's tarfile lists without error,
  with no `.wh.` name, no path twice, and every hard link after its
  target, and headers (type, mode, owner, mtime, size, symlink target,
  xattrs) equal to the oracle's; (ii) GNU tar extracts (`-x --xattrs --xattrs-include='*' -p
  --numeric-owner`) into a tree equal to the oracle's: paths, types,
  contents, symlink targets, modes, owners, mtimes (seconds), xattrs, and
  the same hard-link groups.

When WORKDIR/bin holds the patched erofs-utils of c-tests/erofs-utils/erofs-utils.sh
(mkfs.erofs-1.8, mkfs.erofs-1.9 and the fsck.erofs of each), also, for both
versions:

* `mkfs.erofs-V --tar=f IMG 'oci://REF?flatten,platform=linux/amd64'`
  builds an EROFS image of the whole image, `fsck.erofs-V --extract=DIR
  --preserve --xattrs IMG` checks and extracts it, and DIR is compared with
  the oracle's tree: paths, types, contents, symlink targets, modes, owners,
  mtimes (seconds; directories too: fsck sets a directory's times after
  its contents), xattrs (user.*), link counts and hard-link groups.
* for every gzip or zstd layer, `oci://REF?layer=N,decompress=auto,...`
  the same way against that one layer's tar applied alone to an empty tree
  (no whiteout processing: mkfs.erofs without --aufs keeps `.wh.*` names
  as regular files).  A layer with a hard link to a file of a lower layer
  cannot be built on its own (mkfs.erofs resolves hard links within the one
  tar and fails with ENOENT); for those the check is that mkfs.erofs fails
  the same way on the library's stream as on the oracle's decompressed tar.

Without these binaries it prints `skipped: erofs-utils not built` and
counts nothing for them.

Prints one `ok …` / `FAIL …` line per check and ends with
`N passed, N failed`; exits 1 if anything failed.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

PLATFORM = "linux/amd64"
MAX_DETAILS = 25


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what):
        self.passed += 1
        print(f"ok {what}", flush=True)

    def fail(self, what, details=()):
        self.failed += 1
        print(f"FAIL {what}", flush=True)
        details = list(details)
        for d in details[:MAX_DETAILS]:
            print(f"    {d}", flush=True)
        if len(details) > MAX_DETAILS:
            print(f"    ... and {len(details) - MAX_DETAILS} more", flush=True)

    def check(self, cond, what, details=()):
        if cond:
            self.ok(what)
        else:
            self.fail(what, details)
        return cond


# --- fixtures ---------------------------------------------------------------------


def read_fixtures(path):
    images = {}  # ref -> {"nlayers", "manifest", "layers": [(digest, size, mt)]}
    order = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if parts[0] == "image":
                images[parts[1]] = {"nlayers": int(parts[2]), "layers": {}}
                order.append(parts[1])
            elif parts[0] == "manifest":
                images[parts[1]]["manifest"] = parts[3]
            elif parts[0] == "layer":
                images[parts[1]]["layers"][int(parts[3])] = (parts[4], int(parts[5]), parts[6])
    out = []
    for ref in order:
        img = images[ref]
        layers = [img["layers"][i] for i in range(img["nlayers"])]
        out.append((ref, img["manifest"], layers))
    return out


def blob_path(work, digest):
    return os.path.join(work, "blobs", "sha256", digest.split(":", 1)[1])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def decompress(blob_file, media_type):
    """The uncompressed tar of a saved layer blob, by media type (with the
    magic number as a cross-check)."""
    with open(blob_file, "rb") as f:
        data = f.read()
    if media_type.endswith("+gzip") or media_type.endswith(".tar.gzip"):
        assert data[:2] == b"\x1f\x8b", "gzip media type without gzip magic"
        return gzip.decompress(data)
    if media_type.endswith("+zstd"):
        assert data[:4] == b"\x28\xb5\x2f\xfd", "zstd media type without zstd magic"
        return subprocess.run(["zstd", "-d", "-q", "-c"], input=data, stdout=subprocess.PIPE,
                              check=True).stdout
    if media_type.endswith(".tar"):
        return data
    raise ValueError(f"unknown layer media type {media_type}")


# --- the library through FETCH ------------------------------------------------------


def fetch(fetch_bin, ref, options, out_path):
    """FETCH REF OPTIONS cat > out_path; returns (rc, stderr text, seconds)."""
    t0 = time.monotonic()
    with open(out_path, "wb") as out:
        p = subprocess.run([fetch_bin, ref, options, "cat"], stdout=out,
                           stderr=subprocess.PIPE, timeout=900)
    return p.returncode, p.stderr.decode("utf-8", "replace").strip(), time.monotonic() - t0


# --- the oracle ----------------------------------------------------------------------


def norm(name):
    """Tar member name -> relative path ("" for the root); None if it climbs out."""
    parts = []
    for c in name.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(c)
    return "/".join(parts)


class Oracle:
    """Applies layers bottom-up into `root` with docker/containerd semantics.

    whiteouts=False: one layer's tar as-is, the way mkfs.erofs --tar (without
    --aufs) reads it: `.wh.*` names are ordinary entries, and a hard link
    whose target is not in the tree is recorded in `dangling` (mkfs.erofs
    fails on it) instead of being an oracle error."""

    def __init__(self, root, whiteouts=True):
        self.root = root
        self.whiteouts = whiteouts
        self.dangling = []     # (name, linkname) of hard links without a target
        self.dir_mtime = {}    # rel -> mtime from the topmost header
        self.implicit = set()  # directories made for a child without a header
        self.root_header = False  # some layer has an entry for the root itself

    def p(self, rel):
        return os.path.join(self.root, rel) if rel else self.root

    def _forget(self, rel):
        """Drop what we remember about rel and everything below it."""
        pre = rel + "/"
        for k in [k for k in self.dir_mtime if k == rel or k.startswith(pre)]:
            del self.dir_mtime[k]
        self.implicit = {k for k in self.implicit if not (k == rel or k.startswith(pre))}

    def _remove(self, rel):
        path = self.p(rel)
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
        self._forget(rel)

    def _parents(self, rel):
        parts = rel.split("/")[:-1]
        cur = ""
        for c in parts:
            cur = cur + "/" + c if cur else c
            path = self.p(cur)
            if os.path.lexists(path) and (os.path.islink(path) or not os.path.isdir(path)):
                self._remove(cur)
            if not os.path.lexists(path):
                os.mkdir(path, 0o755)
                self.implicit.add(cur)

    def apply(self, tar_bytes):
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            members = []
            for m in tar:
                data = tar.extractfile(m).read() if m.isreg() else None
                members.append((m, data))
        # Whiteouts and opaque markers first: they act on the lower layers only.
        rest = []
        for m, data in members:
            rel = norm(m.name)
            if rel is None:
                raise RuntimeError(f"oracle: unsafe member {m.name!r}")
            if not self.whiteouts:
                rest.append((rel, m, data))
                continue
            base = rel.rpartition("/")[2]
            parent = rel.rpartition("/")[0]
            if base == ".wh..wh..opq":
                path = self.p(parent)
                if os.path.isdir(path) and not os.path.islink(path):
                    for child in os.listdir(path):
                        self._remove((parent + "/" if parent else "") + child)
            elif base.startswith(".wh."):
                target = (parent + "/" if parent else "") + base[4:]
                if os.path.lexists(self.p(target)):
                    self._remove(target)
            else:
                rest.append((rel, m, data))
        for rel, m, data in rest:
            self._entry(rel, m, data)

    def _entry(self, rel, m, data):
        path = self.p(rel)
        if rel:
            self._parents(rel)
        if m.isdir():
            if os.path.lexists(path) and (os.path.islink(path) or not os.path.isdir(path)):
                self._remove(rel)
            if not os.path.lexists(path):
                os.mkdir(path, 0o700)
            self.implicit.discard(rel)
            os.chown(path, m.uid, m.gid)
            os.chmod(path, m.mode & 0o7777)
            self._xattrs(path, m)
            self.dir_mtime[rel] = int(m.mtime)
            self.root_header |= rel == ""
            return
        if os.path.lexists(path):
            self._remove(rel)
        if m.isreg():
            with open(path, "wb") as f:
                f.write(data)
            os.chown(path, m.uid, m.gid)
            os.chmod(path, m.mode & 0o7777)  # after chown, which clears setuid
            self._xattrs(path, m)
            os.utime(path, (int(m.mtime), int(m.mtime)))
        elif m.issym():
            os.symlink(m.linkname, path)
            os.lchown(path, m.uid, m.gid)
            os.utime(path, (int(m.mtime), int(m.mtime)), follow_symlinks=False)
        elif m.islnk():
            target = norm(m.linkname)
            tpath = self.p(target)
            if target is None or not os.path.lexists(tpath) or os.path.isdir(tpath):
                if not self.whiteouts:
                    self.dangling.append((m.name, m.linkname))
                    return
                raise RuntimeError(f"oracle: hard link {m.name} -> {m.linkname}: no target")
            os.link(tpath, path, follow_symlinks=False)
        else:
            raise RuntimeError(f"oracle: unexpected member type {m.type!r} for {m.name}")

    def _xattrs(self, path, m):
        for k, v in m.pax_headers.items():
            if k.startswith("SCHILY.xattr."):
                os.setxattr(path, k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)

    def finish(self):
        # Deepest first, so setting a child's time does not disturb a parent.
        for rel in sorted(self.dir_mtime, key=lambda r: -r.count("/") if r else 1):
            os.utime(self.p(rel), (self.dir_mtime[rel], self.dir_mtime[rel]))


# --- comparing trees -------------------------------------------------------------------


def snapshot(root):
    """rel -> record; plus hard-link groups (sets of rels sharing an inode)."""
    recs = {}
    inodes = {}

    def visit(rel):
        path = os.path.join(root, rel) if rel else root
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            kind, extra = "symlink", os.readlink(path)
        elif stat.S_ISDIR(st.st_mode):
            kind, extra = "dir", None
        elif stat.S_ISREG(st.st_mode):
            kind, extra = "file", (st.st_size, sha256_file(path))
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
        else:
            kind, extra = f"other({stat.S_IFMT(st.st_mode):o})", None
        xattrs = {}
        if kind != "symlink":
            for k in os.listxattr(path, follow_symlinks=False):
                if k.startswith("user."):
                    xattrs[k] = os.getxattr(path, k, follow_symlinks=False)
        recs[rel] = {
            "type": kind,
            "data": extra,
            "mode": None if kind == "symlink" else stat.S_IMODE(st.st_mode),
            "owner": (st.st_uid, st.st_gid),
            "mtime": st.st_mtime_ns // 1_000_000_000,
            "xattrs": xattrs,
            "nlink": st.st_nlink if kind == "file" else None,
        }
        if kind == "dir":
            for child in sorted(os.listdir(path)):
                visit(rel + "/" + child if rel else child)

    visit("")
    groups = {frozenset(g) for g in inodes.values()}
    return recs, groups


def compare_trees(res, label, want, got, want_groups, got_groups, implicit, root_header,
                  stream, dir_mtimes=False):
    """One check per aspect; details name the differing paths.  stream: the
    flattened members, so that a directory-mtime detail can say what the
    stream's header holds and what in the stream's order upsets GNU tar.
    dir_mtimes: compare directories' mtimes too (for an extractor that sets
    them after their contents, as fsck.erofs --extract does)."""
    index = {}
    for i, m in enumerate(stream):
        index.setdefault(norm(m.name), (i, m))

    def stream_note(p):
        if p not in index:
            return " [no member for this path in the stream]"
        i, m = index[p]
        pre = p + "/" if p else ""
        below = [(j, n) for j, n in enumerate(stream) if (norm(n.name) or "").startswith(pre)]
        # GNU tar sets a directory's times when it extracts the first member
        # outside it; members below it after that change them again.
        out = next((j for j in range(i + 1, len(stream))
                    if not (norm(stream[j].name) or "").startswith(pre)), len(stream))
        late = [n.name for j, n in below if j > out]
        # It makes symlinks with an absolute or ".." target only at the end
        # (placeholders first); one made before the directory's member was
        # read is not waited for.
        early = [n.name for j, n in below if j < i and n.issym() and
                 (n.linkname.startswith("/") or ".." in n.linkname.split("/"))]
        note = f" [stream member {i} has mtime {int(m.mtime)}"
        if late:
            note += (f"; {len(late)} member(s) below it come after a member outside it, "
                     f"first {late[0]!r}")
        if early:
            note += (f"; symlink(s) GNU tar creates last, before the directory's member: "
                     f"{', '.join(early)}")
        return note + "]"

    wp, gp = set(want), set(got)
    missing = sorted(wp - gp)
    extra = sorted(gp - wp)
    res.check(not missing and not extra, f"{label}: same set of paths ({len(wp)} expected)",
              [f"missing: {p}" for p in missing] + [f"unexpected: {p}" for p in extra])
    common = sorted(wp & gp)

    def aspect(name, key, paths, fmt=repr, note=None):
        diffs = []
        for p in paths:
            w, g = want[p][key], got[p][key]
            if w != g:
                diffs.append(f"{p or '/'}: expected {fmt(w)}, got {fmt(g)}"
                             + (note(p) if note else ""))
        res.check(not diffs, f"{label}: {name} ({len(paths)} paths)", diffs)

    aspect("types", "type", common)
    same_type = [p for p in common if want[p]["type"] == got[p]["type"]]
    files = [p for p in same_type if want[p]["type"] == "file"]
    links = [p for p in same_type if want[p]["type"] == "symlink"]
    aspect("file contents (size, sha256)", "data", files)
    aspect("symlink targets", "data", links)
    # The root is compared only when a layer has a header for it; directories
    # created implicitly (no header in any layer) have no defined metadata.
    meta_paths = [p for p in same_type if p not in implicit and (p or root_header)]
    aspect("modes", "mode", [p for p in meta_paths if want[p]["type"] != "symlink"],
           fmt=lambda m: "-" if m is None else f"{m:04o}")
    aspect("uid/gid", "owner", meta_paths)
    # Directory mtimes after extraction depend on GNU tar's order of work
    # (it sets a directory's times when it leaves it, and creates absolute
    # symlinks last): they are checked in the stream's headers instead
    # (the header check below), and here only for non-directories.
    if dir_mtimes:
        aspect("mtimes (seconds)", "mtime", meta_paths)
    else:
        aspect("mtimes (seconds), non-directories", "mtime",
               [p for p in meta_paths if want[p]["type"] != "dir"])
    aspect("xattrs (user.*)", "xattrs", meta_paths)
    aspect("link counts", "nlink", files)
    res.check(want_groups == got_groups,
              f"{label}: hard-link groups share an inode ({len(want_groups)} groups)",
              [f"expected group {sorted(g)}" for g in want_groups - got_groups] +
              [f"got group {sorted(g)}" for g in got_groups - want_groups])


# --- per-image tests --------------------------------------------------------------------


def check_listing(res, label, tar_path):
    """(i): Python's tarfile reads the stream; no .wh., no duplicates, links
    after their targets.  Returns the members, or None if unreadable."""
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        res.fail(f"{label}: tarfile reads the flattened stream", [repr(e)])
        return None
    res.ok(f"{label}: tarfile reads the flattened stream ({len(members)} members)")
    wh = [m.name for m in members if ".wh." in m.name]
    res.check(not wh, f"{label}: no member name contains .wh.", wh)
    seen = {}
    dups = []
    bad_links = []
    unsafe = []
    for i, m in enumerate(members):
        rel = norm(m.name)
        if rel is None:
            unsafe.append(m.name)
            continue
        if rel in seen:
            dups.append(f"{m.name!r} (members {seen[rel][0]} and {i})")
        if m.islnk():
            t = norm(m.linkname)
            if t not in seen:
                bad_links.append(f"{m.name} -> {m.linkname}: target not earlier in the stream")
            elif not (seen[t][1].isreg() or seen[t][1].islnk()):
                bad_links.append(f"{m.name} -> {m.linkname}: target is not a file")
        seen.setdefault(rel, (i, m))
    res.check(not unsafe, f"{label}: no member climbs out of the root", unsafe)
    res.check(not dups, f"{label}: no path appears twice", dups)
    nlinks = sum(1 for m in members if m.islnk())
    res.check(not bad_links, f"{label}: every hard link ({nlinks}) follows its target",
              bad_links)
    return members


def check_headers(res, label, members, want):
    """The stream's own headers against the expected tree, independent of
    how an extractor orders its work (GNU tar, for one, sets a directory's
    times when it first extracts a member outside it, so a member inside
    it that comes later changes them)."""
    kinds = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.REGTYPE: "file",
             tarfile.AREGTYPE: "file"}
    diffs = []
    n = 0
    for m in members:
        rel = norm(m.name)
        if m.islnk() or rel is None or rel not in want:
            continue  # links: the target's header counts; unknown paths: found elsewhere
        w = want[rel]
        n += 1
        got = {"type": kinds.get(m.type, f"type {m.type!r}"),
               "owner": (m.uid, m.gid), "mtime": int(m.mtime)}
        exp = {"type": w["type"], "owner": w["owner"], "mtime": w["mtime"]}
        if w["type"] != "symlink":
            got["mode"], exp["mode"] = m.mode & 0o7777, w["mode"]
        if w["type"] == "symlink":
            got["target"], exp["target"] = m.linkname, w["data"]
        if w["type"] == "file":
            got["size"], exp["size"] = m.size, w["data"][0]
        xattrs = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                  for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        got["xattrs"], exp["xattrs"] = xattrs, w["xattrs"]
        for k in exp:
            if exp[k] != got[k]:
                fmt = (lambda v: f"{v:04o}") if k == "mode" else repr
                diffs.append(f"{m.name}: {k} expected {fmt(exp[k])}, got {fmt(got[k])}")
    res.check(not diffs, f"{label}: stream headers match the expected tree ({n} members: "
              "type, mode, owner, mtime, size, symlink target, xattrs)", diffs)


def test_image(res, work, fetch_bin, bindir, tmp, ref, manifest_digest, layers):
    name = ref.split("/", 1)[1]
    with open(blob_path(work, manifest_digest), "rb") as f:
        manifest = json.load(f)
    with open(blob_path(work, manifest["config"]["digest"]), "rb") as f:
        diff_ids = json.load(f)["rootfs"]["diff_ids"]
    base = f"platform={PLATFORM}"

    tars = []
    for i, (digest, size, mt) in enumerate(layers):
        raw = blob_path(work, digest)
        saved = sha256_file(raw)
        tar_bytes = decompress(raw, mt)
        tars.append(tar_bytes)
        diff = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
        kind = mt.rsplit(".", 1)[-1]
        res.check(saved == digest and os.path.getsize(raw) == size and diff == diff_ids[i],
                  f"{name} layer {i}: oracle: saved blob and its decompression ({kind}) match "
                  "the manifest digest and the config diff_id",
                  [f"blob {digest} {size}: saved file {saved} {os.path.getsize(raw)}",
                   f"diff_id {diff_ids[i]}, decompressed {diff}"])
        out = os.path.join(tmp, "layer.out")
        for opts, want, what in ((f"{base},layer={i}", digest, "default (raw blob)"),
                                 (f"{base},layer={i},decompress=none", digest,
                                  "decompress=none (raw blob)"),
                                 (f"{base},layer={i},decompress=auto", diff,
                                  "decompress=auto (uncompressed tar)")):
            rc, err, _ = fetch(fetch_bin, ref, opts, out)
            got = sha256_file(out)
            n = os.path.getsize(out)
            res.check(rc == 0 and got == want, f"{name} layer {i}: {what}",
                      [f"options {opts}", f"expected {want}", f"got {got} ({n} bytes), "
                       f"exit {rc} {err}"])

    # The oracle tree.
    want_root = os.path.join(tmp, "want")
    os.mkdir(want_root)
    oracle = Oracle(want_root)
    for t in tars:
        oracle.apply(t)
    oracle.finish()
    want, want_groups = snapshot(want_root)

    try:
        test_flatten_tar(res, fetch_bin, tmp, name, ref, base, oracle, want, want_groups)
        if bindir:
            test_erofs(res, bindir, tmp, name, ref, layers, tars, oracle, want, want_groups)
    finally:
        shutil.rmtree(want_root)


def test_flatten_tar(res, fetch_bin, tmp, name, ref, base, oracle, want, want_groups):
    """The flattened stream: tarfile listing, headers, GNU tar extraction."""
    flat = os.path.join(tmp, "flat.tar")
    opts = f"flatten,{base}"
    rc, err, secs = fetch(fetch_bin, ref, opts, flat)
    size = os.path.getsize(flat)
    if not res.check(rc == 0, f"{name}: {opts} reads to the end ({size} bytes, {secs:.2f}s)",
                     [f"exit {rc}: {err}"]):
        return
    if size % 512:
        res.fail(f"{name}: flattened stream is a whole number of 512-byte blocks",
                 [f"{size} bytes"])
    members = check_listing(res, name, flat)
    if members is None:
        return

    got_root = os.path.join(tmp, "got")
    os.mkdir(got_root)
    p = subprocess.run(["tar", "-x", "--xattrs", "--xattrs-include=*", "-p",
                        "--numeric-owner", "-f", flat, "-C", got_root],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    msg = p.stdout.decode("utf-8", "replace").strip()
    if not res.check(p.returncode == 0 and not msg, f"{name}: GNU tar extracts the stream cleanly",
                     [f"exit {p.returncode}"] + msg.splitlines()):
        if p.returncode != 0 and not os.listdir(got_root):
            return
    got, got_groups = snapshot(got_root)
    check_headers(res, name, members, want)
    compare_trees(res, name, want, got, want_groups, got_groups, oracle.implicit,
                  oracle.root_header, members)

    # Explicit spot checks, so an oracle that lost something cannot hide it.
    xs = sorted(p for p, r in want.items() if r["xattrs"])
    if xs:
        bad = [p for p in xs if p not in got or got[p]["xattrs"] != want[p]["xattrs"]]
        res.check(not bad, f"{name}: xattrs present on {', '.join(xs)}",
                  [f"{p}: expected {want[p]['xattrs']}, got {got.get(p, {}).get('xattrs')}"
                   for p in bad])
    suid = sorted(p for p, r in want.items() if r["mode"] and r["mode"] & 0o6000)
    bad = [p for p in suid if p not in got or got[p]["mode"] != want[p]["mode"]]
    res.check(not bad, f"{name}: setuid/setgid bits kept ({', '.join(suid) or 'none expected'})",
              [f"{p}: expected {want[p]['mode']:04o}, got "
               + (f"{got[p]['mode']:04o}" if p in got and got[p]["mode"] is not None else "-")
               for p in bad])

    shutil.rmtree(got_root)
    os.unlink(flat)


# --- EROFS images built by mkfs.erofs through the library --------------------------------

EROFS_VERSIONS = ("1.8", "1.9")
# erofs-utils 1.9 with its own OCI commands on the library
# (erofs-utils/dropin.sh): mkfs.erofs --oci=f IMG REF, installed under
# WORKDIR/erofs-utils-1.9/bin with erofs-utils' own names.
DROPIN = "1.9 drop-in"


def erofs_tool(bindir, v, tool):
    """The path of TOOL.erofs of version V (or of the drop-in build)."""
    if v == DROPIN:
        return os.path.join(os.path.dirname(bindir), "erofs-utils-1.9", "bin", f"{tool}.erofs")
    return os.path.join(bindir, f"{tool}.erofs-{v}")


def erofs_bindir(work):
    """WORKDIR/bin when it has mkfs.erofs-V and fsck.erofs-V for every version."""
    bindir = os.path.join(work, "bin")
    names = [f"{t}.erofs-{v}" for v in EROFS_VERSIONS for t in ("mkfs", "fsck")]
    if all(os.access(os.path.join(bindir, n), os.X_OK) for n in names):
        return bindir
    return None


def run(cmd, timeout=900):
    """(exit status, stdout+stderr text, seconds)."""
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), time.monotonic() - t0


def diag(text):
    """mkfs/fsck error and warning lines (or the tail of the output)."""
    lines = [ln for ln in text.splitlines() if ln.startswith(("<E>", "<W>"))]
    return lines or text.strip().splitlines()[-5:]


def mkfs_erofs(bindir, v, img, src, *extra):
    """mkfs.erofs-V [EXTRA] --tar=f IMG SRC (the drop-in: mkfs.erofs [EXTRA]
    --oci=f,platform=P IMG REF, SRC being the bare REF); the image file is
    removed first."""
    if os.path.lexists(img):
        os.unlink(img)
    if v == DROPIN:
        return run([erofs_tool(bindir, v, "mkfs"), *extra, f"--oci=f,platform={PLATFORM}",
                    img, src])
    return run([erofs_tool(bindir, v, "mkfs"), *extra, "--tar=f", img, src])


def parsed_members(text):
    """The member names mkfs.erofs -d9 reports parsing ("<D> erofs: parsing
    NAME (mode M)"), in order."""
    out = []
    for ln in text.splitlines():
        if ln.startswith("<D> erofs: parsing ") and ln.endswith(")"):
            out.append(ln[len("<D> erofs: parsing "):].rpartition(" (mode ")[0])
    return out


def check_erofs_tree(res, bindir, v, tmp, label, src, want, want_groups, implicit,
                     root_header):
    """Build IMG from SRC with mkfs.erofs-V --tar=f, extract it with
    fsck.erofs-V and compare the tree with `want`.

    fsck.erofs --extract (1.8 and 1.9 alike; fsck/main.c): hard links are
    re-created with link() for an inode already extracted (so groups and
    link counts are comparable); times are set on every inode after its
    contents (directories included, symlinks with AT_SYMLINK_NOFOLLOW);
    owners and exact modes (setuid/setgid/sticky, no umask) only with
    --preserve-owner/--preserve-perms, the default for root, given here
    explicitly as --preserve; xattrs only with --xattrs (default off)."""
    img = os.path.join(tmp, f"erofs-{v.replace(' ', '-')}.img")
    out = os.path.join(tmp, f"erofs-{v.replace(' ', '-')}.out")
    rc, text, secs = mkfs_erofs(bindir, v, img, src)
    size = os.path.getsize(img) if os.path.exists(img) else 0
    ok = res.check(rc == 0, f"{label}: mkfs.erofs {v} builds the image "
                   f"({size} bytes, {secs:.2f}s)", [f"source {src}", f"exit {rc}"] + diag(text))
    if ok:
        shutil.rmtree(out, ignore_errors=True)
        rc, text, secs = run([erofs_tool(bindir, v, "fsck"), f"--extract={out}",
                              "--preserve", "--xattrs", img])
        msgs = [ln for ln in text.splitlines() if ln.startswith(("<E>", "<W>"))]
        ok = res.check(rc == 0 and not msgs, f"{label}: fsck.erofs {v} checks and extracts "
                       f"the image cleanly ({secs:.2f}s)", [f"exit {rc}"] + diag(text))
        if ok or os.path.isdir(out):
            got, got_groups = snapshot(out)
            compare_trees(res, label, want, got, want_groups, got_groups, implicit,
                          root_header, [], dir_mtimes=True)
    shutil.rmtree(out, ignore_errors=True)
    if os.path.lexists(img):
        os.unlink(img)


def test_erofs(res, bindir, tmp, name, ref, layers, tars, oracle, want, want_groups):
    base = f"platform={PLATFORM}"
    # The whole image, flattened.
    for v in EROFS_VERSIONS:
        check_erofs_tree(res, bindir, v, tmp, f"{name} erofs-utils {v} flatten",
                         f"oci://{ref}?flatten,{base}", want, want_groups, oracle.implicit,
                         oracle.root_header)
    # erofs-utils' own command on the library: every layer merged.
    if os.access(erofs_tool(bindir, DROPIN, "mkfs"), os.X_OK):
        check_erofs_tree(res, bindir, DROPIN, tmp, f"{name} erofs-utils 1.9 --oci=f (drop-in)",
                         ref, want, want_groups, oracle.implicit, oracle.root_header)
    else:
        res.check(False, f"{name}: no drop-in mkfs.erofs at {erofs_tool(bindir, DROPIN, 'mkfs')}"
                  " (erofs-utils/dropin.sh)", [])

    # Each compressed layer alone, decompressed by the library.
    for i, (digest, size, mt) in enumerate(layers):
        kind = mt.rsplit("+", 1)[-1] if "+" in mt else mt.rsplit(".", 1)[-1]
        if kind not in ("gzip", "zstd"):
            continue
        src = f"oci://{ref}?layer={i},decompress=auto,{base}"
        lone_root = os.path.join(tmp, f"want-layer{i}")
        os.mkdir(lone_root)
        try:
            lone = Oracle(lone_root, whiteouts=False)
            lone.apply(tars[i])
            lone.finish()
            if not lone.dangling:
                lwant, lgroups = snapshot(lone_root)
                for v in EROFS_VERSIONS:
                    check_erofs_tree(res, bindir, v, tmp,
                                     f"{name} layer {i} ({kind}) erofs-utils {v} alone",
                                     src, lwant, lgroups, lone.implicit, lone.root_header)
                continue
            # A hard link to a lower layer's file: mkfs.erofs cannot build the
            # layer alone (tarerofs_parse_tar: -ENOENT for a link target it
            # has not seen).  Expect the same failure as on the oracle's own
            # decompressed tar (the reference run): same exit status and
            # error, the same members parsed (-d9) in the same order, the
            # last one being the first dangling link.
            ref_tar = os.path.join(tmp, f"layer{i}.tar")
            with open(ref_tar, "wb") as f:
                f.write(tars[i])
            links = ", ".join(f"{a} -> {b}" for a, b in lone.dangling)
            for v in EROFS_VERSIONS:
                img = os.path.join(tmp, f"erofs-{v}.img")
                rc_ref, text_ref, _ = mkfs_erofs(bindir, v, img, ref_tar, "-d9")
                rc, text, secs = mkfs_erofs(bindir, v, img, src, "-d9")
                err_ref = [ln for ln in text_ref.splitlines() if ln.startswith("<E>")]
                err = [ln for ln in text.splitlines() if ln.startswith("<E>")]
                seen_ref, seen = parsed_members(text_ref), parsed_members(text)
                first = norm(lone.dangling[0][0])
                details = [f"source {src}: exit {rc}"] + diag(text) + \
                    [f"oracle's tar: exit {rc_ref}"] + diag(text_ref)
                if seen != seen_ref:
                    details.append(f"members parsed: {len(seen)} from the library, "
                                   f"{len(seen_ref)} from the oracle's tar")
                    details += [f"  {a!r} vs {b!r}" for a, b in zip(seen, seen_ref) if a != b][:5]
                if not seen_ref or norm(seen_ref[-1]) != first:
                    details.append(f"oracle's tar: last member parsed "
                                   f"{seen_ref[-1] if seen_ref else None!r}, not {first!r}")
                res.check(rc_ref != 0 and rc == rc_ref and err == err_ref and seen == seen_ref
                          and seen_ref and norm(seen_ref[-1]) == first,
                          f"{name} layer {i} ({kind}) erofs-utils {v} alone: mkfs.erofs stops "
                          f"at {len(seen)} members, as on the oracle's tar, at the hard link to "
                          f"a lower layer ({links}; "
                          f"{'; '.join(' '.join(e.split()) for e in err) or 'no error line'})",
                          details)
                if os.path.lexists(img):
                    os.unlink(img)
            os.unlink(ref_tar)
        finally:
            shutil.rmtree(lone_root)


def main():
    if len(sys.argv) != 3:
        print("usage: flatten_tests.py WORKDIR FETCH", file=sys.stderr)
        return 2
    work = os.path.abspath(sys.argv[1])
    fetch_bin = os.path.abspath(sys.argv[2])
    if os.geteuid() != 0:
        print("flatten_tests.py: run as root (owners, setuid bits)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    res = Results()
    images = read_fixtures(os.path.join(work, "layered-fixtures.txt"))
    bindir = erofs_bindir(work)
    if not bindir:
        print("skipped: erofs-utils not built", flush=True)
    tmp = tempfile.mkdtemp(prefix="flatten-tests-", dir=work)
    try:
        for ref, manifest_digest, layers in images:
            sub = os.path.join(tmp, ref.rsplit("/", 1)[1].replace(":", "_"))
            os.mkdir(sub)
            try:
                test_image(res, work, fetch_bin, bindir, sub, ref, manifest_digest, layers)
            except Exception:  # an oracle or harness error: report, go on
                res.fail(f"{ref}: test aborted", traceback.format_exc().splitlines())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# {len(images)} images in {time.monotonic() - t0:.1f}s", flush=True)
    print(f"{res.passed} passed, {res.failed} failed", flush=True)
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
