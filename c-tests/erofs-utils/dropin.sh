#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# erofs-utils 1.9 with its own OCI commands served by liboci_registry
# (patches/liboci-registry-1.9.patch, and patches/gzran-window-1.9.patch:
# erofs-utils' zinfo writer no longer puts heap bytes in the first
# checkpoint's window): the library installed by `make
# install` into WORKDIR/prefix, found by erofs-utils' configure through
# pkg-config only, and erofs-utils installed by its own `make install`:
#
#   WORKDIR/prefix/                 make install PREFIX=WORKDIR/prefix
#   WORKDIR/erofs-dropin-build/     the patched, configured tree
#   WORKDIR/erofs-utils-1.9/        --prefix: sbin/mkfs.erofs, fsck.erofs,
#                                   dump.erofs, erofsfuse, mount.erofs
#
#   ./configure --enable-oci --with-liboci-registry --enable-fuse \
#       --enable-fanotify --enable-ublk --with-libnl3
#
# nbd and ublk cannot run here (no /dev/nbd*, no ublk) but are built.
# Reconfigures only when the source, the patches or the flags changed.
# Exits 3 with the reason on stderr when the build is impossible here.
#
# usage: dropin.sh WORKDIR
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$1"
workdir=$(cd "$1" && pwd)
prefix="$workdir/prefix"
build="$workdir/erofs-dropin-build"
dest="$workdir/erofs-utils-1.9"
# the library's patch, and a fix to erofs-utils' own zinfo writer (the
# first checkpoint's window was heap bytes)
patches=("$here/patches/liboci-registry-1.9.patch" "$here/patches/gzran-window-1.9.patch")
log="$workdir/erofs-dropin-build.log"
jobs=$(nproc 2>/dev/null || echo 2)

fail() {
    echo "erofs-dropin: cannot build erofs-utils 1.9 on the library: $*" >&2
    exit 3
}
run() {
    local step=$1
    shift
    echo "=== $step: $*" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        tail -n 30 "$log" | sed 's/^/    /' >&2
        fail "$step failed (full log: $log)"
    fi
}
: >"$log"

[[ -f "$workdir/erofs-1.9/include/erofs/io.h" ]] ||
    bash "$here/erofs-src.sh" "$workdir" >&2 || fail "erofs-src.sh failed"

packages=(gcc make patch autoconf automake libtool pkg-config uuid-dev
    liblz4-dev zlib1g-dev libfuse3-dev fuse3 liburing-dev libnl-genl-3-dev)
# shellcheck source=c-tests/rig/packages.sh
. "$here/../rig/packages.sh"
ensure_packages "${packages[@]}" || fail "$PACKAGES_WHY"

# 1. The library, installed as a user would.
run "make install" make -s -C "$root" install PREFIX="$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
libdir=$(pkg-config --variable=libdir oci_registry) ||
    fail "pkg-config finds no oci_registry in $PKG_CONFIG_PATH"

# 2. The patched tree, configured.
flags=(--prefix="$dest" --enable-oci --with-liboci-registry --enable-fuse
    --enable-fanotify --enable-ublk --with-libnl3
    --disable-lzma --without-libdeflate --without-libzstd --without-qpl
    --without-xxhash --without-selinux --enable-lz4 --with-zlib --with-uuid
    --without-libcurl --without-json-c --without-openssl --without-libxml2
    --disable-s3)
src_real=$(cd "$workdir/erofs-1.9" && pwd -P)
want_stamp="$src_real $(sha256sum "${patches[@]}" | cut -d' ' -f1 | tr '\n' ' ')${flags[*]} $libdir"
if [[ ! -f "$build/.stamp" || "$(cat "$build/.stamp")" != "$want_stamp" ]]; then
    rm -rf "$build" "$build.tmp"
    cp -a "$src_real" "$build.tmp"
    for p in "${patches[@]}"; do
        run "patch $(basename "$p")" patch -d "$build.tmp" -p1 --forward --batch -i "$p"
    done
    mv "$build.tmp" "$build"
    run autogen bash -c "cd '$build' && ./autogen.sh"
    # the rpath of the installed library (a prefix outside ld.so's path)
    run configure bash -c "cd '$build' && ./configure ${flags[*]} \
        LDFLAGS='-Wl,-rpath,$libdir'"
    grep -q '^#define OCIEROFS_ENABLED 1' "$build/config.h" ||
        fail "configure did not enable OCI (see $log)"
    echo "$want_stamp" >"$build/.stamp"
fi

# 3. Built and installed by erofs-utils' own make install.
run make make -C "$build" -j"$jobs"
run "make install" make -C "$build" install
for name in mkfs.erofs fsck.erofs dump.erofs erofsfuse mount.erofs; do
    bin=$(command -v "$dest/bin/$name" "$dest/sbin/$name" 2>/dev/null | head -n1)
    [[ -x "$bin" ]] || fail "make install left no $name in $dest"
    echo "erofs-dropin: $name $bin"
done
for name in mkfs.erofs erofsfuse mount.erofs; do
    bin=$(command -v "$dest/bin/$name" "$dest/sbin/$name" 2>/dev/null | head -n1)
    ldd "$bin" | grep "$libdir/liboci_registry.so" >/dev/null ||
        fail "$bin does not load $libdir/liboci_registry.so"
    ! ldd "$bin" | grep -E 'libjson-c' >/dev/null ||
        fail "$bin still links json-c"
done
