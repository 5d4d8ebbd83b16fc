#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# make bench, section 9: the sequential read of the big blob per network
# profile, through c-tests/rig/wanproxy.py (a one-way delay each way, a
# cap per connection and in total; `lan` is bare loopback), next to the
# peers measured in the same run through the same proxy:
#
#   curl (one stream), 8 ranged curls at once (the proxy's own ceiling:
#   goal >= 0.8 of the total cap), curl | openssl dgst -sha256 (a verified
#   pipeline), skopeo copy (containers/image), containerd's ctr content
#   fetch (Debian's containerd, a fresh daemon on a private root for each
#   fetch; setup-deps.sh bench installs it), erofs-utils 1.9's
#   ocierofs_io_open() (when built), and ours at read sizes 4K, 32K, 1M
#   with the default options (verified).
#
# Then 300 random 4 KiB preads, cold, ours (default options) against the
# reference, and 4 threads against 1 with fill=none; beyond lan, the one
# thread again from a registry that redirects every blob GET to a host as
# far away (rig/faultproxy.py's redirect, a second WAN model in front of
# its cdn listener), against the time straight from the registry.
#
# Goals, on `wan` only (the other profiles are printed with the same
# ratios): ours at least 0.8 of the link's limit (size / total cap) and at
# least 5x curl's single stream at every read size, and ahead of every
# peer; random preads at least 10x the reference (same bytes); 4 threads
# at least 3x one.
#
# usage: profiles.sh WORKDIR BUILDDIR [PROFILE...]   (default: every profile)
# Environment: PROFILE_ROUNDS (best of, default 2), THREAD_ROUNDS (the
# 1- and 4-thread runs, alternating, best of, default 3).
# Ends with "profiles: N goals met, N missed[ (N not measured)]".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(cd "$1" && pwd)
BUILD=$(cd "$2" && pwd)
shift 2
ROUNDS=${PROFILE_ROUNDS:-2}
THREAD_ROUNDS=${THREAD_ROUNDS:-3}
BR=$BUILD/bench_reads-1.9
REFD=$WORK/erofs-ref-driver
PROXY=$HERE/../rig/wanproxy.py
CHUNKS=(4096 32768 1048576)
RN=300
RLEN=4096

