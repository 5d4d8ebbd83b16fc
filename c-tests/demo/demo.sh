#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
# make demo: start a local registry, push the sample images, and show the
# library streaming layers from it; then build an EROFS image of a layered
# image with mkfs.erofs through the library, push that image as a layer and
# mount it lazily with erofsfuse (when FUSE is there).
# Usage: demo.sh WORKDIR BUILDDIR
set -euo pipefail
mkdir -p "$1"
WORK=$(cd "$1" && pwd)	# absolute: /proc/self/mountinfo names the mount point so
BUILD=$2
HERE=$(cd "$(dirname "$0")" && pwd)

fuse_pid=
mnt="$WORK/demo-mnt"
cleanup() {
	if [[ -n $fuse_pid ]]; then
		fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
		kill -9 "$fuse_pid" 2>/dev/null || true
	fi
	bash "$HERE/../rig/registry.sh" stop "$WORK" >/dev/null
}
bash "$HERE/../rig/registry.sh" start "$WORK" >/dev/null
trap cleanup EXIT
# shellcheck disable=SC1091
. "$WORK/registry.env"
python3 "$HERE/../rig/push_fixtures.py" --registry "$REGISTRY" --work "$WORK" >/dev/null
python3 "$HERE/../rig/push_layered_fixtures.py" --registry "$REGISTRY" --work "$WORK" >/dev/null

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
fsck_ok=0
if bash "$HERE/../erofs-utils/erofs-utils.sh" "$WORK" > "$WORK/demo-erofs-utils.log" 2>&1; then
	img="$WORK/demo-image.erofs"
	rm -f "$img"
	start=$(date +%s.%N)
	# a fixed build time and UUID: the same image every run, so that
	# pushing it (7.) adds nothing to the registry the second time
	if "$WORK/bin/mkfs.erofs-1.9" -T1704067200 -U6f2b0a4e-3c1d-4e5f-9a8b-7c6d5e4f3a2c --tar=f "$img" \
		"oci://$image?flatten,platform=linux/amd64" > "$WORK/demo-mkfs.log" 2>&1; then
		end=$(date +%s.%N)
		printf '   built %s: %s bytes in %.2f s (every layer digest-verified as it streamed)\n' \
			"$img" "$(stat -c %s "$img")" "$(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')"
		rm -rf "$WORK/demo-extract"
		if "$WORK/bin/fsck.erofs-1.9" --extract="$WORK/demo-extract" "$img" > "$WORK/demo-fsck.log" 2>&1; then
			fsck_ok=1
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
echo "== 7. that EROFS image mounted lazily: pushed as the layer of an image,"
echo "   erofsfuse (erofs-utils 1.9 + our patch) reads it through the library"
fuse="$WORK/bin/erofsfuse-1.9"
mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }'; }
# listing MNT: type, size (not of directories) and path of every entry
listing() { (cd "$1" && find . -mindepth 1 \( -type d -printf 'd %p\n' \) -o -printf '%y %s %p\n' | sort); }
if [[ $fsck_ok -ne 1 ]]; then
	echo "   skipped: no EROFS image was built and checked above"
elif [[ ! -c /dev/fuse ]]; then
	echo "   skipped: no FUSE here (no /dev/fuse)"
elif ! command -v fusermount3 > /dev/null; then
	echo "   skipped: no FUSE here (no fusermount3)"
elif [[ ! -x $fuse ]]; then
	echo "   skipped: no $fuse (see $WORK/demo-erofs-utils.log)"
elif ! pushed=$(python3 - "$HERE/../rig" "$REGISTRY" "$WORK" "$img" 2> "$WORK/demo-push.log" <<'PY'
# Push the image as the one layer of demo/erofs:v1 (plain HTTP uploads, the
# media type containerd gives EROFS layers), as push_erofs_fixture.py does.
import os, sys
sys.path.insert(0, sys.argv[1])
import push_erofs_fixture as pe
import push_fixtures as pf
registry, work, img = sys.argv[2:]
store = pf.BlobStore(os.path.join(work, "blobs"))
digest, size = pe.file_digest(img)
pe.store_link(store, img, digest)
pe.push_single_layer(pf.Registry(registry, store), store, "demo/erofs", "v1",
                     pe.EROFS_LAYER, digest, size)
print(f"{registry}/demo/erofs:v1 {digest} {size}")
PY
); then
	echo "   pushing the image failed: see $WORK/demo-push.log"
