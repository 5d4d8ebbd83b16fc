#!/usr/bin/env python3
"""Random access into gzip and zstd layers (decompress=auto), zinfo both
ways, and the tar-index device (tarindex=), against the registry of
WORKDIR.

Usage: gzran_tests.py WORKDIR FETCH VALGRIND_FETCH

WORKDIR holds erofs-fixture.txt (push_erofs_fixture.py: the tree's tar,
erofs/tree-tgz:v1 with that tar as one gzip member and :members in 16 MiB
members), fixtures.txt and the drop-in erofs-utils 1.9 (dropin.sh), whose
mkfs.erofs --tar=i --gzinfo writes erofs-utils' own zinfo and tar index.
FETCH is the c-tests fetch program; VALGRIND_FETCH the same under valgrind.

Every read is compared with the tar itself: N random preads (fetch's
`random` mode), preads at and past the end (`at`), whole reads by digest.
A zinfo that does not fit the blob must end in EBADMSG, never in bytes
that differ from the tar. Prints one `ok`/`FAIL` line per check and ends
with `N passed, N failed`.
"""

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile

EBADMSG, EINVAL = 74, 22
ENTRY = 17 + 32768


class Results:
    passed = 0
    failed = 0

    def check(self, cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if cond:
            self.passed += 1
        else:
            self.failed += 1


def fixture(path, key):
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == key:
                return parts[1:]
    raise SystemExit(f"gzran_tests: no '{key}' line in {path}")


def fetch(prog, ref, opts, *mode):
    r = subprocess.run([prog, ref, opts] + [str(m) for m in mode],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    return r.stdout.decode(errors="replace").strip().splitlines()[-1:] or [""]


def sha256_file(path, prefix=b""):
    h = hashlib.sha256(prefix)
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def zinfo_entries(path):
    with open(path, "rb") as f:
        d = f.read()
    have, span = struct.unpack("<IQ", d[:12])
    return span, [(struct.unpack("<QQB", d[12 + i * ENTRY:12 + i * ENTRY + 17]),
                   d[12 + i * ENTRY + 17:12 + (i + 1) * ENTRY]) for i in range(have)]


def expect_at(tar, pairs):
    size = os.path.getsize(tar)
    out = []
    with open(tar, "rb") as f:
        for off, ln in pairs:
            n = max(0, min(ln, size - off))
            f.seek(min(off, size))
            out.append(f"{n}:{hashlib.sha256(f.read(n)).hexdigest()}")
    return "ok at " + " ".join(out)


def main():
    work, fetch_prog, vg_fetch = sys.argv[1:4]
    res = Results()
    efx = os.path.join(work, "erofs-fixture.txt")
    tar = fixture(efx, "tarfile")[0]
    tgz_ref, _, _, tgz_file = fixture(efx, "tgz")
    mem_ref, _, _, mem_file = fixture(efx, "tgz-members")
    mkfs = os.path.join(work, "erofs-utils-1.9", "bin", "mkfs.erofs")
    tmp = tempfile.mkdtemp(prefix="gzran-")
    tar_sha = sha256_file(tar)
    size = os.path.getsize(tar)

    # The pass makes the checkpoints: in order, at random, from members.
    cache = os.path.join(tmp, "cache")
    out = fetch(fetch_prog, tgz_ref, f"decompress=auto,cache_dir={cache}", "seq")[0]
    res.check(out.startswith(f"ok sha256:{tar_sha} {size} "),
              f"tree-tgz, decompress=auto, read in order == the tar: {out}")
    for ref, opts in [(tgz_ref, "decompress=auto"), (tgz_ref, "decompress=auto,fill=none"),
                      (mem_ref, "decompress=auto"), (tgz_ref, f"decompress=auto,cache_dir={cache}")]:
        out = fetch(fetch_prog, ref, opts, "random", tar, 300)[0]
        res.check(out == "ok random 300", f"{ref.split('/', 1)[1]} {opts}: 300 random preads == the tar: {out}")
    pairs = [(size - 100, 4096), (size, 10), (size + 12345, 10), (0, 1), (4194304 - 7, 20)]
    for ref, opts in [(tgz_ref, "decompress=auto"), (mem_ref, "decompress=auto"),
                      (tgz_ref, f"decompress=auto,cache_dir={cache}")]:
        out = fetch(fetch_prog, ref, opts, "at", *[x for p in pairs for x in p])[0]
        res.check(out == expect_at(tar, pairs),
                  f"{ref.split('/', 1)[1]} {opts}: preads at the end, past it, across a span: {out[:90]}")

    # erofs-utils' own zinfo and tar index (mkfs.erofs --tar=i --gzinfo).
    z = {}
    for name, src in [("tree", tgz_file), ("members", mem_file)]:
        z[name] = os.path.join(tmp, f"{name}.zinfo")
        r = subprocess.run([mkfs, "--quiet", "--tar=i", f"--gzinfo={z[name]}",
                            os.path.join(tmp, f"{name}.idx"), src],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        res.check(r.returncode == 0 and os.path.getsize(z[name]) > 12,
                  f"mkfs.erofs --tar=i --gzinfo of {os.path.basename(src)}: "
                  f"{os.path.getsize(z[name]) if os.path.exists(z[name]) else 0} bytes")
    for ref, name in [(tgz_ref, "tree"), (mem_ref, "members")]:
        out = fetch(fetch_prog, ref, f"zinfo={z[name]}", "random", tar, 300)[0]
        res.check(out == "ok random 300", f"erofs-utils' zinfo ({name}): 300 random preads == the tar: {out}")
    # A read in the middle of the tar, with a zinfo: it inflates its span
    # and the one before (which checks the span's checkpoint), and fetches
    # their compressed bytes and at most one block of the blob at each end
    # (a gzip layer read this way is cut into 256 KiB blocks: in 1 MiB ones
    # up to 2 MiB more came, on a long link as one part too many).
    _, entries = zinfo_entries(z["tree"])
    starts = [e[0][0] for e in entries]
    i = max(k for k, u in enumerate(starts) if u <= size // 2)
    if 2 <= i < len(entries) - 1:
        lo, hi = entries[i - 1][0][1] - 1, entries[i + 1][0][1]
        out = fetch(fetch_prog, tgz_ref, f"zinfo={z['tree']}", "fetched", size // 2, 4096)[0]
        got = int(out.split("fetched=")[1].split()[0]) if out.startswith("ok fetched=") else -1
        res.check(0 < got <= hi - lo + 2 * (256 << 10),
                  f"a pread mid-tar with a zinfo fetches {got} bytes for spans of "
                  f"{hi - lo} compressed bytes (at most 512 KiB more)")
    else:
        res.check(False, f"the zinfo has {len(entries)} checkpoints: no span mid-tar")

    # The library's checkpoints (cache_dir) are erofs-utils' own: the same
    # offsets, bits and windows, the first (before any output) zeros in
    # both (erofs-utils' with patches/gzran-window-1.9.patch).
    digest = fixture(efx, "tgz")[1]
    ours = os.path.join(cache, "zinfo", "sha256", digest.split(":", 1)[1])
    if os.path.exists(ours):
        (s1, a), (s2, b) = zinfo_entries(ours), zinfo_entries(z["tree"])
        same = s1 == s2 and [x[0] for x in a] == [x[0] for x in b] and \
            all(x[1] == y[1] for x, y in zip(a, b))
        res.check(same, f"the library's zinfo == erofs-utils' ({len(a)} and {len(b)} checkpoints, "
                  f"span {s1} and {s2})")
        out = fetch(fetch_prog, tgz_ref, f"zinfo={ours}", "random", tar, 100)[0]
        res.check(out == "ok random 100", f"the library's zinfo through zinfo=: {out}")
    else:
        res.check(False, f"cache_dir kept no zinfo at {ours}")

    # A zinfo that does not fit: an error, never other bytes.
    with open(z["tree"], "rb") as f:
        good = f.read()
    bad = {}
    d = bytearray(good)
    d[12 + 5 * ENTRY + 17 + 32000] ^= 1
    bad["a window byte of checkpoint 5"] = bytes(d)
    d = bytearray(good)
    d[12 + 7 * ENTRY] ^= 4
    bad["the offset of checkpoint 7"] = bytes(d)
    d = bytearray(good)
    d[12 + 9 * ENTRY + 16] = (d[12 + 9 * ENTRY + 16] + 3) % 8
    bad["the bit count of checkpoint 9"] = bytes(d)
    for what, data in bad.items():
        p = os.path.join(tmp, "bad.zinfo")
        with open(p, "wb") as f:
            f.write(data)
        for mode in [("random", tar, 200), ("seq",)]:
            out = fetch(fetch_prog, tgz_ref, f"zinfo={p}", *mode)[0]
            res.check(out.startswith(f"error {EBADMSG} gzip index does not match the blob"),
                      f"zinfo with {what} flipped, {mode[0]}: {out[:140]}")
    out = fetch(fetch_prog, tgz_ref, f"zinfo={z['members']}", "random", tar, 100)[0]
    res.check(out.startswith(f"error {EBADMSG} gzip index does not match the blob"),
              f"another blob's zinfo: {out[:140]}")
    p = os.path.join(tmp, "short.zinfo")
    with open(p, "wb") as f:
        f.write(good[:-1])
    out = fetch(fetch_prog, tgz_ref, f"zinfo={p}", "seq")[0]
    res.check(out.startswith(f"error {EINVAL} option 'zinfo=") and "fits neither version" in out,
              f"a truncated zinfo: {out[:140]}")
    hello = f"{tgz_ref.split('/', 1)[0]}/plain/nomt:v1"
    out = fetch(fetch_prog, hello, f"platform=linux/amd64,layer=2,zinfo={z['tree']}", "seq")[0]
    res.check(out.startswith(f"error {EINVAL} zinfo: the layer") and "is not gzip" in out,
              f"zinfo= on a zstd layer: {out[:140]}")

    # The tar-index device: [tar index][uncompressed tar].
    idx = os.path.join(tmp, "tree.idx")
    want = sha256_file(tar, prefix=open(idx, "rb").read())
    for opts in [f"tarindex={idx},zinfo={z['tree']}", f"tarindex={idx}"]:
        out = fetch(fetch_prog, tgz_ref, opts, "seq")[0]
        res.check(out.startswith(f"ok sha256:{want} {os.path.getsize(idx) + size} "),
                  f"{opts.replace(tmp, '…')}: the device == tar index + tar: {out[:100]}")

    # A zstd layer at random (no seekable frames: the decompressed copy
    # spooled once a read goes back), under valgrind.
    zst = None
    with open(os.path.join(work, "fixtures.txt")) as f:
        for line in f:
            p = line.split()
            if p[:1] == ["layer"] and p[1].endswith("/plain/nomt:v1") and p[3] == "2":
                zst = p[4]
    zst_tar = os.path.join(tmp, "zstd.tar")
    subprocess.run(["zstd", "-q", "-d", "-f", "-o", zst_tar,
                    os.path.join(work, "blobs", "sha256", zst.split(":", 1)[1])], check=True)
    out = fetch(vg_fetch, hello, "platform=linux/amd64,layer=2,decompress=auto",
                "random", zst_tar, 40)[0]
    res.check(out == "ok random 40", f"valgrind: a zstd layer, 40 random preads == its tar: {out}")
    zsize = os.path.getsize(zst_tar)
    zpairs = [(zsize - 10, 100), (zsize, 1), (5, 10), (zsize // 2, 4096)]
    out = fetch(vg_fetch, hello, "platform=linux/amd64,layer=2,decompress=auto",
                "at", *[x for q in zpairs for x in q])[0]
    res.check(out == expect_at(zst_tar, zpairs), f"valgrind: a zstd layer, preads at the end and back: {out[:90]}")

    # Under valgrind: a small gzip layer at random, and a tar-index device.
    fx = os.path.join(work, "fixtures.txt")
    small = None
    with open(fx) as f:
        for line in f:
            p = line.split()
            if p[:1] == ["layer"] and p[1].endswith("/plain/nomt:v1") and p[3] == "1":
                small = p[4]
    blob = os.path.join(work, "blobs", "sha256", small.split(":", 1)[1])
    small_tar = os.path.join(tmp, "small.tar")
    subprocess.run(f"gunzip -c < '{blob}' > '{small_tar}'", shell=True, check=True)
    out = fetch(vg_fetch, hello, "platform=linux/amd64,layer=1,decompress=auto",
                "random", small_tar, 40)[0]
    res.check(out == "ok random 40", f"valgrind: a gzip layer, 40 random preads == its tar: {out}")
    sidx, sz = os.path.join(tmp, "small.idx"), os.path.join(tmp, "small.zinfo")
    subprocess.run([mkfs, "--quiet", "--tar=i", f"--gzinfo={sz}", sidx, blob], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    want = sha256_file(small_tar, prefix=open(sidx, "rb").read())
    out = fetch(vg_fetch, hello, f"platform=linux/amd64,layer=1,tarindex={sidx},zinfo={sz}", "seq")[0]
    res.check(out.startswith(f"ok sha256:{want} "),
              f"valgrind: tarindex= and zinfo= of that layer == tar index + tar: {out[:100]}")

    shutil.rmtree(tmp, ignore_errors=True)
    print(f"gzran: {res.passed} passed, {res.failed} failed", flush=True)
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
