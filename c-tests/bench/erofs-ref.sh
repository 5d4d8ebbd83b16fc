#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Build the reference the bench measures us against: erofs-utils 1.9.x's
# own OCI blob reader (lib/remotes/oci.c, ocierofs_io_open) in liberofs,
# plus the small driver c-tests/bench/erofs-ref-driver.c linked against it.
#
#   WORKDIR/erofs-1.9          pristine upstream tree (from erofs-src.sh)
#   WORKDIR/erofs-ref-build    a copy of it, configured with --enable-oci
#   WORKDIR/erofs-ref-driver   the driver binary
#
# Idempotent: packages are installed only when missing (apt-get update only
# then), the tree is copied, autogen'd and configured only once per source
# version, `make` is incremental and the driver is relinked only when it or
# liberofs.a changed.
#
# Prints "erofs-ref: built WORKDIR/erofs-ref-driver" on success. When the
# reference cannot be built it prints the reason on stderr and exits 3, so
# that the bench can show why there is no reference figure.
#
# usage: erofs-ref.sh WORKDIR
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
workdir=$(cd "$1" && pwd)
src="$workdir/erofs-1.9"
build="$workdir/erofs-ref-build"
driver_src="$here/erofs-ref-driver.c"
driver="$workdir/erofs-ref-driver"
log="$workdir/erofs-ref-build.log"

say() {
    echo "erofs-ref: $*" >&2
}

# fail REASON: the reference cannot be built here.
fail() {
    echo "erofs-ref: cannot build the erofs-utils 1.9 OCI reference: $*" >&2
    exit 3
}

# run STEP CMD...: run a build step, its output to the log; on failure show
# the log's tail and give up.
run() {
    local step=$1
    shift
    echo "=== $step: $*" >>"$log"
    if ! "$@" >>"$log" 2>&1; then
        tail -n 25 "$log" | sed 's/^/    /' >&2
        fail "$step failed (full log: $log)"
    fi
}

: >"$log"

# 1. The pristine source.
if [[ ! -f "$src/lib/remotes/oci.c" ]]; then
    say "no $src; running erofs-src.sh"
    bash "$here/../erofs-utils/erofs-src.sh" "$workdir" >&2 ||
        fail "erofs-src.sh $workdir failed (no erofs-utils 1.9.x source)"
fi
[[ -f "$src/lib/remotes/oci.c" && -f "$src/lib/liberofs_oci.h" ]] ||
    fail "$src has no lib/remotes/oci.c (not an erofs-utils 1.9.x tree?)"
src_real=$(cd "$src" && pwd -P)
version=$(head -n1 "$src/VERSION")
[[ "$version" == 1.9.* ]] || fail "$src is erofs-utils $version, not 1.9.x"

# 2. Build dependencies (Debian package names).
packages=(
    gcc make autoconf automake libtool pkg-config
    libcurl4-openssl-dev libjson-c-dev libssl-dev uuid-dev zlib1g-dev
)
# shellcheck source=c-tests/rig/packages.sh
. "$here/../rig/packages.sh"
ensure_packages "${packages[@]}" || fail "$PACKAGES_WHY"

# 3. A configured copy of the tree. The stamp names the source it came from
# and the configure flags; anything else means start over.
conf_flags=(
    --enable-oci --with-libcurl --with-json-c
    --disable-fuse --disable-s3 --disable-ublk --disable-fanotify
    --disable-lz4 --disable-lzma --with-zlib --without-libdeflate
    --without-libzstd --without-qpl --without-xxhash --without-libxml2
    --without-libnl3 --without-selinux --with-uuid
)
stamp="$build/.erofs-ref-stamp"
want_stamp="$src_real ${conf_flags[*]}"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want_stamp" ||
      ! -f "$build/config.h" ]]; then
    say "configuring erofs-utils $version in $build"
    rm -rf "$build" "$build.tmp"
    cp -a "$src_real" "$build.tmp"
    mv "$build.tmp" "$build"
    # get-version-number would otherwise ask git about the enclosing repo.
    export EROFS_UTILS_VERSION=$version
    if [[ ! -x "$build/configure" ]]; then
        run autogen.sh bash -c "cd '$build' && ./autogen.sh"
    fi
    run configure bash -c "cd '$build' && ./configure ${conf_flags[*]}"
    grep -q '^#define OCIEROFS_ENABLED 1' "$build/config.h" ||
        fail "configure did not enable OCI support (see $log)"
    echo "$want_stamp" >"$stamp"
fi

# 4. liberofs (only the library: mkfs, fsck and the rest are not needed).
export EROFS_UTILS_VERSION=$version
jobs=$(nproc 2>/dev/null || echo 2)
run make make -C "$build/lib" -j"$jobs" liberofs.la
lib="$build/lib/.libs/liberofs.a"
[[ -f "$lib" ]] || fail "make produced no $lib"
# (grep without -q: an early exit would SIGPIPE nm and trip pipefail)
nm "$lib" 2>/dev/null | grep ' T ocierofs_io_open$' >/dev/null ||
    fail "$lib has no ocierofs_io_open"
# erofs-utils 1.9's own `mkfs.erofs --oci=f`, for the mkfs figures of
# make bench (its absence is reported there, not fatal here).
run make make -C "$build/mkfs" -j"$jobs" mkfs.erofs || true

# 5. The driver, linked with the same libraries liberofs was configured for.
mkvar() {
    sed -n "s/^$1 = //p" "$build/lib/Makefile" | head -n1
}
libs="$(mkvar LIBEROFS_LIBS) $(mkvar LIBS)"
if [[ ! -x "$driver" || "$driver" -ot "$driver_src" || "$driver" -ot "$lib" ||
      "$driver" -ot "$here/bench_util.h" ]]
then
    # shellcheck disable=SC2086
    run driver gcc -O2 -g -Wall -Wextra -Wno-unused-parameter \
        -DHAVE_CONFIG_H -I"$build" -I"$build/include" -I"$build/lib" \
        -o "$driver.tmp" "$driver_src" "$lib" $libs -lcrypto -lpthread
    mv "$driver.tmp" "$driver"
fi
echo "erofs-ref: built $driver"