# shellcheck disable=SC1091
. "$WORK/registry.env"
read -r _ ref digest size < <(awk '$1 == "big"' "$WORK/fixtures.txt")
path=${ref#"$REGISTRY"/}
repo=${path%:*}
tag=${path##*:}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/oci-profiles.XXXXXX")
proxy_pid=
cleanup() {
	[[ -n $proxy_pid ]] && kill "$proxy_pid" 2>/dev/null
	[[ -n ${ctd_pid:-} ]] && kill "$ctd_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

profiles=("$@")
if [[ ${#profiles[@]} -eq 0 ]]; then
	mapfile -t profiles < <(python3 "$PROXY" --list | awk '{ print $1 }')
fi

# shellcheck source=c-tests/bench/verdicts.sh
. "$HERE/verdicts.sh"	# judge, div, wan_proxy
mbs() { awk -v s="$size" -v t="$1" 'BEGIN { if (t > 0) printf "%.1f MB/s", s / t / 1e6 }'; }

# best NAME CMD...: the best wall time of ROUNDS runs of CMD (empty when a
# run fails); $tmp/NAME.out keeps the last run's stdout, $tmp/NAME.err
# every run's stderr
best() {
	local name=$1 i s e b=
	shift
	for ((i = 0; i < ROUNDS; i++)); do
		s=$EPOCHREALTIME
		"$@" >"$tmp/$name.out" 2>>"$tmp/$name.err" </dev/null || { b=; break; }
		e=$EPOCHREALTIME
		b=$(awk -v s="$s" -v e="$e" -v b="$b" 'BEGIN { t = e - s; if (b == "" || t < b) b = t; printf "%.3f", b }')
	done
	echo "$b"
}

# lower A B: the smaller of two times, A alone when B is "-" (none yet);
# empty when either is empty (a run failed)
lower() {
	[[ -n $1 && -n $2 ]] || return 0
	[[ $2 == - ]] && { echo "$1"; return 0; }
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a < b ? a : b }'
}

curl_one() { curl -sf -o /dev/null "http://$1/v2/$repo/blobs/$digest"; }
curl_verified() {
	local got
	got=$(curl -sf "http://$1/v2/$repo/blobs/$digest" | openssl dgst -sha256 | awk '{ print $NF }')
	[[ sha256:$got == "$digest" ]]
}
# curl_ranges HOST N: the blob in N ranged GETs at once
curl_ranges() {
	local host=$1 n=$2 i part from to pids=() rc=0
	part=$(((size + n - 1) / n))
	for ((i = 0; i < n; i++)); do
		from=$((i * part))
		to=$((from + part - 1))
		((to >= size)) && to=$((size - 1))
		curl -sf -o /dev/null -r "$from-$to" "http://$host/v2/$repo/blobs/$digest" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	return $rc
}
skopeo_copy() {
	rm -rf "$tmp/skopeo"
	skopeo copy -q --src-tls-verify=false "docker://$1/$repo:$tag" "dir:$tmp/skopeo"
}
# ours HOST CHUNK: the library's read(2) stream with its own digest check
# (a mismatch fails the last read: bench_reads exits 1); bench_reads does
# not hash a second time
ours() {
	local out
	out=$(BENCH_READS_HASH=0 "$BR" seq "$1/$repo:$tag" - "$2") || return 1
	[[ $out == *" errors=0"* ]]
}
# containerd (Debian's 1.6, installed by `setup-deps.sh bench`): a daemon
# on a private root and socket, started afresh for each fetch (its content
# store would otherwise keep the blob); ctr content fetch pulls the image
# (manifest, config, layer) into it, digests checked
ctd_why=
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
	ctd_why="containerd is not installed (c-tests/rig/setup-deps.sh bench installs it)"
fi
ctd_pid=
ctd_stop() {
	if [[ -n $ctd_pid ]]; then
		kill "$ctd_pid" 2>/dev/null
		wait "$ctd_pid" 2>/dev/null
		ctd_pid=
	fi
	rm -rf "$tmp/ctd"
}
ctd_start() {
	local d=$tmp/ctd i
	ctd_stop
	mkdir -p "$d"
	cat >"$d/config.toml" <<-EOF
		version = 2
		root = "$d/root"
		state = "$d/state"
		disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
		  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
		  "io.containerd.internal.v1.tracing"]
		[grpc]
		  address = "$d/containerd.sock"
		[ttrpc]
		  address = "$d/containerd.ttrpc.sock"
	EOF
	containerd --config "$d/config.toml" >"$d/log" 2>&1 &
	ctd_pid=$!
	for ((i = 0; i < 100; i++)); do
		[[ -S $d/containerd.sock ]] && return 0
		sleep 0.05
	done
	return 1
}
ctd_fetch() {
	ctr --address "$tmp/ctd/containerd.sock" -n bench content fetch --plain-http "$1/$repo:$tag" >/dev/null
}
# ctd_best HOST: the best of ROUNDS fetches, each into a fresh containerd
ctd_best() {
	local i s e b= err=$tmp/ctd.err
	for ((i = 0; i < ROUNDS; i++)); do
		ctd_start || { echo "containerd did not start: $(tail -n1 "$tmp/ctd/log")" >"$err"; b=; break; }
		s=$EPOCHREALTIME
		ctd_fetch "$1" 2>"$err" || { b=; break; }
		e=$EPOCHREALTIME
		b=$(awk -v s="$s" -v e="$e" -v b="$b" 'BEGIN { t = e - s; if (b == "" || t < b) b = t; printf "%.3f", b }')
	done
	ctd_stop
	echo "$b"
}
refd_seq() { EROFS_REF_TIMEOUT=300 "$REFD" seq "$1" "$repo" "$tag" 0 1048576 >/dev/null; }
# ours_random HOST OPTIONS, refd_random HOST, ours_threads HOST T: the
# preads of section 3 ($RN of $RLEN bytes, seed 1); stdout kept for the
# sha256 over what they read
ours_random() { "$BR" random "$1/$repo:$tag" "$2" "$RN" "$RLEN" 1; }
refd_random() { EROFS_REF_TIMEOUT=300 "$REFD" random "$1" "$repo" "$tag" 0 "$RN" "$RLEN" 1; }
ours_threads() { "$BR" threads "$1/$repo:$tag" fill=none "$2" "$RN" "$RLEN" 1; }

# The same image in the htpasswd + TLS registry of the auth tests, which
# offers HTTP/2: does HTTP/2 lift a connection's limit (it does not: its
# streams share one connection), and do our parallel requests stay on
# connections of their own there?
tls=
if bash "$HERE/../rig/auth-registry.sh" start "$WORK" basic-tls >"$tmp/tls.log" 2>&1; then
	# shellcheck disable=SC1091
	. "$WORK/auth-basic-tls.env"
	if skopeo copy -q --src-tls-verify=false --dest-cert-dir "$AUTH_CERT_DIR" \
		--dest-creds "$AUTH_USER:$AUTH_PASS" "docker://$REGISTRY/$repo:$tag" \
		"docker://$AUTH_REGISTRY/$repo:$tag" >>"$tmp/tls.log" 2>&1; then
		tls=$AUTH_REGISTRY
	fi
fi
tls_curl() { curl -sf --cacert "$AUTH_CA" -u "$AUTH_USER:$AUTH_PASS" "$@"; }
h2_one() { tls_curl --http2 -o /dev/null "https://$1/v2/$repo/blobs/$digest"; }
# h2_streams HOST N: the blob in N ranged GETs at once, as streams of one
# HTTP/2 connection (curl --parallel multiplexes them)
h2_streams() {
	local host=$1 n=$2 i part from to args=()
	part=$(((size + n - 1) / n))
	for ((i = 0; i < n; i++)); do
		from=$((i * part))
		to=$((from + part - 1))
		((to >= size)) && to=$((size - 1))
		((i > 0)) && args+=(-:)
		args+=(--http2 --cacert "$AUTH_CA" -u "$AUTH_USER:$AUTH_PASS" -sf -o /dev/null
			-r "$from-$to" "https://$host/v2/$repo/blobs/$digest")
	done
	curl --parallel --parallel-max "$n" "${args[@]}"
}
ours_tls() {
	local out
	out=$(BENCH_READS_HASH=0 "$BR" seq "$1/$repo:$tag" \
		"ca=$AUTH_CA,username=$AUTH_USER,password=$AUTH_PASS" 1048576) || return 1
	[[ $out == *" errors=0"* ]]
}

# A registry that redirects every blob GET (to a CDN, to object storage)
# to a host as far away: rig/faultproxy.py's redirect rule, with a second
# WAN model in front of its cdn listener
rd_why=
if bash "$HERE/../rig/faultproxy.sh" start "$WORK" >"$tmp/fp.log" 2>&1; then
	fp_proxy=$(sed -n 's/^PROXY=//p' "$WORK/faultproxy.env")
	fp_cdn=$(sed -n 's/^CDN=//p' "$WORK/faultproxy.env")
else
	rd_why="rig/faultproxy.sh did not start: $(tail -n1 "$tmp/fp.log")"
fi
rd_rules() { curl -sf -X "$1" ${2:+-d "$2"} "http://$fp_proxy/__proxy/rules" >/dev/null; }

echo "9. sequential read of the $(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB blob per network profile (c-tests/rig/wanproxy.py; best of $ROUNDS)"
for prof in "${profiles[@]}"; do
	read -r _ rtt conn total < <(python3 "$PROXY" --list | awk -v p="$prof" '$1 == p')
	if [[ -z ${rtt:-} ]]; then
		echo "  $prof: no such profile"
		continue
	fi
	host=$REGISTRY
	if [[ $prof != lan ]]; then
		wan_proxy "$tmp/port" --profile "$prof"
		proxy_pid=$PROXY_PID
		host=$(cat "$tmp/port" 2>/dev/null)
		if [[ -z $host ]]; then
			echo "  $prof: NOT MEASURED: wanproxy.py did not start: $(tail -n1 "$tmp/port.err")"
			continue
		fi
		limit=$(awk -v s="$size" -v t="$total" 'BEGIN { printf "%.3f", s / (t * 1e6) }')
		echo "  $prof: ${rtt} ms round trip, $conn MB/s per connection, $total MB/s in total: the link alone needs ${limit} s"
	else
		limit=
		echo "  $prof: bare loopback"
	fi
	t_curl=$(best curl1 curl_one "$host")
	t_curl8=$(best curl8 curl_ranges "$host" 8)
	t_ssl=$(best curlssl curl_verified "$host")
	t_sk=
	command -v skopeo >/dev/null && t_sk=$(best skopeo skopeo_copy "$host")
	t_ref=
	[[ -x $REFD ]] && t_ref=$(best refd refd_seq "$host")
	t_ctd=
	[[ -z $ctd_why ]] && t_ctd=$(ctd_best "$host")
	printf '    %-44s %8s s  %s\n' "curl, one stream" "${t_curl:-FAILED}" "$(mbs "${t_curl:-0}")"
	printf '    %-44s %8s s  %s\n' "8 ranged curls at once" "${t_curl8:-FAILED}" "$(mbs "${t_curl8:-0}")"
	printf '    %-44s %8s s  %s\n' "curl | openssl dgst -sha256" "${t_ssl:-FAILED}" "$(mbs "${t_ssl:-0}")"
	if command -v skopeo >/dev/null; then
		printf '    %-44s %8s s  %s\n' "skopeo copy (image to dir:)" "${t_sk:-FAILED}" "$(mbs "${t_sk:-0}")"
	else
		echo "    skopeo copy: NOT MEASURED (no skopeo)"
	fi
	if [[ -z $ctd_why ]]; then
		printf '    %-44s %8s s  %s\n' "containerd $(containerd --version | awk '{ print $3 }') ctr content fetch" \
			"${t_ctd:-FAILED}" "$(mbs "${t_ctd:-0}")"
		[[ -n $t_ctd ]] || echo "      $(tail -n1 "$tmp/ctd.err")"
	else
		echo "    containerd ctr content fetch: NOT MEASURED ($ctd_why)"
	fi
	if [[ -x $REFD ]]; then
		printf '    %-44s %8s s  %s\n' "erofs-utils 1.9 ocierofs_io_open, 1M reads" "${t_ref:-FAILED}" "$(mbs "${t_ref:-0}")"
	else
		echo "    erofs-utils 1.9 ocierofs_io_open: NOT MEASURED (reference not built: see erofs-ref.sh)"
	fi
	if [[ -n $limit && -n $t_curl8 ]]; then
		r=$(div "$limit" "$t_curl8")
		if [[ $prof == wan ]]; then
			judge "$r" ge 0.8
			echo "    the proxy's ceiling: 8 ranged curls at $r of the total cap (goal >= 0.8) $V"
		else
			echo "    the proxy's ceiling: 8 ranged curls at $r of the total cap"
		fi
	fi
	peers=("$t_curl" "$t_ssl" "$t_sk" "$t_ctd" "$t_ref")
	for chunk in "${CHUNKS[@]}"; do
		t=$(best "ours_$chunk" ours "$host" "$chunk")
		label="ours, verified, $((chunk / 1024))K reads"
		if [[ -z $t ]]; then
			echo "    $label: FAILED: $(grep -v '^$' "$tmp/ours_$chunk.err" | tail -n1)"
			[[ $prof == wan ]] && judge "" ge 0.8
			continue
		fi
		ahead=yes
		for p in "${peers[@]}"; do
			[[ -n $p ]] && awk -v a="$t" -v b="$p" 'BEGIN { exit !(a > b) }' && ahead=no
		done
		lr=$(div "$limit" "$t")
		cr=$(div "$t_curl" "$t")
		printf '    %-44s %8s s  %s; %sx curl%s; ahead of every peer: %s\n' "$label" "$t" "$(mbs "$t")" \
			"${cr:-n/a}" "${lr:+; ${lr} of the link}" "$ahead"
		if [[ $prof == wan ]]; then
			judge "$lr" ge 0.8
			echo "      of the link's limit: ${lr:-n/a} (goal >= 0.8) $V"
			judge "$cr" ge 5
			echo "      against curl's one stream: ${cr:-n/a}x (goal >= 5) $V"
			judge "$([[ $ahead == yes ]] && echo 1 || echo 0)" ge 1
			echo "      ahead of every peer measured: $ahead $V"
		fi
	done
	# Random reads: 300 preads of 4 KiB, cold (a fresh process each), ours
	# with the default options and the reference; then 4 threads against
	# 1 with fill=none (every miss fetched when a read needs it).
	t_rand=$(best rand ours_random "$host" -)
	t_rref=
	[[ -x $REFD ]] && t_rref=$(best rref refd_random "$host")
	# The ratio of two runs whose times swing with the machine's load (and
	# the registry's, on the same cores): they alternate, so that a slow
	# spell reaches both alike, and each keeps its best.
	t_thr1=- t_thr4=- thr_rounds=
	for ((i = 0; i < THREAD_ROUNDS; i++)); do
		one=$(ROUNDS=1 best thr1 ours_threads "$host" 1)
		four=$(ROUNDS=1 best thr4 ours_threads "$host" 4)
		t_thr1=$(lower "$one" "$t_thr1")
		t_thr4=$(lower "$four" "$t_thr4")
		thr_rounds+="${thr_rounds:+, }${one:-FAILED}/${four:-FAILED} s $(div "$one" "$four")x"
	done
	printf '    %-44s %8s s\n' "ours, $RN random ${RLEN}-byte preads, cold" "${t_rand:-FAILED}"
	if [[ -x $REFD ]]; then
		printf '    %-44s %8s s\n' "erofs-utils 1.9 ocierofs_io_open, the same" "${t_rref:-FAILED}"
	fi
	r=$(div "$t_rref" "$t_rand")
	s1=$(sed -nE 's/.* sha256=([0-9a-f]+).*/\1/p' "$tmp/rand.out")
	s2=$(sed -nE 's/.* sha256=([0-9a-f]+).*/\1/p' "$tmp/rref.out")
	same=$([[ -n $s1 && $s1 == "$s2" ]] && echo "same bytes" || echo "bytes differ or missing: ${s1:-none} / ${s2:-none}")
	if [[ $prof == wan ]]; then
		[[ $same == "same bytes" ]] || r=
		judge "$r" ge 10
		echo "      against the reference: ${r:-n/a}x (goal >= 10; $same) $V"
	else
		echo "      against the reference: ${r:-n/a}x ($same)"
	fi
	r=$(div "$t_thr1" "$t_thr4")
	printf '    %-44s %8s s / %s s: %sx (best of %s, alternating)\n' "fill=none, 1 thread / 4 threads" "${t_thr1:-FAILED}" "${t_thr4:-FAILED}" "${r:-n/a}" "$THREAD_ROUNDS"
	echo "      each round, 1 thread / 4 threads: $thr_rounds"
	if [[ $prof == wan ]]; then
		judge "$r" ge 3
		echo "      4 threads against 1: ${r:-n/a}x (goal >= 3) $V"
	fi
	# the same single thread from a registry that redirects its blob GETs:
	# after the first, the location is asked directly (information)
	if [[ $prof != lan && -z $rd_why ]]; then
		rd_pids=()
		t_rd=
		if wan_proxy "$tmp/rda" --upstream "$fp_proxy" --profile "$prof" && rd_pids+=("$PROXY_PID") &&
			wan_proxy "$tmp/rdb" --upstream "$fp_cdn" --profile "$prof" && rd_pids+=("$PROXY_PID") &&
			rd_rules PUT "[{\"match\": \"/blobs/\", \"method\": \"GET\", \"action\": \"redirect\", \"times\": -1, \"target\": \"http://$(cat "$tmp/rdb")\"}]"; then
			t_rd=$(best rd ours_threads "$(cat "$tmp/rda")" 1)
		fi
		rd_rules DELETE || true
		kill "${rd_pids[@]}" 2>/dev/null
		wait "${rd_pids[@]}" 2>/dev/null
		printf '    %-44s %8s s: %sx the time straight from the registry\n' \
			"the same, blob GETs redirected as far again" "${t_rd:-FAILED}" "$(div "$t_rd" "$t_thr1")"
		s1=$(sed -nE 's/.* sha256=([0-9a-f]+).*/\1/p' "$tmp/thr1.out")
		s2=$(sed -nE 's/.* sha256=([0-9a-f]+).*/\1/p' "$tmp/rd.out")
		[[ -n $s2 && $s1 == "$s2" ]] || echo "      bytes differ or missing: ${s1:-none} / ${s2:-none}"
		echo "      (each Range GET pays the redirect's round trip too, unless its location is kept)"
	elif [[ $prof != lan ]]; then
		echo "    the same, blob GETs redirected as far again: NOT MEASURED: $rd_why"
	fi
	if [[ -n $proxy_pid ]]; then
		kill "$proxy_pid" 2>/dev/null
		wait "$proxy_pid" 2>/dev/null
		proxy_pid=
	fi
	# HTTPS, where the registry offers HTTP/2
	if [[ -z $tls ]]; then
		echo "    https (HTTP/2 offered): NOT MEASURED: the TLS registry did not start or take the image: $(tail -n1 "$tmp/tls.log")"
		[[ $prof == wan ]] && judge "" ge 5
		continue
	fi
	thost=$tls
	if [[ $prof != lan ]]; then
		wan_proxy "$tmp/tport" --upstream "$tls" --profile "$prof"
		proxy_pid=$PROXY_PID
		thost=$(cat "$tmp/tport" 2>/dev/null)
	fi
	t_h1=$(best h2one h2_one "$thost")
	t_h8=$(best h2streams h2_streams "$thost" 8)
	t_ht=$(best ourstls ours_tls "$thost")
	echo "    https from the TLS registry, which offers HTTP/2:"
	printf '    %-44s %8s s  %s\n' "curl --http2, one stream" "${t_h1:-FAILED}" "$(mbs "${t_h1:-0}")"
	printf '    %-44s %8s s  %s\n' "8 ranges as streams of one connection" "${t_h8:-FAILED}" "$(mbs "${t_h8:-0}")"
	printf '    %-44s %8s s  %s\n' "ours, verified, 1M reads" "${t_ht:-FAILED}" "$(mbs "${t_ht:-0}")"
	r=$(div "$t_h1" "$t_ht")
	r8=$(div "$t_h8" "$t_ht")
	lr=$(div "$limit" "$t_ht")
	if [[ $prof == wan ]]; then
		judge "$r" ge 5
		echo "      against curl's one HTTP/2 stream: ${r:-n/a}x, against 8 multiplexed streams: ${r8:-n/a}x${lr:+; ${lr} of the link} (goal >= 5x the one stream) $V"
	else
		echo "      against curl's one HTTP/2 stream: ${r:-n/a}x, against 8 multiplexed streams: ${r8:-n/a}x${lr:+; ${lr} of the link}"
	fi
	if [[ -n $proxy_pid ]]; then
		kill "$proxy_pid" 2>/dev/null
		wait "$proxy_pid" 2>/dev/null
		proxy_pid=
	fi
done
[[ -z $rd_why ]] && bash "$HERE/../rig/faultproxy.sh" stop "$WORK" >/dev/null 2>&1
if [[ $unmeasured -gt 0 ]]; then
	echo "profiles: $met goals met, $missed missed ($unmeasured not measured)"
else
	echo "profiles: $met goals met, $missed missed"
fi
