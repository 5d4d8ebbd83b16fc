#!/usr/bin/env python3
"""Push multi-layer images that exercise flattening (whiteouts, opaque
directories, type changes, hard links across layers) to a plain-HTTP
registry.

Usage: push_layered_fixtures.py --registry 127.0.0.1:PORT --work WORKDIR

Images (all linux/amd64):

  layered/whiteouts:v1  OCI manifest, 5 layers: tar (PAX), zstd (PAX, with
                        a 50 MiB file), gzip (PAX), tar (GNU format), zstd
                        (PAX, names written as ./x)
  layered/one:v1        OCI manifest, 1 gzip layer (carrying a no-op
                        whiteout and opaque marker)
  layered/docker:v1     Docker schema 2 manifest, 2 gzip layers
                        (application/vnd.docker.image.rootfs.diff.tar.gzip)
                        with file and directory whiteouts

Every blob pushed is saved as WORKDIR/blobs/sha256/<hex>, and
WORKDIR/layered-fixtures.txt describes what was pushed:

  registry <host:port>
  image <ref> <nlayers>
  manifest <ref> <platform> <digest>
  layer <ref> <platform> <index> <digest> <size> <mediaType>

(`manifest` and `layer` lines as in fixtures.txt.)  Layers are deterministic
(seeded PRNGs, pinned tar/gzip metadata).  Built layers are remembered in
WORKDIR/layered-fixtures-cache.json under a key that includes the hash of
this script, so a second run reuses them (the 50 MiB file is neither
generated nor compressed again) unless the script changed.

Python standard library only, plus the `zstd` command-line tool.
"""

import argparse
import hashlib
import io
import json
import os
import random
import struct
import subprocess
import sys
import tarfile
import time

sys.dont_write_bytecode = True  # do not leave __pycache__ behind in c-tests/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import push_fixtures as pf  # noqa: E402  (BlobStore, Registry, Image, ...)

MIB = 1024 * 1024
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
BIG_SIZE = 50 * MIB + 12345  # not a multiple of any block size
AMD64 = pf.platform("linux", "amd64")

SCRIPT_HASH = hashlib.sha256(open(os.path.abspath(__file__), "rb").read()).hexdigest()[:16]


def log(msg):
    print(f"push_layered_fixtures: {msg}", file=sys.stderr, flush=True)


# --- layer description ---------------------------------------------------------


class Meta:
    """Latest metadata of every regular file of an image, by path, so that a
    hard-link header can carry its target's metadata (as tar writers do)."""

    def __init__(self):
        self.files = {}


