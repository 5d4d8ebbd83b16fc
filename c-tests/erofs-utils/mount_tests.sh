#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# Lazy mount of an EROFS image stored in a registry: the patched erofsfuse
# of erofs-utils 1.9 (erofs-utils.sh) mounting
#
#   erofsfuse-1.9 [-f] 'oci://REGISTRY/erofs/tree:v1?layer=0[,OPTIONS]' MNT
#
# against the image push_erofs_fixture.py built and pushed (a ~232 MiB
# tree of 4000+ entries), and comparing what the mount shows with the
# generated tree (c-tests/rig/treecmp.py: every path, type, mode, owner, size,
# link target, and the sha256 of every file).
#
# Checks:
#   * bad sources (unknown repository, unknown tag, layer out of range, a
#     blob that is not EROFS, nothing listening, wrong credentials at an
#     htpasswd + TLS registry, whose password erofsfuse must not print):
#     erofsfuse exits non-zero
#     with the reason, within seconds, and leaves no mount behind;
#   * cold mounts through c-tests/rig/faultproxy.py (which counts the bytes of
#     every blob GET): mount + read one small file, list the whole tree
#     (metadata only), read everything; each on a fresh mount, each
#     compared with the tree; unmounted with fusermount3 -u;
#   * a far registry (the proxy delays every request by 30 ms): after
#     the mount and a stat of its root, the blocks named by the first
#     directory levels (this script's own walk of the image) were fetched
#     before any read asked, and no others; the listing on that mount
#     matches the tree; with meta_prefetch=none nothing is fetched unasked;
#   * daemon mode (no -f): erofsfuse opens the blob, reads the superblock,
#     then forks (fuse_daemonize); the daemon must read through the vfile
#     it inherited (the library restarts its I/O thread in the child);
#   * a registry that stalls mid-blob (faultproxy "stall"): reads fail
#     within the library's timeouts (connect_timeout=2,low_speed_time=3,
#     retries=1), the mount stays responsive and unmounts;
#   * the registry killed while mounted (a second docker-registry on the
#     same storage, killed with SIGKILL): reads of data not yet fetched
#     fail with EIO (not hang), and unmount still works.
#
# Prints the cold-mount figures (time to mount + read one small file;
# bytes fetched for one small file / a full listing / everything, as a
# share of the image size) and ends with "N passed, N failed".
#
# The registry and the proxy of WORKDIR are started when they are not
# running (and then stopped at the end).  Needs FUSE (/dev/fuse, root).
#
# usage: mount_tests.sh WORKDIR
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=c-tests/rig/procs.sh
. "$here/../rig/procs.sh"
mkdir -p "$1"
work=$(cd "$1" && pwd)
bin="$work/bin"
fuse="$bin/erofsfuse-1.9"
t="$work/mount-tests"
treecmp="$here/../rig/treecmp.py"

