#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# The patched mkfs.erofs of erofs-utils 1.8 and 1.9 (erofs-utils.sh) building
# EROFS images straight from a registry:
#
#   mkfs.erofs-V --tar=f|i IMAGE 'oci://REGISTRY/plain/nomt:v1?OPTIONS'
#
# Every image is checked by the fsck.erofs of the same build, which also
# extracts it (--extract; an index-only image gets the layer blob as its
# --device), and the extracted tree is compared with the layer unpacked by
# GNU tar from the blob push_fixtures.py saved (WORKDIR/blobs/sha256/<hex>):
# paths, types, modes, owners, sizes, sha256 of every file, link targets
# (c-tests/rig/treecmp.py).
#
# Cases per version:
#   tar-f layer0           the uncompressed tar layer (works today)
#   tar-i layer0           the same as an index-only image (tar data kept
#                          in the blob, 512-byte blocks)
#   gzip layer1            decompress=auto on the gzip layer
#   zstd layer2            decompress=auto on the zstd layer
#   flatten                the whole image merged into one tar stream
#   bad reference          an unknown repository: a clear error, exit != 0,
#                          no image file left behind
#   --ungzip refused       a decoder on top of oci:// is refused
#   tree-tar f, tree-tar i the ~235 MiB uncompressed tar layer of
#                          erofs/tree-tar:v1 (push_erofs_fixture.py: 4342
#                          entries, hard links, long names and targets,
#                          setuid/sticky modes) read through faultproxy,
#                          compared with the generated tree; prints the
#                          bytes the registry sent for each
# The decompress/flatten cases are "skipped: library option not available
# yet" while oci_registry_open() answers -EINVAL "unknown option '...'"
# for them; they pass once the library has the option.
#
# The registry and the faultproxy of WORKDIR are started when they are not
# running (and then stopped at the end); fixtures are pushed (idempotent,
# push_fixtures.py and push_erofs_fixture.py) and the patched erofs-utils
# built (idempotent).
# Ends with "N passed, N failed, N skipped"; exit 0 only when none failed.
#
# usage: mkfs_tests.sh WORKDIR
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
work=$(cd "$1" && pwd)
bin="$work/bin"
t="$work/mkfs-tests"

