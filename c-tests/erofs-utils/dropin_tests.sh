#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# erofs-utils 1.9's own OCI commands, unchanged, served by the library
# (dropin.sh: WORKDIR/erofs-utils-1.9/), in erofs-utils' native syntax:
#
#   mkfs.erofs --oci=f[,platform=][,layer=N|,blob=] IMG REF
#   mkfs.erofs --oci=i,layer=N --gzinfo=Z IMG REF
#   erofsfuse -o oci.layer=0 REF MNT
#   mount.erofs -t erofs.fuse -o oci.layer=0 REF MNT
#   mkfs.erofs --oci=i,layer=0 --gzinfo=Z IDX REF, then
#   erofsfuse -o oci.layer=0,oci.tarindex=IDX,oci.zinfo=Z REF MNT
#
# Trees are extracted with the drop-in's fsck.erofs --extract and compared
# (c-tests/rig/treecmp.py) with what GNU tar unpacks from the blobs
# push_fixtures.py saved. The layered images with whiteouts, opaque
# directories and hard links are checked by harness/flatten_tests.py.
# Needs the registry of WORKDIR running with the fixtures pushed.
# usage: dropin_tests.sh WORKDIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(cd "$1" && pwd)
bin="$work/erofs-utils-1.9/bin"
sbin="$work/erofs-utils-1.9/sbin"
t="$work/dropin-tests"
passed=0
failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
summary() {
    echo "dropin: $passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}
# shellcheck disable=SC1091
. "$work/registry.env"
[[ -x "$bin/mkfs.erofs" ]] || { bad "no $bin/mkfs.erofs (dropin.sh)"; summary; exit 1; }
python3 "$here/../rig/push_erofs_fixture.py" --registry "$REGISTRY" --work "$work" \
    >/dev/null 2>"$work/dropin-push.log" || { bad "push_erofs_fixture.py failed"; summary; exit 1; }
rm -rf "$t"
mkdir -p "$t"

repo="$REGISTRY/plain/nomt:v1"
field() { # field REF PLATFORM INDEX COLUMN (fixtures.txt "layer" rows)
    awk -v r="$1" -v p="$2" -v i="$3" -v c="$4" \
        '$1 == "layer" && $2 == r && $3 == p && $4 == i { print $c; exit }' "$work/fixtures.txt"
}
blob_file() { local d; d=$(field "$@" 5); echo "$work/blobs/sha256/${d#sha256:}"; }
unpack() { # unpack DIR BLOB...: GNU tar, layers in order
    local dir=$1
    shift
    mkdir -p "$dir"
    for b in "$@"; do tar -xf "$b" -C "$dir" --numeric-owner || return 1; done
}
amd=linux/amd64
unpack "$t/exp-flat" "$(blob_file "$repo" $amd 0)" "$(blob_file "$repo" $amd 1)" \
    "$(blob_file "$repo" $amd 2)" || bad "set-up: GNU tar"
for i in 0 1 2; do unpack "$t/exp-layer$i" "$(blob_file "$repo" $amd $i)"; done
hello="$REGISTRY/library/hello:latest"
unpack "$t/exp-arm64" "$(blob_file "$hello" linux/arm64/v8 0)" "$(blob_file "$hello" linux/arm64/v8 1)"

# extracted_tree NAME LABEL IMG EXPECTED LOG [FSCK_ARGS...]: fsck.erofs
# --extract of IMG compared with the tree EXPECTED, one ok (LABEL and
# treecmp's summary) or FAIL line; IMG and the tree are removed after
extracted_tree() {
    local name=$1 label=$2 img=$3 exp=$4 log=$5 out="$t/$1.out"
    shift 5
    if ! "$bin/fsck.erofs" "$@" --extract="$out" "$img" >>"$log" 2>&1; then
        bad "$name: fsck.erofs --extract failed: $(tail -n 2 "$log" | tr '\n' ' ')"
    elif python3 "$here/../rig/treecmp.py" compare "$exp" "$out" --owners >>"$log" 2>&1; then
        ok "$name: $label$(tail -n 1 "$log" | sed 's/^treecmp: //')"
    else
        bad "$name: the tree differs:"
        grep '^treecmp:' "$log" | head -n 10 | sed 's/^/    /'
    fi
    rm -rf "$out" "$img"
}

# mkfs_case NAME EXPECTED [--device=TAR] MKFS_OPTIONS... -- REF
mkfs_case() {
    local name=$1 exp=$2 img="$t/$1.erofs" log="$t/$1.log"
    local fargs=() opts=()
    shift 2
    if [[ $1 == --device=* ]]; then fargs=("$1"); shift; fi
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    set -- "${opts[@]}" "$img" "$1"
    if ! "$bin/mkfs.erofs" --quiet "$@" >"$log" 2>&1; then
        bad "$name: mkfs.erofs $* failed: $(grep '<E>' "$log" | head -n 2 | tr '\n' ' ')"
        return
    fi
    extracted_tree "$name" "mkfs.erofs ${opts[*]} IMG ${*: -1} == the layers: " "$img" "$exp" \
        "$log" "${fargs[@]}"
}
# mkfs.erofs takes OUT REF: the ref goes last
mkfs_case oci-f-flat "$t/exp-flat" --oci=f,platform=linux/amd64 -- "$repo"
mkfs_case oci-f-layer2-zstd "$t/exp-layer2" --oci=f,platform=linux/amd64,layer=2 -- "$repo"
mkfs_case oci-f-blob-gzip "$t/exp-layer1" "--oci=f,platform=linux/amd64,blob=$(field "$repo" $amd 1 5)" -- "$repo"
mdigest=$(awk -v r="$repo" '$1 == "manifest" && $2 == r && $3 == "linux/amd64" { print $4; exit }' "$work/fixtures.txt")
mkfs_case oci-f-at-digest "$t/exp-layer0" --oci=f,layer=0 -- "$REGISTRY/plain/nomt@$mdigest"
mkfs_case oci-f-arm64 "$t/exp-arm64" --oci=f,platform=linux/arm64 -- "$hello"

# --oci=i with --gzinfo: a tar index of the gzip layer, its zinfo written;
# read back with the uncompressed tar as the extra device
gunzip -c "$(blob_file "$repo" $amd 1)" >"$t/layer1.tar"
mkfs_case oci-i-gzinfo "$t/exp-layer1" "--device=$t/layer1.tar" \
    --oci=i,platform=linux/amd64,layer=1 "--gzinfo=$t/layer1.zinfo" -- "$repo"
zsize=$(stat -c %s "$t/layer1.zinfo" 2>/dev/null || echo 0)
if [[ $zsize -gt 12 ]]; then
    ok "oci-i-gzinfo: the zinfo was written ($zsize bytes)"
else
    bad "oci-i-gzinfo: no zinfo written ($zsize bytes)"
fi
# Its first checkpoint is at output 0, with nothing before it: its window
# must be zeros, not what the heap held (patches/gzran-window-1.9.patch).
w0=$(python3 - "$here/../harness" "$t/layer1.zinfo" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from gzran_tests import zinfo_entries
entries = zinfo_entries(sys.argv[2])[1]
if not entries:
    print("no first checkpoint")
    sys.exit()
(_, out, _), w = entries[0]
print(f"output {out}, {sum(1 for b in w if b)} nonzero bytes in its window")
PY
)
if [[ $w0 == "output 0, 0 nonzero bytes in its window" ]]; then
    ok "oci-i-gzinfo: the first checkpoint's window is zeros ($w0)"
else
    bad "oci-i-gzinfo: the first checkpoint: $w0 (heap bytes in the zinfo)"
fi

# a missing image: erofs-utils' error path with the library's message and
# no password shown
log="$t/missing.log"
if "$bin/mkfs.erofs" --oci=f,username=u,password=S3cretPw "$t/missing.erofs" \
    "$REGISTRY/no/such-repo:v1" >"$log" 2>&1; then
    bad "missing image: mkfs.erofs succeeded"
elif grep -q S3cretPw "$log"; then
    bad "missing image: the password is shown"
elif grep -q 'failed to \(open\|resolve\) .*no/such-repo.*404.*MANIFEST_UNKNOWN' "$log"; then
    ok "missing image: $(grep -m1 'failed to' "$log" | sed 's/^<E> erofs: //' | cut -c1-160)"
else
    bad "missing image: unclear message: $(head -n 3 "$log" | tr '\n' ' ')"
fi

# erofsfuse and mount.erofs -t erofs.fuse with -o oci.*
read -r _ image_ref _ _ < <(awk '$1 == "image"' "$work/erofs-fixture.txt")
read -r _ manifest < <(awk '$1 == "manifest"' "$work/erofs-fixture.txt")
fuse_case() { # fuse_case NAME REF EXPECTED CMD...: CMD REF MNT mounts
    local name=$1 ref=$2 expected=$3 mnt="$t/mnt-$1" log="$t/$1.log" i
    shift 3
    mkdir -p "$mnt"
    PATH="$bin:$PATH" "$@" "$ref" "$mnt" >"$log" 2>&1
    for ((i = 0; i < 200; i++)); do
        awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo && break
        sleep 0.05
    done
    if ! awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; then
        bad "$name: not mounted: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    if python3 "$here/../rig/treecmp.py" compare "$expected" "$mnt" --owners >>"$log" 2>&1; then
        ok "$name: the mounted tree == the image's: $(tail -n 1 "$log" | sed 's/^treecmp: //')"
    else
        bad "$name: the mounted tree differs:"
        grep '^treecmp:' "$log" | head -n 10 | sed 's/^/    /'
    fi
    fusermount3 -u "$mnt" 2>>"$log" || fusermount3 -uz "$mnt" 2>/dev/null
}
fuse_case erofsfuse-oci "$image_ref" "$manifest" \
    "$bin/erofsfuse" -o oci.layer=0,oci.platform=linux/amd64
fuse_case mount-erofs-fuse "$image_ref" "$manifest" "$sbin/mount.erofs" -t erofs.fuse -o oci.layer=0

# Lazy mounts of an ordinary gzip layer (4342 entries, 235 MiB): its tar
# index and zinfo by mkfs.erofs --oci=i --gzinfo, mounted through them;
# without the zinfo the library makes the checkpoints itself.
read -r _ tgz_ref _ _ _ < <(awk '$1 == "tgz"' "$work/erofs-fixture.txt")
read -r _ tarfile < <(awk '$1 == "tarfile"' "$work/erofs-fixture.txt")
if "$bin/mkfs.erofs" --quiet --oci=i,layer=0 "--gzinfo=$t/tgz.zinfo" "$t/tgz.idx" \
    "$tgz_ref" >"$t/tgz-mkfs.log" 2>&1; then
    ok "mkfs.erofs --oci=i,layer=0 --gzinfo of the gzip layer: a $(stat -c %s "$t/tgz.idx")-byte tar index, a $(stat -c %s "$t/tgz.zinfo")-byte zinfo"
else
    bad "mkfs.erofs --oci=i --gzinfo failed: $(grep '<E>' "$t/tgz-mkfs.log" | head -n 2 | tr '\n' ' ')"
fi
fuse_case erofsfuse-tarindex-zinfo "$tgz_ref" "$manifest" \
    "$bin/erofsfuse" "-ooci.layer=0,oci.tarindex=$t/tgz.idx,oci.zinfo=$t/tgz.zinfo"
fuse_case mount-erofs-fuse-tarindex "$tgz_ref" "$manifest" \
    "$sbin/mount.erofs" -t erofs.fuse -o "oci.layer=0,oci.tarindex=$t/tgz.idx"
# The same image as one local file: erofs-utils' own tools read the tar
# index's extra device at its unified address (flat device emulation).
cat "$t/tgz.idx" "$tarfile" >"$t/flat.img"
extracted_tree flat-image "fsck.erofs --extract of [tar index][tar] as one file: " \
    "$t/flat.img" "$manifest" "$t/flat.log"

# Credentials at the htpasswd + TLS and the token registries: from the
# options, docker's config.json and a credential helper (a sandboxed HOME);
# the CA through EROFS_OCI_OPTIONS; a wrong password fails, unshown.
val() { sed -n "s/^$2=//p" "$1" | head -n 1; }
auth_case() { # auth_case NAME ENVFILE OCI_OPTS [HOME_CONFIG_JSON [HELPER_SECRET]]
    local name=$1 envf=$2 opts=$3 cfgjson=${4:-} hsecret=${5:-}
    local reg ca digest home="$t/home-$1" img="$t/$1.erofs" log="$t/$1.log"
    reg=$(val "$envf" AUTH_REGISTRY)
    ca=$(val "$envf" AUTH_CA)
    digest=$(awk '$1 == "layer" && $2 ~ /\/private\/app:v1$/ { print $5; exit }' \
        "${envf%.env}-fixtures.txt")
    rm -rf "$home" "$t/exp-$name"
    mkdir -p "$home/.docker" "$home/bin"
    [[ -z $cfgjson ]] || printf '%s\n' "$cfgjson" >"$home/.docker/config.json"
    if [[ -n $hsecret ]]; then
        printf '#!/bin/sh\n[ "$1" = get ] || exit 1\nread s\nprintf %s "{\\"ServerURL\\":\\"$s\\",\\"Username\\":\\"%s\\",\\"Secret\\":\\"%s\\"}"\n' \
            "'%s'" "$(val "$envf" AUTH_USER)" "$hsecret" >"$home/bin/docker-credential-dropin"
        chmod +x "$home/bin/docker-credential-dropin"
    fi
    HOME=$home DOCKER_CONFIG= PATH="$home/bin:$PATH" \
        EROFS_OCI_OPTIONS=${ca:+ca=$ca} \
        "$bin/mkfs.erofs" --quiet "--oci=f,$opts" "$img" "$reg/private/app:v1" >"$log" 2>&1
    echo $? >"$log.rc"
    if [[ $name == *wrong* ]]; then
        if [[ $(cat "$log.rc") -eq 0 ]]; then
            bad "$name: mkfs.erofs succeeded with a wrong password"
        elif grep -q wrong-pass-dropin "$log"; then
            bad "$name: the password is shown"
        elif grep -qi '401\|unauthorized\|denied' "$log"; then
            ok "$name: $(grep -m1 '<E>' "$log" | sed 's/^<E> erofs: //' | cut -c1-150)"
        else
            bad "$name: unclear message: $(head -n 2 "$log" | tr '\n' ' ')"
        fi
        return
    fi
    unpack "$t/exp-$name" "$work/blobs/sha256/${digest#sha256:}"
    if [[ $(cat "$log.rc") -ne 0 ]]; then
        bad "$name: $(grep -m1 '<E>' "$log" | cut -c1-200)"
    else
        extracted_tree "$name" "" "$img" "$t/exp-$name" "$log"
    fi
}
basic="$work/auth-basic-tls.env"
token="$work/auth-token.env"
if [[ -f $basic && -f $token ]]; then
    bu=$(val "$basic" AUTH_USER)
    bp=$(val "$basic" AUTH_PASS)
    breg=$(val "$basic" AUTH_REGISTRY)
    b64=$(printf '%s:%s' "$bu" "$bp" | base64 -w0)
    auth_case basic-options "$basic" "layer=0,username=$bu,password=$bp"
    auth_case basic-docker-config "$basic" "layer=0" \
        "{\"auths\": {\"$breg\": {\"auth\": \"$b64\"}}}"
    auth_case basic-cred-helper "$basic" "layer=0" \
        "{\"credHelpers\": {\"$breg\": \"dropin\"}}" "$bp"
    auth_case basic-wrong-password "$basic" "layer=0,username=$bu,password=wrong-pass-dropin"
    auth_case token-options "$token" \
        "layer=0,username=$(val "$token" AUTH_USER),password=$(val "$token" AUTH_PASS)"
    auth_case token-wrong-password "$token" \
        "layer=0,username=$(val "$token" AUTH_USER),password=wrong-pass-dropin"
else
    bad "no auth registries ($basic, $token): start them first (run-tests.sh does)"
fi

summary
