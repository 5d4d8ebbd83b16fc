# SPDX-License-Identifier: MIT OR Apache-2.0
# Sourced by bench.sh and profiles.sh: how a figure becomes a verdict, and
# the WAN model in front of the registry.

met=0
missed=0
unmeasured=0
# judge VALUE ge|le GOAL: sets V to the verdict and counts it
judge() {
	if [[ -z ${1:-} ]]; then
		V="NOT MEASURED"
		unmeasured=$((unmeasured + 1))
	elif awk -v v="$1" -v g="$3" -v op="$2" \
		'BEGIN { exit !(op == "ge" ? v + 0 >= g + 0 : v + 0 <= g + 0) }'; then
		V=met
		met=$((met + 1))
	else
		V=MISSED
		missed=$((missed + 1))
	fi
}

# div A B [DECIMALS]: A / B, or empty when either is missing or B is 0
div() {
	[[ -n ${1:-} && -n ${2:-} ]] || return 0
	awk -v a="$1" -v b="$2" -v d="${3:-2}" \
		'BEGIN { if (b + 0 > 0) printf "%.*f", d, a / b }'
}

# best_of NAME CMD...: best wall time (seconds, to the millisecond: the
# small images of 7b take about 10 ms, /usr/bin/time's %e resolution; it
# includes /usr/bin/time's own start, about 1 ms, on both sides of a
# ratio) and its peak RSS over ROUNDS runs of CMD (each a fresh process,
# output in $tmp); sets BEST_S and BEST_KIB, empty on failure.
best_of() {
	local name=$1 i s kib t0 t1
	shift
	BEST_S=
	BEST_KIB=
	for ((i = 1; i <= ROUNDS; i++)); do
		t0=$EPOCHREALTIME
		/usr/bin/time -o "$tmp/$name.time" -f "%M" "$@" >/dev/null 2>"$tmp/$name.err" || return 1
		t1=$EPOCHREALTIME
		read -r kib <"$tmp/$name.time"
		s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
		if [[ -z $BEST_S ]] || awk -v a="$s" -v b="$BEST_S" 'BEGIN { exit !(a < b) }'; then
			BEST_S=$s
			BEST_KIB=$kib
		fi
	done
}

# wan_proxy FILE ARGS...: c-tests/rig/wanproxy.py in front of $REGISTRY
# (ARGS: --profile NAME, or --rtt-ms ...; --upstream HOST:PORT puts it in
# front of another registry), in the background; its address
# goes to FILE once it listens, its stderr to FILE.err. Sets PROXY_PID;
# fails when it is not listening within 5 s.
wan_proxy() {
	local file=$1 i
	shift
	rm -f "$file"
	python3 "$HERE/../rig/wanproxy.py" --upstream "$REGISTRY" "$@" --port-file "$file" \
		2>"$file.err" &
	PROXY_PID=$!
	for ((i = 0; i < 100; i++)); do
		[[ -s $file ]] && return 0
		kill -0 "$PROXY_PID" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}
