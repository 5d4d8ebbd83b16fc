#!/usr/bin/env bash
# Fetch the Debian source packages of erofs-utils 1.8.x and 1.9.x and unpack
# them (upstream tree only, patches skipped) for the ABI check of
# include/oci_registry.h against erofs-utils' own <erofs/io.h>:
#
#   WORKDIR/erofs-1.8 -> erofs-src/erofs-utils-1.8.N-R   (newest 1.8.x)
#   WORKDIR/erofs-1.9 -> erofs-src/erofs-utils-1.9.N-R   (newest 1.9.x)
#
# Idempotent: the apt source list is written once, apt-get update runs only
# when that list was just written or apt knows no erofs-utils sources, and a
# version already unpacked is neither downloaded nor unpacked again.
#
# usage: erofs-src.sh WORKDIR
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi

mkdir -p "$1"
workdir=$(cd "$1" && pwd)
srcdir="$workdir/erofs-src"
list=/etc/apt/sources.list.d/oci-registry-src.list
want="deb-src http://deb.debian.org/debian trixie main
deb-src http://deb.debian.org/debian sid main"
series_list="1.8 1.9"

log() {
    echo "erofs-src.sh: $*" >&2
}

die() {
    log "$*"
    exit 1
}

# Every version of the erofs-utils source package apt knows, one a line.
src_versions() {
    apt-cache showsrc erofs-utils 2>/dev/null |
        sed -n 's/^Version: *//p' | sort -u
}

# The newest known version whose upstream part is SERIES.x (e.g. 1.9.4-1).
newest() {
    local series=$1 v up best=""
    while read -r v; do
        [[ -n "$v" ]] || continue
        up=${v#*:}
        up=${up%-*}
        [[ "$up" == "$series".* ]] || continue
        if [[ -z "$best" ]] || dpkg --compare-versions "$v" gt "$best"; then
            best=$v
        fi
    done < <(src_versions)
    echo "$best"
}

# Already done? Both links resolve to unpacked trees.
unpacked() {
    [[ -f "$workdir/erofs-$1/include/erofs/io.h" ]]
}

# 1. The deb-src list.
created=0
if [[ ! -f "$list" || "$(cat "$list")" != "$want" ]]; then
    if ! { printf '%s\n' "$want" >"$list.tmp" && mv "$list.tmp" "$list"; } \
        2>/dev/null; then
        rm -f "$list.tmp" 2>/dev/null || true
        if unpacked 1.8 && unpacked 1.9; then
            log "cannot write $list (not root?); keeping what is unpacked"
            exit 0
        fi
        die "cannot write $list: run as root"
    fi
    created=1
    log "wrote $list"
fi

# 2. The source indexes.
missing=0
for s in $series_list; do
    [[ -n "$(newest "$s")" ]] || missing=1
done
if [[ $created -eq 1 || $missing -eq 1 ]]; then
    log "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
fi

# 3. Download and unpack the newest version of each series.
mkdir -p "$srcdir"
for s in $series_list; do
    v=$(newest "$s")
    [[ -n "$v" ]] || die "no erofs-utils $s.x source package known to apt"
    nv=${v#*:}                      # file names carry no epoch
    name="erofs-utils-$nv"
    tree="$srcdir/$name"
    if [[ -f "$tree/include/erofs/io.h" ]]; then
        log "erofs-utils $v: already unpacked"
    else
        dsc="$srcdir/erofs-utils_$nv.dsc"
        if [[ ! -f "$dsc" ]]; then
            log "erofs-utils $v: downloading"
            (cd "$srcdir" && apt-get source -qq --download-only \
                "erofs-utils=$v") >&2 ||
                die "apt-get source erofs-utils=$v failed"
        fi
        log "erofs-utils $v: unpacking"
        rm -rf "$tree.tmp"
        dpkg-source -x --skip-patches "$dsc" "$tree.tmp" >&2 ||
            die "dpkg-source -x $dsc failed"
        mv "$tree.tmp" "$tree"
    fi
    link="$workdir/erofs-$s"
    if [[ -e "$link" && ! -L "$link" ]]; then
        die "$link exists and is not a symlink; remove it"
    fi
    ln -sfn "erofs-src/$name" "$link"
    log "$link -> erofs-src/$name"
done
