#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Build erofs-utils 1.8.x and 1.9.x patched to read from a registry through
# liboci_registry (c-tests/erofs-utils/patches/):
#
#   mkfs.erofs --tar=f IMAGE 'oci://REF?OPTIONS'   (1.8 and 1.9; --tar=i too)
#   erofsfuse 'oci://REF?OPTIONS' MOUNTPOINT       (1.9)
#
#   WORKDIR/erofs-1.8, erofs-1.9          pristine trees (erofs-src.sh)
#   WORKDIR/erofs-utils-build-1.8, -1.9   patched, configured copies
#   WORKDIR/bin/mkfs.erofs-1.8            linked against target/erofs-1.8/release
#   WORKDIR/bin/fsck.erofs-1.8, dump.erofs-1.8
#   WORKDIR/bin/mkfs.erofs-1.9            linked against target/release
#   WORKDIR/bin/fsck.erofs-1.9, dump.erofs-1.9, erofsfuse-1.9
#
# The binaries carry an rpath to the library directory they were linked
# against, so a rebuilt library is picked up without relinking.  The
# library itself is built (cargo) only when its .so is missing.
#
# Idempotent: packages are installed only when missing, a build tree is
# copied, patched, autogen'd and configured again only when the source,
# the patches, the configure flags or the library paths changed; `make`
# is incremental.  Prints "erofs-utils: NAME PATH" for every binary.
# Exits 3 with the reason on stderr when the build is impossible here.
#
# usage: erofs-utils.sh WORKDIR
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$1"
workdir=$(cd "$1" && pwd)
bindir="$workdir/bin"
patchdir="$here/patches"
log="$workdir/erofs-utils-build.log"
jobs=$(nproc 2>/dev/null || echo 2)

say() {
    echo "erofs-utils: $*" >&2
}

fail() {
    echo "erofs-utils: cannot build the patched erofs-utils: $*" >&2
    exit 3
}

# run STEP CMD...: a build step, its output to the log; on failure the
# log's tail and exit 3.
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

# 1. Pristine sources.
if [[ ! -f "$workdir/erofs-1.8/include/erofs/io.h" ||
      ! -f "$workdir/erofs-1.9/include/erofs/io.h" ]]; then
    say "no erofs-utils sources in $workdir; running erofs-src.sh"
    bash "$here/erofs-src.sh" "$workdir" >&2 ||
        fail "erofs-src.sh $workdir failed"
fi

# 2. Build dependencies (Debian package names).
packages=(
    gcc make patch autoconf automake libtool pkg-config
    uuid-dev liblz4-dev zlib1g-dev libfuse3-dev fuse3
)
# shellcheck source=c-tests/rig/packages.sh
. "$here/../rig/packages.sh"
ensure_packages "${packages[@]}" || fail "$PACKAGES_WHY"

# 3. The library, for both layouts (only when missing: the Makefile owns it).
libdir_of() {
    if [[ $1 == 1.8 ]]; then
        echo "$root/target/erofs-1.8/release"
    else
        echo "$root/target/release"
    fi
}
incdir_of() {
    if [[ $1 == 1.8 ]]; then
        echo "$root/include/erofs-1.8"
    else
        echo "$root/include"
    fi
}
for v in 1.8 1.9; do
    lib=$(libdir_of "$v")
    [[ -f "$lib/liboci_registry.so" ]] && continue
    say "no $lib/liboci_registry.so; building it"
    command -v cargo >/dev/null ||
        fail "no $lib/liboci_registry.so and no cargo to build it (make lib-$v)"
    if [[ $v == 1.8 ]]; then
        run "cargo-$v" bash -c "cd '$root' && cargo build --release \
            --features erofs-abi-108 --target-dir target/erofs-1.8"
    else
        run "cargo-$v" bash -c "cd '$root' && cargo build --release"
    fi
    [[ -f "$lib/liboci_registry.so" ]] || fail "cargo built no $lib/liboci_registry.so"
