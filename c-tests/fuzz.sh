#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# `make fuzz`: builds the cargo-fuzz targets of fuzz/ and runs each one
# for a fixed time, then prints executions and crashes per target and
# "N passed, N failed" (a target passes when it ran without a crash,
# timeout or out-of-memory).
#
# Usage: c-tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60
#   TARGET...           default: every fuzz/fuzz_targets/*.rs
# Environment:
#   FUZZ_SANITIZER  none (default: the targets are safe Rust) or address
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a
#                   hang (default 10)
#   FUZZ_ARGS       more libFuzzer flags for every target
#   FUZZ_RUNS       a number: run each target for that many executions
#                   instead of a time, from the committed seeds only (a
#                   fresh corpus each time), as `make test` does: a
#                   regression seed that fails fails the run
#
# The corpus libFuzzer grows is kept in fuzz/corpus/<target> (ignored by
# git) and starts from the committed seeds in fuzz/seeds/<target>. Crash
# inputs and each run's log go to fuzz/artifacts/<target>/. Builds go to
# fuzz/target, never to the library's target/.
#
# cargo-fuzz passes nightly-only flags to rustc; RUSTC_BOOTSTRAP=1 lets
# the stable toolchain accept them.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
FUZZ=$ROOT/fuzz
SECS=${1:-60}
[ $# -gt 0 ] && shift
SANITIZER=${FUZZ_SANITIZER:-none}
TIMEOUT=${FUZZ_TIMEOUT:-10}
RSS_MB=2048
export RUSTC_BOOTSTRAP=1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

case $SECS in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
	exit 2
	;;
esac

if [ $# -gt 0 ]; then
	targets=("$@")
else
	targets=()
	for f in "$FUZZ"/fuzz_targets/*.rs; do
		targets+=("$(basename "$f" .rs)")
	done
fi
for t in "${targets[@]}"; do
	if [ ! -f "$FUZZ/fuzz_targets/$t.rs" ]; then
		echo "fuzz: no target '$t' in $FUZZ/fuzz_targets" >&2
		exit 2
	fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "fuzz: installing cargo-fuzz"
	cargo install --locked cargo-fuzz || cargo install cargo-fuzz
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
echo "fuzz: building the fuzz targets (sanitizer: $SANITIZER, $triple)"
(
	cd "$ROOT"
	cargo fuzz build --fuzz-dir "$FUZZ" --target "$triple" \
		--sanitizer "$SANITIZER" --debug-assertions
)
bin_dir=$FUZZ/target/$triple/release

# Per-target libFuzzer flags: the string parsers reject input over 4096
# bytes, so let inputs cross that limit; real WWW-Authenticate values
# are far below 2K, and shorter inputs run faster.
target_flags() {
	case $1 in
	reference | legacy_url | options) echo "-max_len=4200" ;;
	www_authenticate | http_headers) echo "-max_len=2048" ;;
	manifest | token | config) echo "-max_len=16384" ;;
	flatten) echo "-max_len=65536" ;;
	decompress) echo "-max_len=131072" ;;
	*) echo "" ;;
	esac
}

names=()
execs_col=()
rate_col=()
crash_col=()
passed=0
failed=0
for t in "${targets[@]}"; do
	corpus=$FUZZ/corpus/$t
	seeds=$FUZZ/seeds/$t
	art=$FUZZ/artifacts/$t
	log=$art/last-run.log
	if [ -n "${FUZZ_RUNS:-}" ]; then
		corpus=$(mktemp -d)
		limit=(-runs="$FUZZ_RUNS")
		what="$FUZZ_RUNS executions"
	else
		limit=(-max_total_time="$SECS")
		what="${SECS}s"
	fi
	mkdir -p "$corpus" "$art"
	dirs=("$corpus")
	[ -d "$seeds" ] && dirs+=("$seeds")
	flags=("${limit[@]}" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT"
		-print_final_stats=1 -artifact_prefix="$art/")
	[ -f "$FUZZ/dicts/$t.dict" ] && flags+=(-dict="$FUZZ/dicts/$t.dict")
	# shellcheck disable=SC2206,SC2207
	flags+=($(target_flags "$t") ${FUZZ_ARGS:-})

	echo "--- $t: $what"
	rc=0
	"$bin_dir/$t" "${flags[@]}" "${dirs[@]}" >"$log" 2>&1 || rc=$?
	[ -n "${FUZZ_RUNS:-}" ] && rm -rf "$corpus"

	# libFuzzer's final stats; older ones say _runs, newer _units.
	execs=$(sed -nE 's/^stat::number_of_executed_(runs|units): *([0-9]+).*/\2/p' "$log" | tail -n 1)
	if [ -z "$execs" ]; then
		# No final stats: the last status line's "#N".
		execs=$(sed -nE 's/^#([0-9]+)[[:space:]].*/\1/p' "$log" | tail -n 1)
	fi
	execs=${execs:-0}
	rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1)
	rate=${rate:-?}
	crashes=$(grep -cE 'Test unit written to .*/(crash|timeout|oom|leak)-' "$log" || true)
	if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
		echo "$t: libFuzzer exited with status $rc and no crash input; see $log" >&2
		crashes=1
	fi

	if [ "$crashes" -eq 0 ]; then
		passed=$((passed + 1))
		echo "$t: $execs executions, no crash"
	else
		failed=$((failed + 1))
		echo "$t: FAILED after $execs executions; log: $log"
		grep -E -A3 "panicked at|^==[0-9]+== ?ERROR|ERROR: libFuzzer" "$log" | head -n 20 || true
		sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | while read -r input; do
			echo "  input: $input"
			echo "  replay: $bin_dir/$t $input"
		done
	fi
	names+=("$t")
	execs_col+=("$execs")
	rate_col+=("$rate")
	crash_col+=("$crashes")
done

echo
printf '%-20s %14s %10s %8s\n' target executions exec/s crashes
for i in "${!names[@]}"; do
	printf '%-20s %14s %10s %8s\n' "${names[$i]}" "${execs_col[$i]}" "${rate_col[$i]}" "${crash_col[$i]}"
done
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
