# SPDX-License-Identifier: MIT OR Apache-2.0
# Section 7b of bench.sh (sourced; uses WORK, HERE, REGISTRY, ROUNDS, tmp,
# judge, div, best_of, wan_proxy): erofs-utils 1.9's own commands, unchanged, built
# twice from the same source: stock (its libcurl + json-c client, the
# build of erofs-ref.sh) and the drop-in on the library (dropin.sh).
#
#   mkfs.erofs --oci=f IMG REF                  a small multi-layer image,
#                                               and two 224 MiB gzip layers
#   mkfs.erofs --oci=f,layer=0 IMG REF          the 235 MiB tar layer
#   mkfs.erofs --oci=i,layer=N --gzinfo=Z IMG REF   a small and a 224 MiB
#                                               gzip layer
#
# Wall time (goal: drop-in at most 0.8x stock) and peak RSS, and whether
# the merged tree keeps deleted files (stock applies no whiteouts).

echo
echo "7b. erofs-utils 1.9 mkfs.erofs --oci, stock against the drop-in on the library (best of $ROUNDS)"
dropin_mkfs="$WORK/erofs-utils-1.9/bin/mkfs.erofs"
dropin_fsck="$WORK/erofs-utils-1.9/bin/fsck.erofs"
stock_mkfs="$WORK/erofs-ref-build/mkfs/mkfs.erofs"
dropin_why=
if ! bash "$HERE/../erofs-utils/dropin.sh" "$WORK" >"$tmp/dropin.log" 2>&1; then
	dropin_why="the drop-in did not build ($(tail -n 1 "$tmp/dropin.log"))"
elif [[ ! -x $stock_mkfs ]] &&
	! { bash "$HERE/erofs-ref.sh" "$WORK" >"$tmp/erofs-ref7b.log" 2>&1 && [[ -x $stock_mkfs ]]; }; then
	dropin_why="stock mkfs.erofs --oci was not built (erofs-ref.sh: $(tail -n 1 "$tmp/erofs-ref7b.log"))"
elif ! python3 "$HERE/../rig/push_layered_fixtures.py" --registry "$REGISTRY" --work "$WORK" \
	>"$tmp/layered.log" 2>&1; then
	dropin_why="the layered fixtures could not be pushed"
fi

# dropin_row LABEL STOCK_OPTS DROPIN_OPTS REF [EXTRA...]: both, the ratio
dropin_row() {
	local label=$1 sopts=$2 dopts=$3 ref=$4 s_s s_kib d_s d_kib r
	shift 4
	best_of stock7b "$stock_mkfs" --quiet "$sopts" "$@" "$tmp/stock.img" "$ref"
	s_s=$BEST_S s_kib=$BEST_KIB
	best_of dropin7b "$dropin_mkfs" --quiet "$dopts" "$@" "$tmp/dropin.img" "$ref"
	d_s=$BEST_S d_kib=$BEST_KIB
	printf '  %-44s stock %6s s %7s KiB   drop-in %6s s %7s KiB\n' "$label" \
		"${s_s:-failed}" "${s_kib:--}" "${d_s:-failed}" "${d_kib:--}"
	[[ -n $s_s ]] || sed 's/^/    stock: /' "$tmp/stock7b.err" | tail -n 2
	[[ -n $d_s ]] || sed 's/^/    drop-in: /' "$tmp/dropin7b.err" | tail -n 2
	r=$(div "$d_s" "$s_s")
	judge "$r" le 0.8
	printf '  %-44s ratio %s (drop-in / stock, goal <= 0.80) %s\n' "" "${r:-n/a}" "$V"
}

if [[ -n $dropin_why ]]; then
	judge "" le 1
	echo "  NOT MEASURED: $dropin_why"
