#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# The integration half of `make test`: a real registry on loopback, the
# fixture images, the ABI check against erofs-utils' own headers, and the
# C harness (under valgrind) for both vfops layouts.
# Usage: run-tests.sh WORKDIR BUILDDIR
set -euo pipefail
WORK=$1
BUILD=$2
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CC=${CC:-cc}
CFLAGS="-std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -g"
VALGRIND=(valgrind -q --error-exitcode=99 --leak-check=full
	--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect)

passed=0
failed=0
# run NAME CMD...: run a test program, add up its "N passed, N failed"
run() {
	local name=$1 log p f rc=0
	shift
	log="$BUILD/$name.log"
	echo "--- $name"
	"$@" >"$log" 2>&1 || rc=$?
	grep -E 'FAIL|ERROR SUMMARY|==[0-9]+==' "$log" | head -40 || true
	tail -n 3 "$log"
	read -r p f < <(sed -nE 's/^([A-Za-z_ -]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2 \3/p' "$log" | tail -n 1) || true
	p=${p:-0}
	f=${f:-0}
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "$name: exit status $rc" >&2
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
}

stop_all() {
	bash "$HERE/rig/faultproxy.sh" stop "$WORK" >/dev/null 2>&1 || true
	bash "$HERE/rig/auth-registry.sh" stop "$WORK" basic-tls >/dev/null 2>&1 || true
	bash "$HERE/rig/auth-registry.sh" stop "$WORK" mtls >/dev/null 2>&1 || true
	bash "$HERE/rig/auth-registry.sh" stop "$WORK" token >/dev/null 2>&1 || true
	bash "$HERE/rig/registry.sh" stop "$WORK" >/dev/null
}
bash "$HERE/rig/registry.sh" start "$WORK" >/dev/null
trap stop_all EXIT
# shellcheck disable=SC1091
. "$WORK/registry.env"
python3 "$HERE/rig/push_fixtures.py" --registry "$REGISTRY" --work "$WORK"
bash "$HERE/erofs-utils/erofs-src.sh" "$WORK"
# Debian's erofs-utils with our patches (mkfs.erofs and erofsfuse taking
# oci:// sources), linked with the library: used by the flatten tests too.
bash "$HERE/erofs-utils/erofs-utils.sh" "$WORK"
# erofs-utils 1.9's own OCI commands on the library (make install into
# WORK/prefix, pkg-config, --enable-oci --with-liboci-registry).
bash "$HERE/erofs-utils/dropin.sh" "$WORK"

# The layout of our structs against erofs-utils' own <erofs/io.h>, and a
# vfile of ours read through erofs-utils' struct.
for abi in 1.9 1.8; do
	inc="$ROOT/include"
	lib="$ROOT/target/release"
	if [ "$abi" = 1.8 ]; then
		inc="$ROOT/include/erofs-1.8"
		lib="$ROOT/target/erofs-1.8/release"
	fi
	# shellcheck disable=SC2086
	$CC $CFLAGS -I "$inc" "$HERE/harness/abi_ours.c" "$HERE/harness/abi_check.c" \
		-I "$WORK/erofs-$abi/include" "$HERE/harness/abi_erofs.c" \
		-o "$BUILD/abi-$abi" -L "$lib" -loci_registry -lcrypto -lpthread \
		-Wl,-rpath,"$lib"
	run "abi-$abi" "$BUILD/abi-$abi" "$WORK/fixtures.txt"
done

run harness-1.9 "${VALGRIND[@]}" "$BUILD/harness-1.9" "$WORK/fixtures.txt" "$WORK"
run harness-1.8 "${VALGRIND[@]}" "$BUILD/harness-1.8" "$WORK/fixtures.txt" "$WORK"

read -r _ big_ref big_digest big_size < <(awk '$1 == "big"' "$WORK/fixtures.txt")
big_url=$(awk '$1 == "url" && $2 ~ /library\/big\/digest-1$/ { print $2; exit }' "$WORK/fixtures.txt")
run stream_big "$BUILD/stream_big-1.9" "$big_ref" "$big_url" "$big_digest" "$big_size"
grep -E 'entry=|peak_rss' "$BUILD/stream_big.log" || true
# Again with SHA-256 by libcrypto, as on a CPU without SHA extensions:
# OPENSSL_ia32cap (SHA-NI masked) hands the library's hashing to it.
run stream_big-libcrypto env OPENSSL_ia32cap=":~0x20000000" \
	"$BUILD/stream_big-1.9" "$big_ref" "$big_url" "$big_digest" "$big_size"

# make install into a temporary prefix: SONAME, exports, pkg-config, and a
# program built outside the tree with pkg-config alone.
run install bash "$HERE/harness/install_tests.sh" "$WORK"

# Images with whiteouts, opaque directories, hard links across layers and
# mixed compressions: flatten and decompress=auto against an independent
# model of how layers apply.
python3 "$HERE/rig/push_layered_fixtures.py" --registry "$REGISTRY" --work "$WORK" >/dev/null
run flatten python3 "$HERE/harness/flatten_tests.py" "$WORK" "$BUILD/fetch-1.9"