class Layer:
    """Entries of one layer, built into a tar only when needed."""

    def __init__(self, meta, index, label, compression, fmt=tarfile.PAX_FORMAT,
                 prefix="", docker=False):
        self.meta = meta
        self.index = index
        self.label = label
        self.compression = compression  # none | gzip | zstd
        self.format = fmt
        self.prefix = prefix  # "" or "./"
        self.docker = docker
        self.entries = []  # (TarInfo, data-or-callable-or-None)
        self.clock = EPOCH + index * 86400
        self.rng = random.Random(pf.seed_of("layered", label))

    def _ti(self, name, kind, mode, uid, gid, mtime):
        ti = tarfile.TarInfo(self.prefix + name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = {0: "root", 1000: "user", 33: "www-data"}.get(uid, "")
        ti.gname = {0: "root", 1000: "user", 33: "www-data", 42: "shadow"}.get(gid, "")
        if mtime is None:
            self.clock += 61
            mtime = self.clock
        ti.mtime = mtime
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0, mtime=None, xattrs=None):
        # tarfile appends the "/" of a directory name itself; "" is the root.
        name = name.rstrip("/") or "."
        ti = self._ti(name, tarfile.DIRTYPE, mode, uid, gid, mtime)
        if ti.name == "./.":
            ti.name = "."
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        self.entries.append((ti, None))

    def file(self, name, data=None, mode=0o644, uid=0, gid=0, mtime=None, xattrs=None,
             size=None):
        """data: bytes, a callable returning bytes (with size given), or None
        for a few seeded text lines."""
        if data is None:
            n = self.rng.randrange(1, 40)
            data = "".join(f"{name} line {i} {self.rng.random():.12f}\n"
                           for i in range(n)).encode()
        ti = self._ti(name, tarfile.REGTYPE, mode, uid, gid, mtime)
        ti.size = size if callable(data) else len(data)
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
        self.entries.append((ti, data))
        self.meta.files[name] = (mode, uid, gid, ti.mtime)

    def symlink(self, name, target, uid=0, gid=0, mtime=None):
        ti = self._ti(name, tarfile.SYMTYPE, 0o777, uid, gid, mtime)
        ti.linkname = target
        self.entries.append((ti, None))
        self.meta.files.pop(name, None)

    def hardlink(self, name, target):
        mode, uid, gid, mtime = self.meta.files[target]
        ti = self._ti(name, tarfile.LNKTYPE, mode, uid, gid, mtime)
        ti.linkname = self.prefix + target
        self.entries.append((ti, None))
        self.meta.files[name] = (mode, uid, gid, mtime)

    def whiteout(self, name):
        """Delete `name` from the lower layers: an empty file `.wh.<base>`."""
        d, _, base = name.rpartition("/")
        wh = (d + "/" if d else "") + ".wh." + base
        self.entries.append((self._ti(wh, tarfile.REGTYPE, 0o600, 0, 0, None), b""))
        self.meta.files.pop(name, None)

    def opaque(self, dirname):
        name = dirname.rstrip("/") + "/.wh..wh..opq"
        self.entries.append((self._ti(name, tarfile.REGTYPE, 0o600, 0, 0, None), b""))

    def media_type(self):
        if self.docker:
            assert self.compression == "gzip"
            return pf.DOCKER_LAYER_GZIP
        return {"none": pf.OCI_LAYER_TAR, "gzip": pf.OCI_LAYER_GZIP,
                "zstd": pf.OCI_LAYER_ZSTD}[self.compression]

    def ordered(self):
        """The entries depth-first, as tar and Go's archive/tar walkers write
        them: each directory's entry is followed by everything below it
        (GNU tar sets a directory's times once it extracts a member outside
        it, so a later child would change them).  Within one directory the
        order of definition is kept (so an opaque marker can follow new
        content on purpose)."""
        root = ([], {})
        for ti, data in self.entries:
            node = root
            for c in [c for c in ti.name.split("/") if c not in ("", ".")]:
                node = node[1].setdefault(c, ([], {}))
            node[0].append((ti, data))
        out = []

        def walk(node):
            out.extend(node[0])
            for kid in node[1].values():
                walk(kid)
        walk(root)
        seen = set()
        for ti, _ in out:
            if ti.type == tarfile.LNKTYPE:
                target = ti.linkname
                assert target in seen or not any(t.name == target for t, _ in out), \
                    f"{ti.name}: its same-layer target comes later"
            seen.add(ti.name)
        return out

    def tar_bytes(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=self.format) as tar:
            for ti, data in self.ordered():
                if callable(data):
                    data = data()
                    assert len(data) == ti.size, (ti.name, len(data), ti.size)
                tar.addfile(ti, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def build(self, store, cache, image):
        key = f"{image} layer {self.index} {SCRIPT_HASH}"
        entry = cache.get(key)
        if entry and store.verify(entry["digest"], entry["size"]):
            return {"mediaType": self.media_type(), "digest": entry["digest"],
                    "size": entry["size"], "diff_id": entry["diff_id"]}, False
        tar = self.tar_bytes()
        if self.compression == "gzip":
            blob = pf.gzip_bytes(tar)
        elif self.compression == "zstd":
            blob = pf.zstd_bytes(tar)
        else:
            blob = tar
        digest, size = store.add(blob)
        diff_id = pf.sha256_digest(tar)
        cache[key] = {"digest": digest, "size": size, "diff_id": diff_id}
        return {"mediaType": self.media_type(), "digest": digest, "size": size,
                "diff_id": diff_id}, True


def big_data():
    """BIG_SIZE bytes: a seeded 1 MiB random block repeated, each copy
    stamped with its index (so misplaced chunks show), cheap to make and
    small once zstd-compressed."""
    block = random.Random(pf.seed_of("layered", "big")).randbytes(MIB)
    out = bytearray()
    i = 0
    while len(out) < BIG_SIZE:
        out += struct.pack(">Q", i) + block[8:]
        i += 1
    return bytes(out[:BIG_SIZE])


# --- images ----------------------------------------------------------------------

LONG_D1 = "usr/share/long-directory-name-" + "x" * 50
LONG_D2 = LONG_D1 + "/nested-directory-with-a-long-name-" + "y" * 40
LONG_FILE = LONG_D2 + "/file-with-a-rather-long-name-" + "z" * 40 + ".txt"
GNU_D = "var/lib/gnu-longname-directory-" + "g" * 60
GNU_FILE = GNU_D + "/gnu-longname-file-" + "h" * 70 + ".dat"


def whiteouts_layers():
    meta = Meta()
    L = []

    # Layer 0: the base (uncompressed, PAX).
    l0 = Layer(meta, 0, "whiteouts/0", "none")
    for d in ("etc", "etc/conf.d", "etc/conf.d/sub", "usr", "usr/bin", "usr/lib",
              "usr/lib64", "usr/lib64/sub", "usr/share", "usr/share/doc", "opt",
              "opt/app", "opt/app/lib", "var", "var/cache", "var/cache/pkg",
              "var/cache/pkg/sub", "var/spool", "var/spool/mail", "srv", "home"):
        l0.dir(d)
    l0.dir("tmp", mode=0o1777)
    l0.dir("home/user", mode=0o700, uid=1000, gid=1000)
    l0.file("etc/hostname", b"base\n")
    l0.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    l0.file("etc/shadow", mode=0o600, gid=42)
    l0.file("etc/motd", b"motd of layer 0\n")          # deleted in 1, re-added in 3
    l0.file("etc/old.conf")                             # deleted in 2 for good
    l0.file("etc/conf.d/x.conf")
    l0.file("etc/conf.d/y.conf")
    l0.file("etc/conf.d/sub/deep.conf")
    l0.file("usr/bin/tool", b"#!/bin/sh\necho tool v0\n", mode=0o755)
    l0.hardlink("usr/bin/tool-alias", "usr/bin/tool")   # same-layer hard link
    l0.hardlink("usr/bin/tool-alias2", "usr/bin/tool-alias")  # link to a link
    l0.symlink("usr/bin/t", "tool")
    l0.file("usr/bin/su-helper", b"\x7fELF setuid\n", mode=0o4755)
    l0.file("usr/bin/sg-helper", b"\x7fELF setgid\n", mode=0o2755, gid=42)
    l0.file("usr/lib/libc.so", mode=0o755)
    l0.file("usr/lib64/ld.so", mode=0o755)
    l0.file("usr/lib64/sub/x.so")
    l0.file("usr/share/doc/readme", b"readme, linked from layer 1\n", mode=0o444)
    l0.file("usr/share/doc/changelog", b"changelog v0\n", uid=33, gid=33)
    l0.file("usr/share/doc/license", b"license text\n")
    l0.file("opt/app/config")
    l0.file("opt/app/lib/libfoo.so", mode=0o755)
    l0.file("var/cache/pkg/a.deb")
    l0.file("var/cache/pkg/sub/b.deb")
    l0.file("var/spool/mail/root", mode=0o600)
    l0.file("srv/data", b"srv/data is a file in layer 0\n")
    l0.file("home/user/notes.txt", mode=0o600, uid=1000, gid=1000)
    l0.symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
    l0.symlink("lib", "usr/lib")
    L.append(l0)

    # Layer 1: zstd, PAX; the big file, links to layer-0 files, xattrs, long names.
    l1 = Layer(meta, 1, "whiteouts/1", "zstd")
    l1.whiteout("etc/motd")
    l1.file("etc/hostname", b"layer one\n")
    l1.file("etc/xattr-file", b"has an xattr\n", xattrs={"user.test": "hello\nworld"})
    l1.dir("home/user", mode=0o750, uid=1000, gid=1000)  # metadata change only
    l1.dir("opt/big", xattrs={"user.test": "on a directory"})
    l1.file("opt/big/blob.bin", big_data, size=BIG_SIZE)
    l1.file("opt/app/lib/libbar.so")                   # removed with opt/app in 2
    l1.hardlink("usr/share/doc/readme.link", "usr/share/doc/readme")      # target kept
    l1.hardlink("usr/share/doc/changelog.link", "usr/share/doc/changelog")  # target replaced in 3
    l1.hardlink("usr/share/doc/license.link", "usr/share/doc/license")    # target deleted in 2
    l1.dir("srv/data", mode=0o2775, gid=33)             # file replaced by a directory
    l1.file("srv/data/inner.txt", uid=33, gid=33)
    l1.dir(LONG_D1)
    l1.dir(LONG_D2, mode=0o700)
    l1.file(LONG_FILE, mode=0o640, uid=1000, gid=1000)
    l1.symlink("usr/share/long-symlink", "/" + LONG_FILE)
    l1.file("usr/bin/big-uid", b"uid past 2097151 (PAX)\n", uid=2500000, gid=2500001)
    L.append(l1)

    # Layer 2: gzip, PAX; whiteouts, opaque directories, dir -> symlink.
    l2 = Layer(meta, 2, "whiteouts/2", "gzip")
    l2.dir("var/cache/pkg", mode=0o750)
    l2.opaque("var/cache/pkg")                          # marker first, as the spec advises
    l2.file("var/cache/pkg/c.deb")
    l2.whiteout("opt/app")                              # a directory with children
    l2.whiteout("usr/share/doc/license")
    l2.whiteout("etc/old.conf")
    l2.symlink("usr/lib64", "lib")                      # directory replaced by a symlink
    l2.file("etc/conf.d/z.conf")
    l2.opaque("etc/conf.d")                             # marker after new content
    l2.hardlink(LONG_D2 + "/hardlink-to-the-long-file-" + "w" * 30, LONG_FILE)
    L.append(l2)

    # Layer 3: uncompressed, GNU format (long names as ././@LongLink, base-256 ids).
    l3 = Layer(meta, 3, "whiteouts/3", "none", fmt=tarfile.GNU_FORMAT)
    l3.file("etc/motd", b"motd is back in layer 3\n", mode=0o644)
    l3.file("usr/share/doc/changelog", b"changelog v3\n")
    l3.dir("opt/app", mode=0o755)                       # re-created, empty of old content
    l3.file("opt/app/new.txt")
    l3.symlink("usr/bin/tool", "tool-v3")               # file replaced by a symlink
    l3.file("usr/bin/tool-v3", b"#!/bin/sh\necho tool v3\n", mode=0o755)
    l3.file("usr/bin/t", b"t was a symlink\n", mode=0o755)  # symlink replaced by a file
    l3.dir("var/lib")
    l3.dir(GNU_D)
    l3.file(GNU_FILE, uid=3000000, gid=3000001)
    l3.symlink("var/lib/gnu-long-symlink", "/" + GNU_FILE)
    L.append(l3)

    # Layer 4: zstd, PAX, names as ./x with a ./ root entry.
    l4 = Layer(meta, 4, "whiteouts/4", "zstd", prefix="./")
    l4.dir("", mode=0o755)
    l4.dir("srv/data/more")
    l4.file("srv/data/more/f")
    l4.file("var/spool", b"spool is now a file\n")     # directory replaced by a file
    l4.file("home/user/.profile", mode=0o600, uid=1000, gid=1000)
    l4.hardlink("etc/motd.link", "etc/motd")           # target from layer 3 (GNU)
    l4.whiteout("etc/never-existed")                    # whiteout of nothing
    L.append(l4)
    return L


def one_layers():
    meta = Meta()
    l0 = Layer(meta, 0, "one/0", "gzip")
    l0.dir("bin")
    l0.dir("etc")
    l0.dir("data", mode=0o700, uid=1000, gid=1000)
    l0.file("bin/busybox", mode=0o4755)
    l0.hardlink("bin/sh", "bin/busybox")
    l0.symlink("bin/ls", "busybox")
    l0.file("etc/os-release", b"NAME=one\n")
    l0.file("data/secret", mode=0o600, uid=1000, gid=1000, xattrs={"user.test": "one"})
    l0.whiteout("etc/ghost")                            # nothing below: dropped
    l0.opaque("data")                                   # nothing below: dropped
    return [l0]


def docker_layers():
    meta = Meta()
    l0 = Layer(meta, 0, "docker/0", "gzip", docker=True)
    l0.dir("app")
    l0.dir("app/sub")
    l0.file("app/a.txt")
    l0.file("app/b.txt")
    l0.file("app/sub/c.txt")
    l0.file("app/run", mode=0o755)
    l0.hardlink("app/run-link", "app/run")
    l1 = Layer(meta, 1, "docker/1", "gzip", docker=True)
    l1.whiteout("app/b.txt")
    l1.whiteout("app/sub")
    l1.file("app/d.txt")
    l1.file("app/a.txt", b"a changed in layer 1\n")
    return [l0, l1]


# --- main ------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, help="host:port, e.g. 127.0.0.1:5001")
    ap.add_argument("--work", required=True, help="work directory")
    args = ap.parse_args()

    t0 = time.monotonic()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    store = pf.BlobStore(os.path.join(work, "blobs"))
    reg = pf.Registry(args.registry, store)

    status, _, body = reg.request("GET", "/v2/")
    if status != 200:
        raise pf.RegistryError(f"GET /v2/ on {args.registry}: HTTP {status} {body[:200]!r}")

    cache_path = os.path.join(work, "layered-fixtures-cache.json")
    try:
        with open(cache_path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}

    lines = [
        "# generated by c-tests/rig/push_layered_fixtures.py; fields separated by single spaces",
        "# registry <host:port>",
        "# image <ref> <nlayers>",
        "# manifest <ref> <platform> <digest>",
        "# layer <ref> <platform> <index> <digest> <size> <mediaType>",
        f"registry {args.registry}",
    ]
    built = reused = 0
    for repo, tag, layers, docker in (("layered/whiteouts", "v1", whiteouts_layers(), False),
                                      ("layered/one", "v1", one_layers(), False),
                                      ("layered/docker", "v1", docker_layers(), True)):
        descs = []
        for layer in layers:
            d, new = layer.build(store, cache, f"{repo}:{tag}")
            built += new
            reused += not new
            descs.append(d)
        img = pf.Image(store, AMD64, descs, docker=docker)
        img.push(reg, repo, [tag])
        ref = f"{args.registry}/{repo}:{tag}"
        plat = pf.platform_str(AMD64)
        lines.append(f"image {ref} {len(descs)}")
        lines.append(f"manifest {ref} {plat} {img.digest}")
        for i, d in enumerate(descs):
            lines.append(f"layer {ref} {plat} {i} {d['digest']} {d['size']} {d['mediaType']}")

    with open(cache_path + ".tmp", "w") as f:
        json.dump(cache, f, indent=2, sort_keys=True)
    os.replace(cache_path + ".tmp", cache_path)
    out = os.path.join(work, "layered-fixtures.txt")
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out + ".tmp", out)
    log(f"done in {time.monotonic() - t0:.1f}s: {built} layers built, {reused} from cache; "
        f"{reg.blobs_uploaded} blobs uploaded, {reg.blobs_skipped} already present; wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (pf.RegistryError, OSError, subprocess.CalledProcessError, RuntimeError) as e:
        log(f"error: {e}")
        sys.exit(1)