else
	p=platform=linux/amd64
	dropin_row "--oci=f of layered/docker:v1 (2 gzip layers)" \
		"--oci=f,insecure,$p" "--oci=f,$p" "$REGISTRY/layered/docker:v1"
	dropin_row "--oci=f,layer=0 of the 235 MiB tar layer" \
		"--oci=f,insecure,$p,layer=0" "--oci=f,$p,layer=0" "$REGISTRY/erofs/tree-tar:v1"
	dropin_row "--oci=i,layer=1 --gzinfo of a gzip layer" \
		"--oci=i,insecure,$p,layer=1" "--oci=i,$p,layer=1" "$REGISTRY/library/hello:latest" \
		"--gzinfo=$tmp/z.zinfo"
	dropin_row "--oci=f of tree-tgz:two-layers (2 x 224 MiB gzip)" \
		"--oci=f,insecure,$p" "--oci=f,$p" "$REGISTRY/erofs/tree-tgz:two-layers"
	dropin_row "--oci=i,layer=0 --gzinfo of the 224 MiB gzip layer" \
		"--oci=i,insecure,$p,layer=0" "--oci=i,$p,layer=0" "$REGISTRY/erofs/tree-tgz:v1" \
		"--gzinfo=$tmp/z.zinfo"
	# the big layer again through the WAN model (wan profile: 30 ms, 20 MB/s
	# a connection, 160 MB/s in all), once each
	wan_proxy "$tmp/wan7b.port" --profile wan
	rounds7b=$ROUNDS
	ROUNDS=1
	dropin_row "wan: --oci=f,layer=0 of the 235 MiB tar layer" \
		"--oci=f,insecure,$p,layer=0" "--oci=f,$p,layer=0" \
		"$(cat "$tmp/wan7b.port")/erofs/tree-tar:v1"
	dropin_row "wan: --oci=f of layered/docker:v1 (2 gzip layers)" \
		"--oci=f,insecure,$p" "--oci=f,$p" "$(cat "$tmp/wan7b.port")/layered/docker:v1"
	dropin_row "wan: --oci=f of tree-tgz:two-layers" \
		"--oci=f,insecure,$p" "--oci=f,$p" "$(cat "$tmp/wan7b.port")/erofs/tree-tgz:two-layers"
	dropin_row "wan: --oci=i,layer=0 --gzinfo of the 224 MiB layer" \
		"--oci=i,insecure,$p,layer=0" "--oci=i,$p,layer=0" \
		"$(cat "$tmp/wan7b.port")/erofs/tree-tgz:v1" "--gzinfo=$tmp/z.zinfo"
	ROUNDS=$rounds7b
	kill "$PROXY_PID" 2>/dev/null
	wait "$PROXY_PID" 2>/dev/null
	# what each merged tree holds: entries, and .wh.* entries left in it
	for img in layered/docker:v1 layered/whiteouts:v1; do
		row=
		for b in stock dropin; do
			rm -rf "$tmp/$b.out" "$tmp/$b.img"
			if [[ $b == stock ]]; then
				"$stock_mkfs" --quiet "--oci=f,insecure,$p" "$tmp/$b.img" "$REGISTRY/$img" \
					>"$tmp/$b.mkfs" 2>&1
			else
				"$dropin_mkfs" --quiet "--oci=f,$p" "$tmp/$b.img" "$REGISTRY/$img" \
					>"$tmp/$b.mkfs" 2>&1
			fi
			if [[ -s $tmp/$b.img ]] &&
				"$dropin_fsck" --extract="$tmp/$b.out" "$tmp/$b.img" >/dev/null 2>&1; then
				row+="$(printf '%-8s %3s entries, %2s .wh.*   ' "$b" \
					"$(find "$tmp/$b.out" -mindepth 1 | wc -l)" \
					"$(find "$tmp/$b.out" -name '.wh.*' | wc -l)")"
			else
				row+="$(printf '%-8s fails: %s   ' "$b" \
					"$(grep -m1 '<E>' "$tmp/$b.mkfs" | sed 's/^<E> erofs: *//' | cut -c1-50)")"
			fi
		done
		printf '  %-44s %s\n' "correctness: --oci=f of $img" "$row"
	done
	echo "  (the layered fixtures delete files with whiteouts and opaque directories: a tree with .wh.* entries keeps what they delete)"
	rm -rf "$tmp/stock.img" "$tmp/dropin.img" "$tmp/stock.out" "$tmp/dropin.out" "$tmp/z.zinfo"
fi