else
	read -r eref edigest esize <<< "$pushed"
	echo "   pushed $eref: one layer (application/vnd.erofs.layer.v1), $edigest, $esize bytes"
	src="oci://$eref?layer=0,platform=linux/amd64"
	echo "   erofsfuse -f '$src' $mnt"
	mkdir -p "$mnt"
	start=$(now)
	"$fuse" -f "$src" "$mnt" > "$WORK/demo-fuse.log" 2>&1 &
	fuse_pid=$!
	for ((i = 0; i < 300; i++)); do
		mounted "$mnt" && break
		kill -0 "$fuse_pid" 2> /dev/null || break
		sleep 0.05
	done
	if mounted "$mnt"; then
		echo "   mounted after $(since "$start") s (the superblock read from the registry)"
		small=$(cd "$WORK/demo-extract" && find . -type f -size +0 -size -64k | sort | head -n 1)
		small=${small#./}
		s=$(now)
		if [[ -n $small ]] && got=$(sha256sum < "$mnt/$small"); then
			want=$(sha256sum < "$WORK/demo-extract/$small")
			if [[ $got == "$want" ]]; then
				echo "   read /$small ($(stat -c %s "$mnt/$small") bytes) in $(since "$s") s: same sha256 as fsck extracted"
			else
				echo "   read /$small: sha256 DIFFERS from what fsck extracted"
			fi
		else
			echo "   reading /${small:-(no small file)} FAILED"
		fi
		s=$(now)
		if listing "$mnt" > "$WORK/demo-mnt.list" 2> "$WORK/demo-mnt.list.err"; then
			listing "$WORK/demo-extract" > "$WORK/demo-extract.list"
			n=$(wc -l < "$WORK/demo-mnt.list")
			if cmp -s "$WORK/demo-mnt.list" "$WORK/demo-extract.list"; then
				echo "   listed the tree (lstat of every entry): $n entries in $(since "$s") s, the same types, sizes and paths as fsck extracted"
			else
				echo "   listed $n entries, but they DIFFER from what fsck extracted:"
				diff "$WORK/demo-extract.list" "$WORK/demo-mnt.list" | head -n 5 | sed 's/^/     /' || true
			fi
		else
			echo "   listing the tree FAILED: $(head -n 1 "$WORK/demo-mnt.list.err")"
		fi
		fusermount3 -u "$mnt" || true
		for ((i = 0; i < 200; i++)); do
			kill -0 "$fuse_pid" 2> /dev/null || break
			sleep 0.05
		done
		if ! mounted "$mnt" && ! kill -0 "$fuse_pid" 2> /dev/null; then
			wait "$fuse_pid" || true
			fuse_pid=
			echo "   unmounted; erofsfuse exited and printed the library's counters:"
			line=$(grep -m1 '^erofsfuse: oci://' "$WORK/demo-fuse.log" || true)
			echo "     ${line:-(no stats line: see $WORK/demo-fuse.log)}"
			fetched=$(sed -n 's/.* bytes_fetched=\([0-9]*\).*/\1/p' <<< "$line")
			if [[ -n $fetched ]]; then
				awk -v f="$fetched" -v s="$esize" 'BEGIN {
					printf "   fetched %.1f MiB of the %.1f MiB image (%.1f%%): only the blocks the reads touched\n",
						f / 1048576, s / 1048576, 100 * f / s }'
			fi
		else
			echo "   unmount FAILED: see $WORK/demo-fuse.log"
		fi
	else
		echo "   erofsfuse did not mount: $(tail -n 2 "$WORK/demo-fuse.log" | tr '\n' ' ')"
	fi
fi
echo
echo "demo: done"
