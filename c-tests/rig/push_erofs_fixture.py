#!/usr/bin/env python3
"""Generate a large directory tree, build an EROFS image of it and push the
image to a registry as the single layer of an OCI image, for lazy-mount
tests (erofsfuse 'oci://REGISTRY/erofs/tree:v1?layer=0' MNT).

Usage: push_erofs_fixture.py --registry 127.0.0.1:PORT --work WORKDIR
                             [--mkfs PATH] [--seed N]

The tree (WORKDIR/erofs-fixture/tree, about 235 MiB, deterministic from the
seed) has thousands of small files (a third of them text, the rest random
bytes), a directory of 1500 entries, a 10-level deep chain, MiB-sized
files, three large ones (20, 28, 36 MiB), empty files and directories,
symlinks (relative, to directories, absolute, dangling, chained, a long
target), hard links, odd names (spaces, UTF-8, 255 bytes, leading dot)
and a spread of modes (0600 ... 0755, setuid, setgid, sticky, a 0555
directory).  Every timestamp is 2024-01-01T00:00:00Z.

The image (WORKDIR/erofs-fixture/tree.erofs) is built by the patched
mkfs.erofs-1.9 (WORKDIR/bin, from erofs-utils.sh) with its defaults (4 KiB
blocks, no compression, inodes placed next to their data), a fixed UUID
and timestamp, all files owned by root:

  mkfs.erofs -T1704067200 -U<fixed> --all-root tree.erofs tree/

A second image of the same tree (tree-mz.erofs) adds --MZ: inodes and
directories go to one metadata zone (at the end of this image) instead of
being spread between the file data, which is what a lazy reader wants (a
listing then touches a few MiB); it is plain EROFS (meta_blkaddr points
at the zone, no incompatible feature).

Pushed as (plain HTTP; the blob is also saved as WORKDIR/blobs/sha256/<hex>):

  erofs/tree:v1      OCI image manifest, config application/vnd.oci.image.
                     config.v1+json (linux/amd64, rootfs.diff_ids = the
                     image's own digest), one layer of media type
                     application/vnd.erofs.layer.v1
  erofs/tree:mz      the same for tree-mz.erofs
  erofs/tree-tar:v1  the same tree as one uncompressed tar layer
                     (application/vnd.oci.image.layer.v1.tar; GNU tar,
                     pax, sorted, numeric owners), for mkfs tests
  erofs/tree-tgz:v1  that tar as a gzip layer (gzip -6 -n: one member),
                     for lazy mounts of ordinary layers
  erofs/tree-tgz:members  the tar in 16 MiB pieces, each a gzip member of
                     its own (as pigz --independent or stargz make)
  erofs/tree-tgz:two-layers  both of them as the two layers of one image

application/vnd.erofs.layer.v1 is the media type containerd (2.3, PR
#12567) gives native EROFS layers, so the image is also what containerd's
EROFS snapshotter would pull; liboci_registry does not look at layer
media types, any would do.

WORKDIR/erofs-fixture.txt (fields separated by single spaces):
  image <ref> <digest> <size>     the EROFS image (layer 0 of <ref>)
  image-mz <ref> <digest> <size>  the --MZ image (layer 0 of <ref>)
  tree <dir>                      the tree it was built from
  manifest <file>                 c-tests/rig/treecmp.py description of <dir>
                                  (paths, types, modes, sizes, sha256,
                                  link targets)
  tar <ref> <digest> <size>       the tree as an uncompressed tar layer
  stats <entries> <files> <dirs> <symlinks> <bytes>

Everything is cached in WORKDIR/erofs-fixture and rebuilt only when the
seed, this generator, mkfs.erofs or a file went missing; blobs the
registry already has are not uploaded again.

Python standard library only (plus GNU tar and the mkfs.erofs binary).
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import push_fixtures as pf  # noqa: E402  (BlobStore, Registry, helpers)
import treecmp  # noqa: E402

KIB = 1024
MIB = 1024 * KIB

GEN_VERSION = 1          # bump when the tree generator changes
DEFAULT_SEED = 20240101
EPOCH = pf.EPOCH         # 2024-01-01T00:00:00Z
FIXED_UUID = "6f2b0a4e-3c1d-4e5f-9a8b-7c6d5e4f3a2b"
MIN_TREE_BYTES = 200 * MIB

EROFS_LAYER = "application/vnd.erofs.layer.v1"
REPO_IMAGE = "erofs/tree"
REPO_TAR = "erofs/tree-tar"
REPO_TGZ = "erofs/tree-tgz"
TAG = "v1"
TAG_MZ = "mz"


def log(msg):
    print(f"push_erofs_fixture: {msg}", file=sys.stderr, flush=True)


# --- the tree ------------------------------------------------------------------


class Gen:
    """Builds the tree; every choice comes from one seeded PRNG, in order."""

    WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
             "hotel", "india", "juliet", "kilo", "lima", "mike", "november",
             "oscar", "papa", "quebec", "romeo", "sierra", "tango"]
    FILE_MODES = [0o644] * 8 + [0o600, 0o640, 0o755, 0o755, 0o444, 0o700]

    def __init__(self, top, seed):
        self.top = top
        self.rng = random.Random(seed)
        self.files = []      # relative paths of regular files
        self.dirs = []       # relative paths of directories
        self.dir_modes = {}  # applied at the end (0555 would stop us)

    def path(self, rel):
        return os.path.join(self.top, rel)

    def mkdir(self, rel, mode=0o755):
        os.makedirs(self.path(rel), exist_ok=True)
        self.dirs.append(rel)
        self.dir_modes[rel] = mode

    def text(self, size):
        out, n = [], 0
        while n < size:
            line = " ".join(self.rng.choice(self.WORDS) for _ in range(9)) + "\n"
            out.append(line)
            n += len(line)
        return "".join(out).encode()[:size]

    def write(self, rel, size, mode=None, text=False):
        p = self.path(rel)
        with open(p, "wb") as f:
            left = size
            while left:
                n = min(left, MIB)
                f.write(self.text(n) if text else self.rng.randbytes(n))
                left -= n
        os.chmod(p, mode if mode is not None else self.rng.choice(self.FILE_MODES))
        self.files.append(rel)

    def small_size(self):
        r = self.rng.random()
        if r < 0.25:
            return self.rng.randrange(0, 256)
        if r < 0.75:
            return self.rng.randrange(256, 8 * KIB)
        return self.rng.randrange(8 * KIB, 64 * KIB)

    def name(self, ext=""):
        return "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_-")
                       for _ in range(self.rng.randrange(3, 17))) + ext

    def build(self):
        rng = self.rng
        # A directory with many entries (multi-block directory).
        self.mkdir("wide")
        for i in range(1500):
            self.write(f"wide/f{i:04d}", rng.randrange(0, 4 * KIB),
                       text=rng.random() < 0.5)

        # A deep chain.
        rel = "deep"
        self.mkdir(rel)
        for depth in range(1, 11):
            rel += f"/level{depth:02d}"
            self.mkdir(rel)
            for j in range(3):
                self.write(f"{rel}/file{j}", self.small_size(), text=j == 0)

        # Random nested package-like directories holding small files.
        self.mkdir("pkg")
        pkg_dirs = ["pkg"]
        for _ in range(80):
            parent = rng.choice(pkg_dirs)
            if parent.count("/") >= 5:
                parent = "pkg"
            d = f"{parent}/{self.name()}"
            if d in self.dir_modes:
                continue
            self.mkdir(d, rng.choice([0o755] * 6 + [0o700, 0o750]))
            pkg_dirs.append(d)
        used = set()
        for _ in range(2500):
            d = rng.choice(pkg_dirs)
            n = f"{d}/{self.name(rng.choice(['', '.txt', '.so', '.py', '.json']))}"
            if n in used or n in self.dir_modes:
                continue
            used.add(n)
            self.write(n, self.small_size(), text=rng.random() < 0.3)

        # MiB-sized and large files.
        self.mkdir("media")
        for i in range(48):
            self.write(f"media/blob{i:02d}.bin", rng.randrange(1 * MIB, 4 * MIB + 1))
        self.mkdir("large")
        for i, size in enumerate((20 * MIB + 4321, 28 * MIB, 36 * MIB - 777)):
            self.write(f"large/big{i}.img", size, mode=0o644)

        # Empty things and special modes.
        self.mkdir("empty")
        self.mkdir("empty/sub")
        self.mkdir("special")
        for i in range(20):
            self.write(f"special/zero{i:02d}", 0)
        self.write("special/setuid", 1000, mode=0o4755)
        self.write("special/setgid", 1000, mode=0o2755)
        self.write("special/readonly", 5000, mode=0o444)
        self.write("special/private", 5000, mode=0o600)
        self.mkdir("special/sticky", 0o1777)
        self.write("special/sticky/inside", 100, mode=0o666)
        self.mkdir("special/locked", 0o555)
        self.write("special/locked/inside", 100, mode=0o644)

        # Odd names.
        self.mkdir("names")
        self.write("names/with space.txt", 321, text=True)
        self.write("names/ünïcödé-名前.bin", 4097)
        self.write("names/.hidden", 12, text=True)
        self.write("names/" + "n" * 251 + ".max", 77)
        self.write("names/-dash", 1)

        # Symlinks.
        self.mkdir("links")
        files = sorted(self.files)
        for i in range(100):
            target = rng.choice(files)
            os.symlink("../" + target, self.path(f"links/file{i:03d}"))
        for i in range(10):
            target = rng.choice(sorted(self.dir_modes))
            os.symlink("../" + target, self.path(f"links/dir{i:02d}"))
        for i, target in enumerate(["/etc/passwd", "/usr/bin/env", "/",
                                    "/nonexistent/path", "/tmp"]):
            os.symlink(target, self.path(f"links/abs{i}"))
        for i in range(5):
            os.symlink(f"missing-{i}", self.path(f"links/dangling{i}"))
        os.symlink("file000", self.path("links/chain1"))
        os.symlink("chain1", self.path("links/chain2"))
        os.symlink("x/" * 400 + "end", self.path("links/longtarget"))
        os.symlink(".", self.path("links/self"))

        # Hard links.
        self.mkdir("hard")
        for i in range(3):
            os.link(self.path(rng.choice(files)), self.path(f"hard/link{i}"))

        # Directory modes last, then every timestamp (deepest first).
        for d in sorted(self.dir_modes, key=lambda x: -x.count("/")):
            os.chmod(self.path(d), self.dir_modes[d])
        for root, dirs, names in os.walk(self.top, topdown=False):
            for n in names + dirs:
                os.utime(os.path.join(root, n), (EPOCH, EPOCH),
                         follow_symlinks=False)
        os.chmod(self.top, 0o755)
        os.utime(self.top, (EPOCH, EPOCH))


def ensure_tree(fxdir, seed):
    """The tree and its description, generated unless cached."""
    tree = os.path.join(fxdir, "tree")
    manifest = os.path.join(fxdir, "tree.json")
    params_file = os.path.join(fxdir, "params.json")
    params = {"gen": GEN_VERSION, "seed": seed}
    try:
        with open(params_file) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        cached = None
    if cached == params and os.path.isdir(tree) and os.path.isfile(manifest):
        log(f"tree: cached ({tree})")
        with open(manifest) as f:
            return tree, manifest, json.load(f)

    t0 = time.monotonic()
    for p in (params_file, manifest):
        if os.path.exists(p):
            os.remove(p)
    if os.path.exists(tree):
        # A 0555 directory is no obstacle to root, but be explicit.
        for root, dirs, _ in os.walk(tree):
            for d in dirs:
                p = os.path.join(root, d)
                if not os.path.islink(p):
                    os.chmod(p, 0o755)
        shutil.rmtree(tree)
    os.makedirs(tree)
    Gen(tree, seed).build()
    desc = treecmp.scan(tree, content=True)
    with open(manifest + ".tmp", "w") as f:
        json.dump(desc, f, sort_keys=True, indent=0)
    os.replace(manifest + ".tmp", manifest)
    with open(params_file, "w") as f:
        json.dump(params, f)
    log(f"tree: generated in {time.monotonic() - t0:.1f}s ({tree})")
    return tree, manifest, desc


def tree_stats(desc):
    files = sum(1 for e in desc.values() if e["type"] == "f")
    dirs = sum(1 for e in desc.values() if e["type"] == "d")
    links = sum(1 for e in desc.values() if e["type"] == "l")
    nbytes = sum(e.get("size", 0) for e in desc.values())
    return len(desc), files, dirs, links, nbytes


# --- the image and the tar ------------------------------------------------------------


def file_digest(path):
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                break
            h.update(b)
            n += len(b)
    return "sha256:" + h.hexdigest(), n


def cached_build(fxdir, name, key, build):
    """Run build(out_path) unless WORKDIR/erofs-fixture/<name> was built
    with the same key; return (path, digest, size)."""
    out = os.path.join(fxdir, name)
    meta = out + ".json"
    try:
        with open(meta) as f:
            m = json.load(f)
        if m["key"] == key and os.path.getsize(out) == m["size"]:
            log(f"{name}: cached ({m['digest']}, {m['size']} bytes)")
            return out, m["digest"], m["size"]
    except (OSError, ValueError, KeyError):
        pass
    if os.path.exists(meta):
        os.remove(meta)
    t0 = time.monotonic()
    build(out + ".tmp")
    os.replace(out + ".tmp", out)
    digest, size = file_digest(out)
    with open(meta, "w") as f:
        json.dump({"key": key, "digest": digest, "size": size}, f)
    log(f"{name}: built in {time.monotonic() - t0:.1f}s ({digest}, {size} bytes)")
    return out, digest, size


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.stderr.write(r.stdout.decode(errors="replace")[-3000:])
        raise SystemExit(f"push_erofs_fixture: {' '.join(cmd)} failed "
                         f"(exit {r.returncode})")


def mkfs_identity(mkfs):
    st = os.stat(mkfs)
    return f"{os.path.realpath(mkfs)} {st.st_size} {int(st.st_mtime)}"


def store_link(store, path, digest):
    """Put the built file into the blob store (hard link, else copy)."""
    dst = store.path(digest)
    if os.path.exists(dst) and os.path.getsize(dst) == os.path.getsize(path):
        return
    tmp = dst + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, dst)


def push_image(reg, store, repo, tag, layers):
    """Push an OCI image of LAYERS, (mediaType, digest, size) each, bottom
    first; return the manifest digest. (diff_ids are the layers' own
    digests: the tests do not check them.)"""
    config = pf.dumps({
        "created": pf.CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]},
        "history": [{"created": pf.CREATED,
                     "created_by": "c-tests/rig/push_erofs_fixture.py"}],
    })
    cdigest, csize = store.add(config)
    manifest = pf.dumps({
        "schemaVersion": 2,
        "mediaType": pf.OCI_MANIFEST,
        "config": {"mediaType": pf.OCI_CONFIG, "digest": cdigest, "size": csize},
        "layers": [{"mediaType": mt, "digest": d, "size": n} for mt, d, n in layers],
    })
    mdigest, _ = store.add(manifest)
    reg.push_blob(repo, cdigest, csize)
    for _, d, n in layers:
        reg.push_blob(repo, d, n)
    reg.put_manifest(repo, mdigest, manifest, pf.OCI_MANIFEST)
    reg.put_manifest(repo, tag, manifest, pf.OCI_MANIFEST)
    return mdigest


def push_single_layer(reg, store, repo, tag, layer_mt, digest, size):
    """Push an OCI image with one layer; return the manifest digest."""
    return push_image(reg, store, repo, tag, [(layer_mt, digest, size)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, help="host:port")
    ap.add_argument("--work", required=True, help="work directory")
    ap.add_argument("--mkfs", help="mkfs.erofs (default WORKDIR/bin/mkfs.erofs-1.9)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args()

    t0 = time.monotonic()
    work = os.path.abspath(args.work)
    fxdir = os.path.join(work, "erofs-fixture")
    os.makedirs(fxdir, exist_ok=True)
    mkfs = args.mkfs or os.path.join(work, "bin", "mkfs.erofs-1.9")
    if not os.access(mkfs, os.X_OK):
        raise SystemExit(f"push_erofs_fixture: no {mkfs} (run c-tests/erofs-utils/erofs-utils.sh {work})")

    tree, manifest, desc = ensure_tree(fxdir, args.seed)
    stats = tree_stats(desc)
    if stats[4] < MIN_TREE_BYTES:
        raise SystemExit(f"push_erofs_fixture: tree has only {stats[4]} bytes")

    treekey = {"gen": GEN_VERSION, "seed": args.seed}
    mkfs_args = [f"-T{EPOCH}", f"-U{FIXED_UUID}", "--all-root"]
    img, idigest, isize = cached_build(
        fxdir, "tree.erofs",
        dict(treekey, mkfs=mkfs_identity(mkfs), args=mkfs_args),
        lambda out: run([mkfs, "--quiet"] + mkfs_args + [out, tree]))
    mz_args = mkfs_args + ["--MZ"]
    mzimg, mzdigest, mzsize = cached_build(
        fxdir, "tree-mz.erofs",
        dict(treekey, mkfs=mkfs_identity(mkfs), args=mz_args),
        lambda out: run([mkfs, "--quiet"] + mz_args + [out, tree]))
    tar_args = ["--sort=name", "--format=pax", "--numeric-owner",
                "--owner=0", "--group=0", f"--mtime=@{EPOCH}",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"]
    tarf, tdigest, tsize = cached_build(
        fxdir, "tree.tar", dict(treekey, tar=tar_args),
        lambda out: run(["tar"] + tar_args + ["-C", tree, "-cf", out, "."]))

    tgz, gdigest, gsize = cached_build(
        fxdir, "tree.tar.gz", dict(treekey, tar=tar_args, gzip="-6 -n"),
        lambda out: run(["sh", "-c", 'gzip -6 -n -c "$1" > "$2"', "sh", tarf, out]))
    tgzm, mdigest, msize = cached_build(
        fxdir, "tree-members.tar.gz", dict(treekey, tar=tar_args, gzip="split 16M -6 -n"),
        lambda out: run(["sh", "-c", 'split -b 16M --filter="gzip -6 -n" "$1" > "$2"',
                         "sh", tarf, out]))

    store = pf.BlobStore(os.path.join(work, "blobs"))
    store_link(store, tgz, gdigest)
    store_link(store, tgzm, mdigest)
    store_link(store, img, idigest)
    store_link(store, mzimg, mzdigest)
    store_link(store, tarf, tdigest)
    reg = pf.Registry(args.registry, store)
    status, _, body = reg.request("GET", "/v2/")
    if status != 200:
        raise SystemExit(f"push_erofs_fixture: GET /v2/ on {args.registry}: HTTP {status}")
    push_single_layer(reg, store, REPO_IMAGE, TAG, EROFS_LAYER, idigest, isize)
    push_single_layer(reg, store, REPO_IMAGE, TAG_MZ, EROFS_LAYER, mzdigest, mzsize)
    push_single_layer(reg, store, REPO_TAR, TAG, pf.OCI_LAYER_TAR, tdigest, tsize)
    push_single_layer(reg, store, REPO_TGZ, TAG, pf.OCI_LAYER_GZIP, gdigest, gsize)
    push_single_layer(reg, store, REPO_TGZ, "members", pf.OCI_LAYER_GZIP, mdigest, msize)
    # Two big layers (the second puts every path again), for mkfs.erofs
    # --oci=f figures on a multi-layer image of some size.
    push_image(reg, store, REPO_TGZ, "two-layers", [(pf.OCI_LAYER_GZIP, gdigest, gsize),
                                                   (pf.OCI_LAYER_GZIP, mdigest, msize)])

    lines = [
        "# generated by c-tests/rig/push_erofs_fixture.py; fields separated by single spaces",
        "# image <ref> <digest> <size>",
        "# image-mz <ref> <digest> <size>",
        "# tree <dir>",
        "# manifest <treecmp.py description of tree>",
        "# tarfile <the tar of tree>",
        "# tar <ref> <digest> <size>",
        "# tgz <ref> <digest> <size> <file>   (tgz-members: the same)",
        "# stats <entries> <files> <dirs> <symlinks> <bytes>",
        f"image {args.registry}/{REPO_IMAGE}:{TAG} {idigest} {isize}",
        f"image-mz {args.registry}/{REPO_IMAGE}:{TAG_MZ} {mzdigest} {mzsize}",
        f"tree {tree}",
        f"manifest {manifest}",
        f"tarfile {tarf}",
        f"tar {args.registry}/{REPO_TAR}:{TAG} {tdigest} {tsize}",
        f"tgz {args.registry}/{REPO_TGZ}:{TAG} {gdigest} {gsize} {tgz}",
        f"tgz-members {args.registry}/{REPO_TGZ}:members {mdigest} {msize} {tgzm}",
        "stats " + " ".join(str(x) for x in stats),
    ]
    out = os.path.join(work, "erofs-fixture.txt")
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out + ".tmp", out)
    log(f"done in {time.monotonic() - t0:.1f}s: {stats[0]} entries, {stats[1]} files, "
        f"{stats[4]} bytes; image {isize} bytes; {reg.blobs_uploaded} blobs uploaded, "
        f"{reg.blobs_skipped} already present; wrote {out}")


if __name__ == "__main__":
    main()
