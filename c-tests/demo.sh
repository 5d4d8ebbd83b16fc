#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# make demo: start a local registry, push the sample images, and show the
# library streaming layers from it. Usage: demo.sh WORKDIR BUILDDIR
set -euo pipefail
WORK=$1
BUILD=$2
HERE=$(cd "$(dirname "$0")" && pwd)

bash "$HERE/registry.sh" start "$WORK" >/dev/null
trap 'bash "$HERE/registry.sh" stop "$WORK" >/dev/null' EXIT
# shellcheck disable=SC1091
. "$WORK/registry.env"
python3 "$HERE/push_fixtures.py" --registry "$REGISTRY" --work "$WORK" >/dev/null
python3 "$HERE/push_layered_fixtures.py" --registry "$REGISTRY" --work "$WORK" >/dev/null

big=$(awk '$1 == "big" { print $2; exit }' "$WORK/fixtures.txt")
big_url=$(awk '$1 == "url" && $2 ~ /library\/big\/digest-1$/ { print $2; exit }' "$WORK/fixtures.txt")

echo "== registry: docker-registry (CNCF distribution) on $REGISTRY"
echo
echo "== 1. an uncompressed tar layer, listed through the vfile (read + lseek)"
echo "   $REGISTRY/plain/nomt:v1  layer=0  (its manifest has no mediaType)"
"$BUILD/demo" tar "$REGISTRY/plain/nomt:v1" "layer=0,platform=linux/amd64"
echo
echo "== 2. the arm64/v8 entry of a multi-platform index"
"$BUILD/demo" stream "$REGISTRY/multi/index:v1" "platform=linux/arm64"
echo
echo "== 3. a $(( $(awk '$1 == "big" { print $4 }' "$WORK/fixtures.txt") / 1048576 )) MiB gzip layer, streamed with bounded memory"
"$BUILD/demo" stream "$big" "platform=linux/amd64"
echo
echo "== 4. the original entry point and URL grammar"
echo "   $big_url"
"$BUILD/demo" url "$big_url"
echo
echo "== 5. errors name their cause"
"$BUILD/demo" stream "$REGISTRY/plain/nomt:v2" "" || true
"$BUILD/demo" stream "$REGISTRY/multi/index:v1" "platform=linux/riscv64" || true
echo
echo "== 6. the main job: an EROFS image of a whole image, straight from the registry"
image="$REGISTRY/layered/whiteouts:v1"
echo "   $image: its layers (gzip, zstd and plain tar; whiteouts, an opaque"
echo "   directory, hard links across layers, a 50 MiB file):"
"$BUILD/demo" layers "$image" "platform=linux/amd64"
echo "   mkfs.erofs (Debian's erofs-utils 1.9 + our small patch) --tar=f from"
echo "   oci://$image?flatten  (layers decompressed and merged by the library)"
if bash "$HERE/erofs-utils.sh" "$WORK" > "$WORK/demo-erofs-utils.log" 2>&1; then
	img="$WORK/demo-image.erofs"
	rm -f "$img"
	start=$(date +%s.%N)
	if "$WORK/bin/mkfs.erofs-1.9" --tar=f "$img" \
		"oci://$image?flatten,platform=linux/amd64" > "$WORK/demo-mkfs.log" 2>&1; then
		end=$(date +%s.%N)
		printf '   built %s: %s bytes in %.2f s (every layer digest-verified as it streamed)\n' \
			"$img" "$(stat -c %s "$img")" "$(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')"
		rm -rf "$WORK/demo-extract"
		if "$WORK/bin/fsck.erofs-1.9" --extract="$WORK/demo-extract" "$img" > "$WORK/demo-fsck.log" 2>&1; then
			echo "   fsck.erofs --extract: ok; the image's tree (no .wh. entries left):"
			(cd "$WORK/demo-extract" && find . -mindepth 1 -maxdepth 2 | sort | head -n 14 | sed 's/^/     /')
			echo "     ... $(cd "$WORK/demo-extract" && find . -mindepth 1 | wc -l) entries in all"
		else
			echo "   fsck.erofs failed: see $WORK/demo-fsck.log"
		fi
	else
		echo "   mkfs.erofs failed: see $WORK/demo-mkfs.log"
	fi
else
	echo "   erofs-utils could not be built here: see $WORK/demo-erofs-utils.log"
fi
echo
echo "demo: done"