passed=0
failed=0
ok() { echo "ok $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
summary() {
    echo "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}
die() {
    bad "$*"
    summary
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }'; }

# --- set-up -------------------------------------------------------------------

[[ -c /dev/fuse ]] || die "set-up: no /dev/fuse"
command -v fusermount3 >/dev/null || die "set-up: no fusermount3"

started_registry=0
started_proxy=0
alive_pid "$work/registry/pid" docker-registry >/dev/null || started_registry=1
alive_pid "$work/faultproxy/pid" faultproxy.py >/dev/null || started_proxy=1

fuse_pids=()
mounts=()
reg2="$t/reg2"
cleanup() {
    local m p
    for m in "${mounts[@]}"; do
        if is_mounted "$m"; then
            fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        fi
    done
    for p in "${fuse_pids[@]}"; do
        kill -9 "$p" 2>/dev/null || true
    done
    bash "$here/../rig/registry.sh" stop "$reg2" >/dev/null 2>&1 || true
    if [[ $started_proxy -eq 1 ]]; then
        bash "$here/../rig/faultproxy.sh" stop "$work" >/dev/null 2>&1 || true
    fi
    if [[ $started_registry -eq 1 ]]; then
        bash "$here/../rig/registry.sh" stop "$work" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

bash "$here/../rig/registry.sh" start "$work" >/dev/null || die "set-up: cannot start the registry"
# shellcheck disable=SC1091
. "$work/registry.env"
rc=0
bash "$here/erofs-utils.sh" "$work" >/dev/null 2>"$work/mount-tests-build.log" || rc=$?
[[ $rc -eq 0 ]] || { tail -n 20 "$work/mount-tests-build.log"; die "set-up: erofs-utils.sh failed (exit $rc)"; }
python3 "$here/../rig/push_erofs_fixture.py" --registry "$REGISTRY" --work "$work" \
    2>"$work/mount-tests-push.log" ||
    { tail -n 20 "$work/mount-tests-push.log"; die "set-up: push_erofs_fixture.py failed"; }
# Only for the "not an EROFS blob" case (plain/nomt:v1 layer 0 is a tar).
python3 "$here/../rig/push_fixtures.py" --registry "$REGISTRY" --work "$work" \
    >/dev/null 2>"$work/mount-tests-push2.log" ||
    { tail -n 20 "$work/mount-tests-push2.log"; die "set-up: push_fixtures.py failed"; }
bash "$here/../rig/faultproxy.sh" start "$work" >/dev/null || die "set-up: cannot start faultproxy"
# shellcheck disable=SC1091
. "$work/faultproxy.env"

read -r _ image_ref image_digest image_size < <(awk '$1 == "image"' "$work/erofs-fixture.txt")
read -r _ image_mz_ref _ _ < <(awk '$1 == "image-mz"' "$work/erofs-fixture.txt")
read -r _ manifest < <(awk '$1 == "manifest"' "$work/erofs-fixture.txt")
read -r _ n_entries n_files _ _ n_bytes < <(awk '$1 == "stats"' "$work/erofs-fixture.txt")
repo_tag=${image_ref#"$REGISTRY"/}         # erofs/tree:v1
echo "--- image $image_ref $image_digest: $image_size bytes, $n_entries entries, $n_files files, $n_bytes bytes of data"

rm -rf "$t"
mkdir -p "$t"

# --- helpers -----------------------------------------------------------------------

is_mounted() {
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# mount_fg SRC MNT LOG: erofsfuse -f in the background; sets fuse_pid and
# mount_s; succeeds once MNT is mounted, fails if erofsfuse exits first or
# nothing is mounted after 30 s.
mount_fg() {
    local src=$1 mnt=$2 log=$3 s i
    mkdir -p "$mnt"
    mounts+=("$mnt")
    s=$(now)
    "$fuse" -f "$src" "$mnt" >"$log" 2>&1 &
    fuse_pid=$!
    fuse_pids+=("$fuse_pid")
    for ((i = 0; i < 600; i++)); do
        if is_mounted "$mnt"; then
            mount_s=$(elapsed "$s")
            return 0
        fi
        kill -0 "$fuse_pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# unmount MNT PID: fusermount3 -u, then PID (if any) must exit within 10 s.
unmount() {
    local mnt=$1 pid=${2:-} i
    fusermount3 -u "$mnt" 2>>"$t/unmount.log" || return 1
    [[ -n "$pid" ]] || return 0
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.05
    done
    return 1
}

# read_file PATH LIMIT: read PATH in a child killed after LIMIT s; prints
# "ok <sha256> <seconds>" or "err <errno name> <seconds>" or "hung <seconds>".
read_file() {
    local out rc
    out=$(timeout -s KILL "$2" python3 - "$1" <<'PY'
import errno, hashlib, sys, time
t = time.monotonic()
h = hashlib.sha256()
try:
    with open(sys.argv[1], "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    print(f"ok {h.hexdigest()} {time.monotonic() - t:.2f}")
except OSError as e:
    print(f"err {errno.errorcode.get(e.errno, e.errno)} {time.monotonic() - t:.2f}")
PY
    )
    rc=$?
    if [[ $rc -eq 137 ]]; then
        echo "hung $2"
    else
        echo "$out"
    fi
}

# expected_sha PATH: sha256 of PATH (relative) from the tree description.
expected_sha() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["sha256"])' \
        "$manifest" "$1"
}

# The proxy logs every finished request with the body bytes it sent
# ("proxy GET <path> range=... -> <status> rule=... bytes=N"); its stats
# API keeps only the last 500 requests, so the figures come from the log.
proxy_log="$work/faultproxy/log"
# proxy_bytes: "<bytes> <blob GETs> <largest body>" since the last proxy_reset.
proxy_bytes() {
    tail -c +$((proxy_log_off + 1)) "$proxy_log" | awk '
        $2 == "proxy" && $3 == "GET" && $4 ~ /\/blobs\// {
            for (i = 5; i <= NF; i++)
                if ($i ~ /^bytes=/) { b = substr($i, 7) + 0; sum += b; n++; if (b > max) max = b }
        }
        END { printf "%d %d %d\n", sum, n, max }'
}
proxy_reset() {
    python3 "$here/../rig/faultctl.py" "$PROXY" clear >/dev/null
    proxy_log_off=$(stat -c %s "$proxy_log")
}
share() { awk -v b="$1" -v s="$image_size" 'BEGIN { printf "%.2f%%", 100 * b / s }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }

small="names/with space.txt"
small_sha=$(expected_sha "$small")
opts="layer=0"

# --- 1. bad sources -------------------------------------------------------------------

# bad_source NAME SRC PATTERN: erofsfuse fails fast, says PATTERN, no mount.
bad_source() {
    local name=$1 src=$2 pat=$3 mnt="$t/mnt-bad" log="$t/bad-$1.log" s rc
    mkdir -p "$mnt"
    s=$(now)
    timeout -s KILL 60 "$fuse" -f "$src" "$mnt" >"$log" 2>&1
    rc=$?
    local secs
    secs=$(elapsed "$s")
    if [[ $rc -eq 137 ]]; then
        bad "bad source: $name: erofsfuse still running after 60 s (killed)"
    elif [[ $rc -eq 0 ]]; then
        bad "bad source: $name: erofsfuse exited 0"
    elif is_mounted "$mnt"; then
        bad "bad source: $name: $mnt is mounted"
        fusermount3 -uz "$mnt" 2>/dev/null || true
    elif ! grep -q -- "$pat" "$log"; then
        bad "bad source: $name: no '$pat' in: $(grep -v '^erofsfuse ' "$log" | head -n 3 | tr '\n' ' ')"
    else
        ok "bad source: $name: exit $rc after $secs s: $(grep -m1 -- "$pat" "$log" | sed 's/^<E> erofs: //')"
    fi
}
bad_source "unknown repository" "oci://$REGISTRY/no/such-repo:v1?layer=0" \
    'failed to open oci://.*\(404\|unknown\)'
bad_source "unknown tag" "oci://$REGISTRY/erofs/tree:no-such-tag?layer=0" \
    'failed to open oci://.*\(404\|unknown\)'
bad_source "layer out of range" "oci://$REGISTRY/$repo_tag?layer=3" \
    'failed to open oci://.*layer'
bad_source "malformed reference" "oci://$REGISTRY/UPPER/Case:v1?layer=0" \
    'failed to open oci://'
bad_source "not an EROFS blob" "oci://$REGISTRY/plain/nomt:v1?layer=0,platform=linux/amd64" \
    'erofs super\s*block'
bad_source "nothing listening" \
    "oci://127.0.0.1:9/$repo_tag?layer=0,connect_timeout=2,retries=1" \
    'failed to open oci://.*\(refused\|connect\)'
# Wrong credentials, at the htpasswd + TLS registry of the auth tests
# (started here if it is not running; run-tests.sh stops it at the end).
if bash "$here/../rig/auth-registry.sh" start "$work" basic-tls >/dev/null 2>"$t/auth-start.log"; then
    # shellcheck disable=SC1091
    . "$work/auth-basic-tls.env"
    wrong=wrong-Pass-$$
    bad_source "bad credentials" \
        "oci://$AUTH_REGISTRY/private/app:v1?layer=0,username=$AUTH_USER,password=$wrong,ca=$AUTH_CA" \
        'failed to open oci://.*credentials were refused'
    if grep -q -- "$wrong" "$t/bad-bad credentials.log"; then
        bad "bad source: bad credentials: the password is in erofsfuse's output"
    else
        ok "bad source: bad credentials: the password is not in erofsfuse's output"
    fi
else
    bad "bad source: bad credentials: cannot start the auth registry: $(tail -n 1 "$t/auth-start.log")"
fi

# --- 2. cold mounts through the proxy: one small file, listing, everything -----------

declare -A fig
# cold_mounts NAME REPO_TAG: three fresh mounts of oci://PROXY/REPO_TAG,
# each compared with the tree; the figures go to fig[NAME,...].
cold_mounts() {
    local name=$1 src="oci://$PROXY/$2?$opts" s r secs
    local mnt="$t/mnt"

    # a. mount + one small file
    proxy_reset
    s=$(now)
    if mount_fg "$src" "$mnt" "$t/mount-$name-small.log"; then
        r=$(read_file "$mnt/$small" 30)
        fig[$name,first]=$(elapsed "$s")
        fig[$name,mount]=$mount_s
        if [[ "$r" == "ok $small_sha "* ]]; then
            ok "$name: cold mount + read '$small': mounted in $mount_s s, file read after ${fig[$name,first]} s"
        else
            bad "$name: cold mount + read '$small': $r"
        fi
        if unmount "$mnt" "$fuse_pid"; then
            ok "$name: unmount after one file"
        else
            bad "$name: unmount after one file"
        fi
    else
        bad "$name: erofsfuse did not mount: $(tail -n 3 "$t/mount-$name-small.log" | tr '\n' ' ')"
        return
    fi
    sleep 0.3
    read -r "fig[$name,small]" "fig[$name,small_gets]" "fig[$name,small_max]" < <(proxy_bytes)

    # b. listing (metadata only: lstat + readlink of every entry)
    proxy_reset
    if mount_fg "$src" "$mnt" "$t/mount-$name-list.log"; then
        s=$(now)
        if python3 "$treecmp" compare "$manifest" "$mnt" --no-content --owners \
            >"$t/$name-list.log" 2>&1; then
            fig[$name,list_s]=$(elapsed "$s")
            ok "$name: listing: $(tail -n 1 "$t/$name-list.log" | sed 's/^treecmp: //') in ${fig[$name,list_s]} s"
        else
            bad "$name: listing differs from the tree:"
            sed 's/^/    /' "$t/$name-list.log" | head -n 25
        fi
        if unmount "$mnt" "$fuse_pid"; then
            ok "$name: unmount after listing"
        else
            bad "$name: unmount after listing"
        fi
    else
        bad "$name: listing: erofsfuse did not mount: $(tail -n 3 "$t/mount-$name-list.log" | tr '\n' ' ')"
    fi
    sleep 0.3
    read -r "fig[$name,list]" "fig[$name,list_gets]" "fig[$name,list_max]" < <(proxy_bytes)

    # c. everything
    proxy_reset
    if mount_fg "$src" "$mnt" "$t/mount-$name-all.log"; then
        s=$(now)
        if python3 "$treecmp" compare "$manifest" "$mnt" --owners >"$t/$name-all.log" 2>&1; then
            secs=$(elapsed "$s")
            fig[$name,all_s]=$secs
            ok "$name: read everything: $(tail -n 1 "$t/$name-all.log" | sed 's/^treecmp: //') in $secs s ($(awk -v b="$n_bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / 1048576 / s }') MiB/s)"
        else
            bad "$name: read everything: the mount differs from the tree:"
            sed 's/^/    /' "$t/$name-all.log" | head -n 25
        fi
        if unmount "$mnt" "$fuse_pid"; then
            ok "$name: unmount after reading everything"
        else
            bad "$name: unmount after reading everything"
        fi
    else
        bad "$name: read everything: erofsfuse did not mount: $(tail -n 3 "$t/mount-$name-all.log" | tr '\n' ' ')"
    fi
    sleep 0.3
    read -r "fig[$name,all]" "fig[$name,all_gets]" "fig[$name,all_max]" < <(proxy_bytes)
}
cold_mounts default "$repo_tag"
cold_mounts mz "${image_mz_ref#"$REGISTRY"/}"

# --- 2b. a far registry: the first directory levels fetched at the mount ----------

# The proxy delays every request by 30 ms, so the library finds the
# registry far; meta_prefetch=auto then fetches the blocks holding the
# inodes of the root's children and grandchildren and the entries of its
# subdirectories, named by the image's first block, before anything asks.
# The blocks are checked against this script's own walk of the image
# (hinted_blocks), and the tree listed on that mount against the tree.
hinted_blocks() {
    python3 - "$work/erofs-fixture/tree.erofs" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read(1 << 20)
bits = d[1024 + 12]
meta = struct.unpack_from("<I", d, 1024 + 40)[0] << bits
def entries(at):
    fmt, _, mode = struct.unpack_from("<HHH", d, at)
    size = struct.unpack_from("<Q" if fmt & 1 else "<I", d, at + 8)[0]
    start = struct.unpack_from("<I", d, at + 16)[0] << bits
    bs, inline = 1 << bits, at + (64 if fmt & 1 else 32)
    if mode & 0o170000 != 0o040000:
        return [], []
    pieces = [(start + i * bs, bs) for i in range(size // bs)]
    if (fmt >> 1) & 7 == 2 and size % bs:
        pieces.append((inline, size % bs))
    found, far = [], []
    for off, n in pieces:
        if off + n > len(d):
            far.append(off)
            continue
        k = struct.unpack_from("<H", d, off + 8)[0] // 12
        for i in range(k):
            nid, no, ft = struct.unpack_from("<QHB", d, off + 12 * i)
            end = struct.unpack_from("<H", d, off + 12 * i + 20)[0] if i + 1 < k else n
            if d[off + no:off + end].rstrip(b"\0") not in (b".", b".."):
                found.append((meta + 32 * nid, ft == 2))
    return found, far
want = []
kids, far = entries(meta + 32 * struct.unpack_from("<H", d, 1024 + 14)[0])
want += far
for at, is_dir in kids:
    if at >= len(d):
        want.append(at)
    elif is_dir:
        grand, far = entries(at)
        want += [g for g, _ in grand if g >= len(d)] + far
seen = []
for b in (o >> 20 for o in want):
    if b not in seen:
        seen.append(b)
print(" ".join(map(str, seen)))
PY
}
# whole_block_gets: the 1 MiB blocks past the first that blob GETs since
# the last proxy_reset asked for whole.
whole_block_gets() {
    tail -c +$((proxy_log_off + 1)) "$proxy_log" | awk '
        $2 == "proxy" && $3 == "GET" && $4 ~ /\/blobs\// {
            for (i = 5; i <= NF; i++)
                if ($i ~ /^range=bytes=/) {
                    split(substr($i, 13), r, "-")
                    if (r[1] > 0 && r[1] % 1048576 == 0 && r[2] - r[1] == 1048575)
                        printf "%d ", r[1] / 1048576
                }
        }'
}
far_rules='[{"match": "^/v2/", "action": "delay", "seconds": 0.03, "times": -1}]'
hinted=$(hinted_blocks)
mnt="$t/mnt"
for mp in auto none; do
    proxy_reset
    python3 "$here/../rig/faultctl.py" "$PROXY" rules "$far_rules" >/dev/null
    if ! mount_fg "oci://$PROXY/$repo_tag?$opts,meta_prefetch=$mp" "$mnt" "$t/mount-far-$mp.log"; then
        bad "far registry, meta_prefetch=$mp: erofsfuse did not mount: $(tail -n 3 "$t/mount-far-$mp.log" | tr '\n' ' ')"
        continue
    fi
    stat "$mnt" >/dev/null
    sleep 2
    got=$(whole_block_gets)
    if [[ $mp == none ]]; then
        if [[ -z $got ]]; then
            ok "far registry, meta_prefetch=none: no block past the first fetched before a read asks"
        else
            bad "far registry, meta_prefetch=none: blocks fetched unasked: $got"
        fi
    else
        extra=$(comm -23 <(tr ' ' '\n' <<<"$got" | sed '/^$/d' | sort -u) \
            <(tr ' ' '\n' <<<"$hinted" | sort -u) | tr '\n' ' ')
        # (the proxy logs a request when it ends: in no set order)
        if [[ -n $got && -z $extra && " $got " == *" ${hinted%% *} "* ]]; then
            ok "far registry: mounted and stat, the blocks of the first directory levels came unasked: $got(of $hinted)"
        else
            bad "far registry: blocks fetched unasked '$got', named by the image's first levels '$hinted' (not named: '$extra')"
        fi
        if python3 "$treecmp" compare "$manifest" "$mnt" --no-content --owners \
            >"$t/far-list.log" 2>&1; then
            ok "far registry, meta_prefetch=auto: listing: $(tail -n 1 "$t/far-list.log" | sed 's/^treecmp: //')"
        else
            bad "far registry, meta_prefetch=auto: listing differs from the tree:"
            sed 's/^/    /' "$t/far-list.log" | head -n 25
        fi
    fi
    unmount "$mnt" "$fuse_pid" || bad "far registry, meta_prefetch=$mp: unmount failed"
done
python3 "$here/../rig/faultctl.py" "$PROXY" clear >/dev/null

# --- 3. daemon mode ----------------------------------------------------------------------

mntd="$t/mnt-daemon"
mkdir -p "$mntd"
mounts+=("$mntd")
s=$(now)
if timeout -s KILL 60 "$fuse" "oci://$REGISTRY/$repo_tag?$opts" "$mntd" >"$t/daemon.log" 2>&1 &&
   is_mounted "$mntd"; then
    # The daemon: the process whose command line ends with the mount point.
    dpid=""
    for p in $(pgrep -f -- "$mntd\$"); do
        if [[ "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" == "$fuse oci://"*" $mntd " ]]; then
            dpid=$p
        fi
    done
    [[ -n "$dpid" ]] && fuse_pids+=("$dpid")
    big="large/big1.img"
    r=$(read_file "$mntd/$big" 60)
    if [[ "$r" == "ok $(expected_sha "$big") "* ]]; then
        ok "daemon mode: erofsfuse returned after $(elapsed "$s") s, '$big' read in ${r##* } s"
    else
        bad "daemon mode: read '$big': $r"
    fi
    if unmount "$mntd" "$dpid"; then
        ok "daemon mode: unmounted, daemon (pid ${dpid:-?}) exited"
    else
        bad "daemon mode: unmount or daemon exit failed"
    fi
else
    bad "daemon mode: erofsfuse failed: $(tail -n 3 "$t/daemon.log" | tr '\n' ' ')"
fi

# --- 4. a stalling registry ---------------------------------------------------------------

fault_opts="layer=0,connect_timeout=2,low_speed_time=3,retries=1"
mnt="$t/mnt"
proxy_reset
if mount_fg "oci://$PROXY/$repo_tag?$fault_opts" "$mnt" "$t/mount-stall.log"; then
    r=$(read_file "$mnt/$small" 30)
    [[ "$r" == "ok $small_sha "* ]] || bad "stall: first read failed: $r"
    python3 "$here/../rig/faultctl.py" "$PROXY" rules \
        '[{"match": "/blobs/", "method": "GET", "action": "stall", "seconds": 120, "times": -1}]' >/dev/null
    big="large/big2.img"
    r=$(read_file "$mnt/$big" 90)
    case $r in
        err\ *) ok "stall: reading '$big' fails with ${r#err } s (not a hang)" ;;
        hung*) bad "stall: reading '$big' hung for 90 s" ;;
        *) bad "stall: reading '$big' did not fail: $r" ;;
    esac
    r=$(timeout -s KILL 30 stat -c %s "$mnt/$small" 2>&1)
    if [[ "$r" =~ ^[0-9]+$ ]]; then
        ok "stall: the mount still answers (stat '$small': $r bytes)"
    else
        bad "stall: stat after the failure: $r"
    fi
    python3 "$here/../rig/faultctl.py" "$PROXY" clear >/dev/null
    if unmount "$mnt" "$fuse_pid"; then
        ok "stall: unmount works"
    else
        bad "stall: unmount failed"
    fi
else
    bad "stall: erofsfuse did not mount: $(tail -n 3 "$t/mount-stall.log" | tr '\n' ' ')"
fi

# --- 5. the registry killed while mounted -----------------------------------------------

# A second docker-registry serving the same storage, so that killing it
# leaves the WORKDIR's registry alone.
mkdir -p "$reg2/registry"
ln -sfn "$work/registry/data" "$reg2/registry/data"
if reg2_addr=$(bash "$here/../rig/registry.sh" start "$reg2" 2>"$t/reg2.log"); then
    if mount_fg "oci://$reg2_addr/$repo_tag?$fault_opts" "$mnt" "$t/mount-kill.log"; then
        r=$(read_file "$mnt/$small" 30)
        [[ "$r" == "ok $small_sha "* ]] || bad "registry killed: first read failed: $r"
        kill -9 "$(cat "$reg2/registry/pid")" 2>/dev/null
        sleep 0.2
        big="large/big0.img"
        r=$(read_file "$mnt/$big" 90)
        case $r in
            err\ EIO\ *) ok "registry killed: reading '$big' fails with ${r#err } s" ;;
            err\ *) bad "registry killed: reading '$big' fails with ${r#err } s, not EIO" ;;
            hung*) bad "registry killed: reading '$big' hung for 90 s" ;;
            *) bad "registry killed: reading '$big' did not fail: $r" ;;
        esac
        if unmount "$mnt" "$fuse_pid"; then
            ok "registry killed: unmount works, erofsfuse exited"
        else
            bad "registry killed: unmount failed"
        fi
    else
        bad "registry killed: erofsfuse did not mount: $(tail -n 3 "$t/mount-kill.log" | tr '\n' ' ')"
    fi
    bash "$here/../rig/registry.sh" stop "$reg2" >/dev/null 2>&1