done
# The SONAME's name beside each .so (as `make lib` leaves it).
for v in 1.8 1.9; do
    lib=$(libdir_of "$v")
    soname=$(readelf -d "$lib/liboci_registry.so" |
        sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
    [[ -n "$soname" ]] || fail "$lib/liboci_registry.so has no SONAME"
    ln -sfn liboci_registry.so "$lib/$soname"
done

# 4. Patched, configured trees.
common_flags=(
    --disable-lzma --without-libdeflate --without-libzstd --without-qpl
    --without-xxhash --without-selinux --enable-lz4 --with-zlib --with-uuid
)
flags_1_8=("${common_flags[@]}" --disable-fuse)
flags_1_9=("${common_flags[@]}" --enable-fuse
    --disable-oci --disable-s3 --disable-ublk --disable-fanotify
    --without-libcurl --without-openssl --without-libxml2 --without-json-c
    --without-libnl3)

patches_of() {
    if [[ $1 == 1.8 ]]; then
        echo "$patchdir/mkfs-oci-1.8.patch"
    else
        echo "$patchdir/mkfs-oci-1.9.patch $patchdir/erofsfuse-oci-1.9.patch $patchdir/flatdev-1.9.patch $patchdir/gzran-window-1.9.patch"
    fi
}

mkdir -p "$bindir"
for v in 1.8 1.9; do
    src="$workdir/erofs-$v"
    build="$workdir/erofs-utils-build-$v"
    src_real=$(cd "$src" && pwd -P)
    version=$(head -n1 "$src/VERSION")
    [[ "$version" == "$v".* ]] || fail "$src is erofs-utils $version, not $v.x"
    lib=$(libdir_of "$v")
    inc=$(incdir_of "$v")
    [[ -f "$inc/oci_registry.h" ]] || fail "no $inc/oci_registry.h"
    if [[ $v == 1.8 ]]; then
        flags=("${flags_1_8[@]}")
        progs=(mkfs fsck dump)
    else
        flags=("${flags_1_9[@]}")
        progs=(mkfs fsck dump fuse)
    fi
    # shellcheck disable=SC2207
    patches=($(patches_of "$v"))
    for p in "${patches[@]}"; do
        [[ -f "$p" ]] || fail "missing patch $p"
    done

    cppflags="-I$inc"
    ldflags="-L$lib -Wl,-rpath,$lib"
    libs="-loci_registry"
    stamp="$build/.oci-stamp"
    want_stamp="$src_real
$(sha256sum "${patches[@]}" | awk '{ print $1 }' | tr '\n' ' ')
${flags[*]}
$cppflags $ldflags $libs"
    export EROFS_UTILS_VERSION=$version
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want_stamp" ||
          ! -f "$build/config.h" ]]; then
        say "erofs-utils $version: copying, patching, configuring in $build"
        rm -rf "$build" "$build.tmp"
        cp -a "$src_real" "$build.tmp"
        for p in "${patches[@]}"; do
            run "patch-$v $(basename "$p")" \
                patch -d "$build.tmp" -p1 --forward --batch -i "$p"
        done
        mv "$build.tmp" "$build"
        if [[ ! -x "$build/configure" ]]; then
            run "autogen-$v" bash -c "cd '$build' && ./autogen.sh"
        fi
        run "configure-$v" bash -c "cd '$build' && ./configure ${flags[*]} \
            CPPFLAGS='$cppflags' LDFLAGS='$ldflags' LIBS='$libs'"
        if [[ $v == 1.9 ]]; then
            grep -q '^#define HAVE_LIBFUSE3 1' "$build/config.h" ||
                fail "configure found no libfuse3 (see $log)"
        fi
        echo "$want_stamp" >"$stamp"
    fi

    run "make-$v lib" make -C "$build/lib" -j"$jobs"
    for d in "${progs[@]}"; do
        run "make-$v $d" make -C "$build/$d" -j"$jobs"
    done

    # 5. Install under WORKDIR/bin with the series as suffix.
    for d in "${progs[@]}"; do
        case $d in
            mkfs) name=mkfs.erofs ;;
            fsck) name=fsck.erofs ;;
            dump) name=dump.erofs ;;
            fuse) name=erofsfuse ;;
        esac
        bin="$build/$d/$name"
        [[ -x "$bin" ]] || fail "make produced no $bin"
        # A libtool wrapper script would be useless elsewhere.
        [[ "$(od -An -c -N4 "$bin" | tr -d ' ')" == '177ELF' ]] ||
            fail "$bin is not an ELF binary"
        dest="$bindir/$name-$v"
        if ! cmp -s "$bin" "$dest"; then
            install -m 0755 "$bin" "$dest.tmp"
            mv -f "$dest.tmp" "$dest"
        fi
        echo "erofs-utils: $name-$v $dest"
    done
    # The patched programs really use the library.
    for name in mkfs.erofs erofsfuse; do
        [[ -x "$bindir/$name-$v" ]] || continue
        # (grep without -q: an early exit would SIGPIPE ldd and trip pipefail)
        ldd "$bindir/$name-$v" | grep "$lib/liboci_registry" >/dev/null ||
            fail "$bindir/$name-$v does not load the library of $lib"
    done
done