# fork() with an open vfile: the child reads on (erofsfuse daemonizes).
forks() {
	local f=0 ok=0 out
	for opts in "platform=linux/amd64,layer=1" \
		"platform=linux/amd64,layer=1,decompress=auto"; do
		out=$("$BUILD/fetch-1.9" "$REGISTRY/plain/nomt:v1" "$opts" fork) || true
		if [[ "$out" == "ok sha256:"* ]]; then
			ok=$((ok + 1)); echo "ok   fork with $opts: $out"
		else
			f=$((f + 1)); echo "FAIL fork with $opts: $out"
		fi
	done
	echo "fork: $ok passed, $f failed"
	[ "$f" -eq 0 ]
}
run fork forks

# The on-disk cache: one process that reads a blob leaves it promoted;
# two processes fill it at once, a third fetches nothing.
disk_cache() {
	local dir="$WORK/cache-dir" big hex out1 out2 out3 f=0 ok=0
	big=$(awk '$1 == "big" { print $2; exit }' "$WORK/fixtures.txt")
	hex=$(awk '$1 == "big" { print $3 }' "$WORK/fixtures.txt" | cut -d: -f2)
	rm -rf "$dir"
	"$BUILD/fetch-1.9" "$big" "cache_dir=$dir" seq >/dev/null
	if [ -s "$dir/blobs/sha256/$hex" ]; then
		ok=$((ok + 1)); echo "ok   one process that read the blob left it promoted"
	else
		f=$((f + 1)); echo "FAIL one process read the blob, not promoted: $(ls -R "$dir" | tr '\n' ' ')"
	fi
	rm -rf "$dir"
	"$BUILD/fetch-1.9" "$big" "cache_dir=$dir" seq > "$WORK/disk1.out" &
	"$BUILD/fetch-1.9" "$big" "cache_dir=$dir" seq > "$WORK/disk2.out" &
	wait
	out1=$(cat "$WORK/disk1.out")
	out2=$(cat "$WORK/disk2.out")
	out3=$("$BUILD/fetch-1.9" "$big" "cache_dir=$dir" seq)
	for o in "$out1" "$out2" "$out3"; do
		if [[ "$o" == "ok sha256:$hex "* ]]; then
			ok=$((ok + 1)); echo "ok   cache_dir read: $o"
		else
			f=$((f + 1)); echo "FAIL cache_dir read: $o"
		fi
	done
	if [[ "$out3" == *" fetched=0 "* ]]; then
		ok=$((ok + 1)); echo "ok   a warm cache_dir fetches nothing"
	else
		f=$((f + 1)); echo "FAIL a warm cache_dir fetched bytes: $out3"
	fi
	if [ -s "$dir/blobs/sha256/$hex" ]; then
		ok=$((ok + 1)); echo "ok   the verified blob was promoted"
	else
		f=$((f + 1)); echo "FAIL the blob was not promoted"
	fi
	rm -rf "$dir"
	echo "cache_dir: $ok passed, $f failed"
	[ "$f" -eq 0 ]
}
run disk_cache disk_cache

# Open/close cycles: no growth in memory or file descriptors.
run cycles "$BUILD/cycles-1.9" "$REGISTRY/library/hello" "platform=linux/amd64" 10000

# Faults a real registry will not produce on demand, from a proxy in front.
bash "$HERE/rig/faultproxy.sh" start "$WORK" >/dev/null
# Every case under valgrind: no memory errors or leaks on any fault path.
printf '#!/bin/bash\nexec %s "%s" "$@"\n' "${VALGRIND[*]}" "$BUILD/fetch-1.9" > "$BUILD/vg-fetch"
chmod +x "$BUILD/vg-fetch"
run faults python3 "$HERE/harness/fault_tests.py" "$WORK" "$BUILD/vg-fetch"

# The real erofs-utils (Debian's 1.8.6 and 1.9.x sources with our small
# patches, built above): mkfs.erofs from oci:// sources, erofsfuse
# mounting an EROFS image lazily from the registry.
run mkfs-erofs bash "$HERE/erofs-utils/mkfs_tests.sh" "$WORK"
run mount-erofs bash "$HERE/erofs-utils/mount_tests.sh" "$WORK"

# Random access into gzip layers: checkpoints made by the library and by
# erofs-utils (zinfo both ways), damaged zinfos, the tar-index device
# (after the tests above pushed the tree's gzip layers).
run gzran python3 "$HERE/harness/gzran_tests.py" "$WORK" "$BUILD/fetch-1.9" "$BUILD/vg-fetch"

# The same registry with htpasswd + TLS (private CA), and with token auth
# (short-lived tokens, to see them renewed).
bash "$HERE/rig/auth-registry.sh" start "$WORK" basic-tls >/dev/null
bash "$HERE/rig/auth-registry.sh" start "$WORK" mtls >/dev/null
TOKEN_EXPIRES_IN=4 bash "$HERE/rig/auth-registry.sh" start "$WORK" token >/dev/null
python3 "$HERE/rig/push_auth_fixtures.py" --work "$WORK" --mode basic-tls >/dev/null
python3 "$HERE/rig/push_auth_fixtures.py" --work "$WORK" --mode token >/dev/null
run auth python3 "$HERE/harness/auth_tests.py" "$WORK" "$BUILD/fetch-1.9"
# erofs-utils 1.9's own commands on the library, native syntax (after the
# auth registries: credentials in erofs-utils' options, config and helpers)
run dropin bash "$HERE/erofs-utils/dropin_tests.sh" "$WORK"

echo "integration: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