else
    bad "registry killed: cannot start a second registry: $(tail -n 3 "$t/reg2.log" | tr '\n' ' ')"
fi

# --- figures ------------------------------------------------------------------------------

echo "--- cold mount figures (image $image_size bytes = $(mib "$image_size"); bytes = blob GET bodies the registry sent, from the faultproxy log)"
figure() {   # figure NAME KEY LABEL
    local b=${fig[$1,$2]:-0}
    echo "    $3 $(mib "$b") in ${fig[$1,$2_gets]:-?} blob GETs (largest $(mib "${fig[$1,$2_max]:-0}")) = $(share "$b") of the image$(
        [[ $b -gt $image_size ]] && echo "  <- more than the image: blocks fetched more than once")"
}
for name in default mz; do
    case $name in
        default) echo "  $image_ref (mkfs defaults: inodes between the data)" ;;
        mz) echo "  $image_mz_ref (mkfs --MZ: metadata in one zone)" ;;
    esac
    echo "    mount ${fig[$name,mount]:-?} s; mount + first small file ${fig[$name,first]:-?} s; listing ${fig[$name,list_s]:-?} s; everything ${fig[$name,all_s]:-?} s"
    figure "$name" small "one small file: "
    figure "$name" list "list whole tree:"
    figure "$name" all "read everything:"
done
summary
