#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# The installed library as a C project outside the tree sees it: `make
# install` of both layouts into a temporary prefix (side by side), the
# SONAME and its links, only the documented C API exported, the .pc files,
# and a program built with pkg-config alone (shared and static) reading a
# blob of the test registry, its bytes hashed against the digest. `make
# uninstall` then leaves the prefix empty.
# usage: install_tests.sh WORKDIR   (after registry.sh start and the fixtures)
set -uo pipefail
WORK=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CC=${CC:-cc}
prefix="$WORK/install-prefix"
dest="$WORK/install-destdir"
out="$WORK/install-probe"
ok=0
bad=0

check() {
	local what=$1
	shift
	if "$@"; then
		ok=$((ok + 1)); echo "ok   $what"
	else
		bad=$((bad + 1)); echo "FAIL $what"
	fi
}

# the function names a header declares (kernel-doc "name() - ..." lines)
declared() {
	sed -nE 's/^ \* ([a-z_]+)\(\) - .*/\1/p' "$1" | sort -u
}

# the dynamic symbols a library defines
exported() {
	nm -D --defined-only "$1" | awk '{ print $3 }' | sort -u
}

# shellcheck disable=SC1091
. "$WORK/registry.env"
ref=$(awk '$1 == "layer" && $2 ~ /library\/hello/ && $4 == 0 { print $2; exit }' "$WORK/fixtures.txt")
plat=$(awk '$1 == "layer" && $2 ~ /library\/hello/ && $4 == 0 { print $3; exit }' "$WORK/fixtures.txt")
digest=$(awk '$1 == "layer" && $2 ~ /library\/hello/ && $4 == 0 { print $5; exit }' "$WORK/fixtures.txt")
size=$(awk '$1 == "layer" && $2 ~ /library\/hello/ && $4 == 0 { print $6; exit }' "$WORK/fixtures.txt")
[ -n "$ref" ] || { echo "no library/hello layer in fixtures.txt"; echo "install: 0 passed, 1 failed"; exit 1; }

rm -rf "$prefix" "$dest" "$out"
mkdir -p "$out"
for abi in 1.9 1.8; do
	if ! make -s -C "$ROOT" install EROFS_ABI=$abi PREFIX="$prefix" >"$out/install-$abi.log" 2>&1; then
		cat "$out/install-$abi.log"
		bad=$((bad + 1)); echo "FAIL make install EROFS_ABI=$abi"
	fi
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)
major=${version%%.*}

for name in oci_registry oci_registry-erofs1.8; do
	so="$prefix/lib/lib$name.so"
	check "$name: lib$name.so.$version installed" test -f "$so.$version"
	check "$name: SONAME lib$name.so.$major" \
		bash -c "readelf -d '$so.$version' | grep -q 'Library soname: \[lib$name.so.$major\]'"
	check "$name: lib$name.so -> .so.$major -> .so.$version" \
		test "$(readlink "$so")" = "lib$name.so.$major" -a \
		"$(readlink "$so.$major")" = "lib$name.so.$version"
	check "$name: the static archive" test -s "$prefix/lib/lib$name.a"
	if [ "$name" = oci_registry ]; then
		hdr="$prefix/include/oci_registry.h"
	else
		hdr="$prefix/include/oci_registry-erofs1.8/oci_registry.h"
	fi
	check "$name: the header" test -s "$hdr"
	declared "$hdr" >"$out/$name.declared"
	exported "$so.$version" >"$out/$name.exported"
	if diff -u "$out/$name.declared" "$out/$name.exported" >"$out/$name.diff"; then
		check "$name: exports exactly the $(wc -l <"$out/$name.declared") documented functions" true
	else
		cat "$out/$name.diff"
		check "$name: exports exactly the documented functions" false
	fi

	export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
	check "$name: pkg-config knows $name $version" \
		test "$(pkg-config --modversion "$name" 2>/dev/null)" = "$version"
	# built outside the tree, from pkg-config's flags alone
	cp "$HERE/installed.c" "$out/probe.c"
	want_abi=109
	[ "$name" = oci_registry ] || want_abi=108
	for link in shared static; do
		bin="$out/probe-$name-$link"
		if [ $link = shared ]; then
			flags=$(pkg-config --cflags --libs "$name")
			flags="$flags -Wl,-rpath,$(pkg-config --variable=libdir "$name")"
		else
			# the archive, the shared libraries of Requires.private
			# (Debian ships no static libcurl dependencies) and
			# Libs.private
			priv=$(sed -n 's/^Libs.private: //p' "$PKG_CONFIG_PATH/$name.pc")
			flags="$(pkg-config --cflags "$name") $prefix/lib/lib$name.a $(pkg-config --libs $(pkg-config --print-requires-private "$name")) $priv"
		fi
		# shellcheck disable=SC2086
		if ! (cd "$out" && $CC -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror probe.c -o "$bin" $flags) >"$out/cc-$name-$link.log" 2>&1; then
			cat "$out/cc-$name-$link.log"
			check "$name ($link): builds with pkg-config's flags" false
			continue
		fi
		check "$name ($link): builds with pkg-config's flags" true
		if [ $link = shared ]; then
			check "$name ($link): loads the installed library" \
				bash -c "ldd '$bin' | grep -q '$prefix/lib/lib$name.so.$major'"
		else
			check "$name ($link): needs no liboci_registry at run time" \
				bash -c "! ldd '$bin' | grep -q liboci_registry"
		fi
		got=$("$bin" "$ref" "platform=$plat,layer=0" 2>"$out/run-$name-$link.err" | sha256sum | cut -d' ' -f1)
		check "$name ($link): the blob's bytes hash to $digest" test "sha256:$got" = "$digest"
		check "$name ($link): size $size, digest and ABI $want_abi reported" \
			grep -qx "size=$size reported=$size digest=$digest abi=$want_abi" "$out/run-$name-$link.err"
	done
done

# DESTDIR stages under another root with the prefix's paths in the .pc
make -s -C "$ROOT" install PREFIX=/usr DESTDIR="$dest" >"$out/destdir.log" 2>&1
check "DESTDIR: staged under it, prefix=/usr in the .pc" \
	grep -qx 'prefix=/usr' "$dest/usr/lib/pkgconfig/oci_registry.pc"
for abi in 1.9 1.8; do
	make -s -C "$ROOT" uninstall EROFS_ABI=$abi PREFIX="$prefix" >>"$out/uninstall.log" 2>&1
done
left=$(find "$prefix" -type f -o -type l | wc -l)
check "uninstall leaves no file behind ($left left)" test "$left" -eq 0

echo "install: $ok passed, $bad failed"
[ "$bad" -eq 0 ]