passed=0
failed=0
skipped=0
ok() { echo "ok $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
skip() { echo "skip $*"; skipped=$((skipped + 1)); }
summary() {
    echo "$passed passed, $failed failed, $skipped skipped"
    [[ $failed -eq 0 ]]
}

# --- set-up -------------------------------------------------------------------

registry_pid() {
    local pid
    pid=$(cat "$work/registry/pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null && grep -q docker-registry "/proc/$pid/cmdline" 2>/dev/null
}
started_registry=0
started_proxy=0
registry_pid || started_registry=1
proxy_pid() {
    local pid
    pid=$(cat "$work/faultproxy/pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null && grep -q faultproxy.py "/proc/$pid/cmdline" 2>/dev/null
}
proxy_pid || started_proxy=1
if ! bash "$here/../rig/registry.sh" start "$work" >/dev/null; then
    bad "set-up: cannot start the registry"
    summary
    exit 1
fi
cleanup() {
    if [[ $started_proxy -eq 1 ]]; then
        bash "$here/../rig/faultproxy.sh" stop "$work" >/dev/null 2>&1 || true
    fi
    if [[ $started_registry -eq 1 ]]; then
        bash "$here/../rig/registry.sh" stop "$work" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
# shellcheck disable=SC1091
. "$work/registry.env"

if ! python3 "$here/../rig/push_fixtures.py" --registry "$REGISTRY" --work "$work" \
    >"$work/mkfs-tests-push.log" 2>&1; then
    tail -n 20 "$work/mkfs-tests-push.log"
    bad "set-up: push_fixtures.py failed"
    summary
    exit 1
fi
rc=0
bash "$here/erofs-utils.sh" "$work" >/dev/null 2>"$work/mkfs-tests-build.log" || rc=$?
if [[ $rc -ne 0 ]]; then
    tail -n 20 "$work/mkfs-tests-build.log"
    bad "set-up: erofs-utils.sh failed (exit $rc)"
    summary
    exit 1
fi

if ! python3 "$here/../rig/push_erofs_fixture.py" --registry "$REGISTRY" --work "$work" \
    2>"$work/mkfs-tests-push2.log"; then
    tail -n 20 "$work/mkfs-tests-push2.log"
    bad "set-up: push_erofs_fixture.py failed"
    summary
    exit 1
fi
if ! bash "$here/../rig/faultproxy.sh" start "$work" >/dev/null; then
    bad "set-up: cannot start faultproxy"
    summary
    exit 1
fi
# shellcheck disable=SC1091
. "$work/faultproxy.env"
read -r _ tree_ref tree_digest tree_size < <(awk '$1 == "tar"' "$work/erofs-fixture.txt")
read -r _ tree_manifest < <(awk '$1 == "manifest"' "$work/erofs-fixture.txt")
tree_blob="$work/blobs/sha256/${tree_digest#sha256:}"
tree_src="oci://$PROXY/${tree_ref#"$REGISTRY"/}?layer=0"

repo="$REGISTRY/plain/nomt:v1"
# layer_field INDEX FIELD: from fixtures.txt ("layer REF PLATFORM INDEX DIGEST SIZE MT")
layer_digest() {
    awk -v ref="$repo" -v i="$1" \
        '$1 == "layer" && $2 == ref && $3 == "linux/amd64" && $4 == i { print $5 }' \
        "$work/fixtures.txt"
}
blob_of() {
    local d
    d=$(layer_digest "$1")
    [[ -n "$d" ]] || return 1
    echo "$work/blobs/sha256/${d#sha256:}"
}

rm -rf "$t"
mkdir -p "$t"

# Expected trees: each layer unpacked by GNU tar (it recognises gzip and
# zstd by itself), and all three in order for the flattened image.
for i in 0 1 2; do
    blob=$(blob_of "$i") || { bad "set-up: no layer $i of $repo in fixtures.txt"; summary; exit 1; }
    mkdir -p "$t/exp-layer$i" "$t/exp-flat"
    if ! tar -xf "$blob" -C "$t/exp-layer$i" --numeric-owner ||
       ! tar -xf "$blob" -C "$t/exp-flat" --numeric-owner; then
        bad "set-up: GNU tar cannot unpack $blob"
        summary
        exit 1
    fi
done
blob0=$(blob_of 0)

# --- the cases -----------------------------------------------------------------

# build NAME V MODE OPTIONS: run mkfs; sets $img, $log; returns mkfs' status
build() {
    local name=$1 v=$2 mode=$3 opts=$4
    img="$t/$name-$v.erofs"
    log="$t/$name-$v.log"
    rm -f "$img"
    "$bin/mkfs.erofs-$v" "--tar=$mode" "$img" "oci://$repo?$opts" >"$log" 2>&1
}

# check NAME V EXPECTED_DIR [FSCK_ARGS...]: fsck + extract + compare
check() {
    local name=$1 v=$2 exp=$3 out
    shift 3
    out="$t/$name-$v.out"
    rm -rf "$out"
    if ! "$bin/fsck.erofs-$v" "$@" --extract="$out" "$img" >>"$log" 2>&1; then
        bad "$name (erofs-utils $v): fsck.erofs --extract failed: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    if python3 "$here/../rig/treecmp.py" compare "$exp" "$out" --owners >>"$log" 2>&1; then
        ok "$name (erofs-utils $v): $(tail -n 1 "$log" | sed 's/^treecmp: //')"
        rm -rf "$out"
    else
        bad "$name (erofs-utils $v): extracted tree differs from the layer:"
        grep '^treecmp:' "$log" | sed 's/^/    /' | head -n 25
    fi
}

# Options the library may not have yet: skip on "unknown option 'OPT'".
# maybe_new NAME V OPT MODE OPTIONS EXPECTED
maybe_new() {
    local name=$1 v=$2 opt=$3 mode=$4 opts=$5 exp=$6
    if build "$name" "$v" "$mode" "$opts"; then
        check "$name" "$v" "$exp"
    elif grep -q "unknown option '$opt'" "$log"; then
        skip "$name (erofs-utils $v): library option not available yet ($(grep -o "unknown option '$opt'" "$log" | head -n 1))"
    else
        bad "$name (erofs-utils $v): mkfs.erofs failed: $(grep -E '<E>' "$log" | head -n 2 | tr '\n' ' ')"
    fi
}

for v in 1.8 1.9; do
    echo "--- erofs-utils $v: $("$bin/mkfs.erofs-$v" --version 2>&1 | head -n 1)"

    s=$(date +%s.%N)
    if build tar-f-layer0 "$v" f "layer=0,platform=linux/amd64"; then
        e=$(date +%s.%N)
        echo "    mkfs --tar=f layer 0: $(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }') s, image $(stat -c %s "$img") bytes"
        check tar-f-layer0 "$v" "$t/exp-layer0"
    else
        bad "tar-f-layer0 (erofs-utils $v): mkfs.erofs failed: $(grep -E '<E>' "$log" | head -n 2 | tr '\n' ' ')"
    fi

    if build tar-i-layer0 "$v" i "layer=0,platform=linux/amd64"; then
        check tar-i-layer0 "$v" "$t/exp-layer0" --device="$blob0"
    else
        bad "tar-i-layer0 (erofs-utils $v): mkfs.erofs failed: $(grep -E '<E>' "$log" | head -n 2 | tr '\n' ' ')"
    fi

    maybe_new gzip-layer1 "$v" decompress f \
        "layer=1,platform=linux/amd64,decompress=auto" "$t/exp-layer1"
    maybe_new zstd-layer2 "$v" decompress f \
        "layer=2,platform=linux/amd64,decompress=auto" "$t/exp-layer2"
    maybe_new flatten "$v" flatten f \
        "flatten,platform=linux/amd64" "$t/exp-flat"

    # An unknown repository: mkfs fails before creating the image.
    img="$t/bad-ref-$v.erofs"
    log="$t/bad-ref-$v.log"
    rm -f "$img"
    if "$bin/mkfs.erofs-$v" --tar=f "$img" \
        "oci://$REGISTRY/no/such-repo:v1?layer=0" >"$log" 2>&1; then
        bad "bad reference (erofs-utils $v): mkfs.erofs succeeded"
    elif ! grep -q 'failed to open oci://.*no/such-repo.*\(404\|unknown\)' "$log"; then
        bad "bad reference (erofs-utils $v): unclear error: $(grep -E '<E>' "$log" | head -n 2 | tr '\n' ' ')"
    elif [[ -e "$img" ]]; then
        bad "bad reference (erofs-utils $v): $img was left behind"
    else
        ok "bad reference (erofs-utils $v): $(grep -m1 'failed to open' "$log" | sed 's/^<E> erofs: //')"
    fi

    # The large tar layer, through the proxy (bytes counted from its log).
    for mode in f i; do
        name="tree-tar-$mode"
        img="$t/$name-$v.erofs"
        log="$t/$name-$v.log"
        rm -f "$img"
        off=$(stat -c %s "$work/faultproxy/log")
        s=$(date +%s.%N)
        if "$bin/mkfs.erofs-$v" --quiet "--tar=$mode" "$img" "$tree_src" >"$log" 2>&1; then
            e=$(date +%s.%N)
            sleep 0.3
            tail -c +$((off + 1)) "$work/faultproxy/log" | awk -v s="$s" -v e="$e" \
                -v size="$tree_size" -v m="$mode" -v img="$(stat -c %s "$img")" '
                $2 == "proxy" && $3 == "GET" && $4 ~ /\/blobs\// {
                    for (i = 5; i <= NF; i++) if ($i ~ /^bytes=/) { b += substr($i, 7); n++ } }
                END { printf "    mkfs --tar=%s of a %d-byte tar layer: %.2f s, image %d bytes, %.1f MiB fetched in %d blob GETs (%.0f%% of the layer)\n",
                      m, size, e - s, img, b / 1048576, n, 100 * b / size }'
            if [[ $mode == i ]]; then
                check "$name" "$v" "$tree_manifest" --device="$tree_blob"
            else
                check "$name" "$v" "$tree_manifest"
            fi
        else
            bad "$name (erofs-utils $v): mkfs.erofs failed: $(grep -E '<E>' "$log" | head -n 2 | tr '\n' ' ')"
        fi
        rm -f "$img"
    done

    # A decoder on top of oci:// is refused (the library decompresses).
    img="$t/ungzip-$v.erofs"
    log="$t/ungzip-$v.log"
    if "$bin/mkfs.erofs-$v" --tar=f --ungzip "$img" \
        "oci://$repo?layer=1" >"$log" 2>&1; then
        bad "--ungzip refused (erofs-utils $v): mkfs.erofs succeeded"
    elif grep -q 'no decoder for oci:' "$log"; then
        ok "--ungzip refused (erofs-utils $v)"
    else
        bad "--ungzip refused (erofs-utils $v): $(grep -E '<E>' "$log" | head -n 2 | tr '\n' ' ')"
    fi
done

summary
