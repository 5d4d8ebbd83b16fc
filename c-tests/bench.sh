#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# make bench: sequential-read throughput of the library against this
# machine's limit for a verified stream, measured in the same run on the
# same local registry. The limit is the slower of: the curl CLI fetching
# the blob to /dev/null, and `openssl dgst -sha256` hashing it from the
# page cache. Figures are best-of-N wall times; ratios are what count.
# Usage: bench.sh WORKDIR BUILDDIR
set -euo pipefail
WORK=$1
BUILD=$2
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-3}

bash "$HERE/registry.sh" start "$WORK" >/dev/null
trap 'bash "$HERE/registry.sh" stop "$WORK" >/dev/null' EXIT
# shellcheck disable=SC1091
. "$WORK/registry.env"
python3 "$HERE/push_fixtures.py" --registry "$REGISTRY" --work "$WORK" >/dev/null

read -r _ ref digest size < <(awk '$1 == "big"' "$WORK/fixtures.txt")
url=$(awk '$1 == "url" && $2 ~ /library\/big\/digest-1$/ { print $2; exit }' "$WORK/fixtures.txt")
file="$WORK/blobs/sha256/${digest#sha256:}"
repo=${ref#*/}
repo=${repo%:*}
blob_url="http://$REGISTRY/v2/$repo/blobs/$digest"
mib=$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')

# best NAME CMD...: best wall time in seconds over ROUNDS runs
best() {
	local b="" t s e
	shift
	for _ in $(seq "$ROUNDS"); do
		s=$(date +%s.%N)
		"$@" >/dev/null 2>&1
		e=$(date +%s.%N)
		t=$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')
		if [ -z "$b" ] || awk -v t="$t" -v b="$b" 'BEGIN { exit !(t < b) }'; then
			b=$t
		fi
	done
	echo "$b"
}

cat "$file" >/dev/null
t_curl=$(best curl curl -sf -o /dev/null "$blob_url")
t_ssl=$(best openssl openssl dgst -sha256 "$file")
t_limit=$(awk -v a="$t_curl" -v b="$t_ssl" 'BEGIN { print (a > b) ? a : b }')
thr() { awk -v s="$size" -v t="$1" 'BEGIN { printf "%.0f", s / 1048576 / t }'; }

echo "bench: sequential read of a $mib MiB blob ($digest), loopback registry $REGISTRY"
printf '  %-34s %8s MiB/s\n' "curl CLI to /dev/null" "$(thr "$t_curl")"
printf '  %-34s %8s MiB/s\n' "openssl dgst -sha256 (page cache)" "$(thr "$t_ssl")"
printf '  %-34s %8s MiB/s\n' "limit (slower of the two)" "$(thr "$t_limit")"
fail=0
for chunk in 4096 32768 1048576; do
	t=$(best lib "$BUILD/stream_big-1.9" "$ref" "$url" "$digest" "$size" "$chunk")
	# stream_big reads the blob twice (both entry points)
	t=$(awk -v t="$t" 'BEGIN { print t / 2 }')
	ratio=$(awk -v l="$t_limit" -v t="$t" 'BEGIN { printf "%.2f", l / t }')
	verdict=ok
	awk -v r="$ratio" 'BEGIN { exit !(r < 0.9) }' && { verdict="BELOW 0.9"; fail=1; }
	printf '  %-34s %8s MiB/s  ratio %s (goal >= 0.90) %s\n' \
		"liboci_registry read($chunk), verified" "$(thr "$t")" "$ratio" "$verdict"
done
"$BUILD/stream_big-1.9" "$ref" "$url" "$digest" "$size" | grep -E 'entry=|peak_rss' | sed 's/^/  /'
exit 0
