# SPDX-License-Identifier: MIT OR Apache-2.0
# Section 8b of bench.sh (sourced inside section 8: uses its fuse_run.py,
# measure, field, min_of, best_of, judge, div, wan_proxy; WORK, HERE, BUILD, REGISTRY,
# ROUNDS, tmp, fuse_bin): a lazy mount of an ordinary gzip layer, per
# network profile (lan: the registry itself; wan: through the WAN model).
#
# The layer is erofs/tree-tgz:v1 (push_erofs_fixture.py: 4342 entries,
# 235 MiB of tar in one gzip member). Its tar index and zinfo come from
# erofs-utils' own command, on the library (the drop-in):
#
#   mkfs.erofs --oci=i,layer=0 --gzinfo=Z IDX REF
#
# and three reads are timed: the first file (a cold mount, then one small
# file), a listing (find: lstat and readlink of every entry) and the whole
# tree (tar -cf - through a pipe). Each against:
#   ours      erofsfuse oci://REF?layer=0,tarindex=IDX,zinfo=Z (the
#             patched erofsfuse-1.9), start to end, bytes fetched from its
#             stats line;
#   full pull the library's download of the whole layer (fetch cat) and
#             tar -xzf of it: what a pull-then-extract runtime pays;
#   erofs     erofs-utils 1.9's own pipeline, as mount.erofs -o
#             oci.tarindex=,oci.zinfo= builds it (the local index, then
#             erofs_gzran_zinfo_open() over ocierofs_io_open()), driven by
#             erofs-ref-driver's trace mode with the device reads erofsfuse
#             makes for the same steps (recorded by strace on a local copy
#             of the device; there is no nbd here), open included.
# Goals on wan: the first file within 1/5 of the full pull, the listing
# fetching at most 10% of the layer, the first file and the whole tree at
# least 10x faster than erofs-utils' pipeline. lan: the same, printed.

echo
echo "8b. lazy mount of an ordinary gzip layer (tar index + zinfo), per network profile"
lz_ref_path=erofs/tree-tgz:v1
read -r _ _ lz_digest lz_size _ < <(awk '$1 == "tgz"' "$WORK/erofs-fixture.txt")
read -r _ lz_tar < <(awk '$1 == "tarfile"' "$WORK/erofs-fixture.txt")
lz_mkfs="$WORK/erofs-utils-1.9/bin/mkfs.erofs"
lz_driver="$WORK/erofs-ref-driver"
lz=$tmp/lazy8b
lz_why=
rm -rf "$lz"
mkdir -p "$lz/mnt"
if [[ -z ${lz_digest:-} || ! -f ${lz_tar:-} ]]; then
	lz_why="no erofs/tree-tgz fixture (push_erofs_fixture.py)"
elif [[ ! -x $lz_mkfs ]]; then
	lz_why="no drop-in mkfs.erofs ($lz_mkfs: dropin.sh)"
elif [[ ! -x $lz_driver ]] && ! bash "$HERE/erofs-ref.sh" "$WORK" >"$lz/ref.log" 2>&1; then
	lz_why="erofs-ref-driver was not built ($(tail -n 1 "$lz/ref.log"))"
elif ! command -v strace >/dev/null; then
	lz_why="no strace (to record the device reads the erofs-utils pipeline replays)"
elif ! "$lz_mkfs" --quiet --oci=i,layer=0 "--gzinfo=$lz/z.zinfo" "$lz/idx" \
	"$REGISTRY/$lz_ref_path" >"$lz/mkfs.log" 2>&1; then
	lz_why="mkfs.erofs --oci=i --gzinfo failed: $(grep -m1 '<E>' "$lz/mkfs.log")"
fi

lz_mib() { awk -v b="${1:-0}" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
lz_pct() { [[ -n ${1:-} ]] && awk -v b="$1" -v s="$lz_size" 'BEGIN { printf "%.2f", 100 * b / s }'; }

# The device reads of each step, recorded on a local copy of the device,
# and the sha256 of the bytes they return (the replay must give the same).
lz_trace() { # lz_trace NAME STEP
	cat >"$lz/strace-fuse" <<EOF
#!/bin/sh
exec strace -f -qq -y -e trace=pread64 -o "$lz/$1.raw" "$fuse_bin" "\$@"
EOF
	chmod +x "$lz/strace-fuse"
	python3 "$tmp/fuse_run.py" "$lz/strace-fuse" "$lz/flat.img" "$lz/mnt" "$lz/pids" "$2" \
		>"$lz/$1.run" 2>&1
	grep 'flat.img>' "$lz/$1.raw" |
		sed -n 's/.*, \([0-9]*\), \([0-9]*\)) = [0-9]*$/\2 \1/p' >"$lz/$1.trace"
	python3 - "$lz/flat.img" "$lz/$1.trace" >"$lz/$1.sha" <<'PY'
import hashlib, sys
h, n = hashlib.sha256(), 0
with open(sys.argv[1], "rb") as img, open(sys.argv[2]) as t:
	for line in t:
		off, ln = map(int, line.split())
		img.seek(off)
		h.update(img.read(ln))
		n += 1
print(h.hexdigest(), n)
PY
}

small8b="names/with space.txt"
if [[ -z $lz_why ]]; then
	cat "$lz/idx" "$lz_tar" >"$lz/flat.img"
	lz_trace first "file=$small8b"
	lz_trace list list
	lz_trace tar tar
	echo "  layer: $REGISTRY/$lz_ref_path, $(lz_mib "$lz_size") gzip ($lz_digest), $(lz_mib "$(stat -c %s "$lz_tar")") of tar;" \
		"tar index $(lz_mib "$(stat -c %s "$lz/idx")"), zinfo $(lz_mib "$(stat -c %s "$lz/z.zinfo")")"
	echo "  device reads recorded: first file $(wc -l <"$lz/first.trace"), listing $(wc -l <"$lz/list.trace"), whole tree $(wc -l <"$lz/tar.trace")"
fi

# lz_profile NAME HOST: every figure through HOST (the registry or a proxy)
lz_profile() {
	local p=$1 host=$2 src full e_t o_t r b erofs_lim=${EROFS_LAZY_TIMEOUT:-120}
	src="oci://$host/$lz_ref_path?$(opts "layer=0,tarindex=$lz/idx,zinfo=$lz/z.zinfo")"
	echo "  -- $p"
	# the full pull: download, then extract
	rm -rf "$lz/pull"
	best_of "pull8b_$p" sh -c "'$BUILD/fetch-1.9' '$host/$lz_ref_path' '$(opts layer=0)' cat >'$lz/pull.tgz' &&
		rm -rf '$lz/pull' && mkdir '$lz/pull' && tar -xzf '$lz/pull.tgz' -C '$lz/pull'"
	full=$BEST_S
	rm -rf "$lz/pull" "$lz/pull.tgz"
	printf '  %-52s %8s s\n' "full pull: the library's download + tar -xzf" "${full:-failed}"
	# erofs_row STEP: erofs-utils' pipeline on STEP's reads; sets e_t
	erofs_row() {
		measure "ref8b_$1_$p" 1 env EROFS_REF_TIMEOUT="$erofs_lim" "$lz_driver" trace \
			"$host" "${lz_ref_path%:*}" "${lz_ref_path#*:}" 0 "$lz/idx" "$lz/z.zinfo" "$lz/$1.trace"
		local line want
		line=$(cat "$tmp/ref8b_$1_$p.out")
		read -r want _ <"$lz/$1.sha"
		e_t=$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
			if (v["result"] == "" && v["errors"] == "0") printf "%.3f", v["open_secs"] + v["secs"] }' <<<"$line")
		if [[ -n $e_t && $line != *"sha256=$want"* ]]; then
			printf '  %-52s wrong bytes (sha256 of the reads != the device'"'"'s)\n' "erofs-utils' pipeline"
			e_t=
		elif [[ -n $e_t ]]; then
			printf '  %-52s %8s s  (fetched %s in %s preads)\n' "erofs-utils' pipeline, same reads" "$e_t" \
				"$(lz_mib "$(sed -n 's/.*bytes_fetched=\([0-9]*\).*/\1/p' <<<"$line")")" \
				"$(sed -n 's/.* blob_preads=\([0-9]*\).*/\1/p' <<<"$line")"
		elif [[ $line == *result=timeout* ]]; then
			printf '  %-52s > %s s (stopped)\n' "erofs-utils' pipeline, same reads" "$erofs_lim"
			e_t=">$erofs_lim"
		else
			printf '  %-52s failed: %s\n' "erofs-utils' pipeline" "$(tail -n 1 "$tmp/ref8b_$1_$p.err" | cut -c1-100)"
		fi
	}
	# vs_erofs OURS: the ratio to erofs-utils' pipeline (a lower bound when
	# it was stopped), judged on wan
	vs_erofs() {
		local e=${e_t#>} bound=
		[[ $e_t == ">"* ]] && bound="at least "
		r=$(div "$e" "$1" 1)
		if [[ $p == wan ]]; then
			judge "$r" ge 10
			printf '  ratio %s%s (erofs-utils / ours, goal >= 10) %s\n' "$bound" "${r:-n/a}" "$V"
		else
			printf '  ratio %s%s (erofs-utils / ours)\n' "$bound" "${r:-n/a}"
		fi
	}

	echo "  a. the first file: a cold mount, then '$small8b'"
	measure "lz_first_$p" "$ROUNDS" frun "$src" "$lz/mnt" "$lz/pids" "file=$small8b"
	o_t=$(min_of "lz_first_$p" first_secs)
	b=$(max_of "lz_first_$p" bytes_fetched)
	if [[ $(distinct "lz_first_$p" sha256) != "$(sha256sum "$WORK/erofs-fixture/tree/$small8b" | cut -d' ' -f1)" ]]; then
		o_t=
		echo "  ours: the file's bytes are wrong or missing: $(failure "lz_first_$p")"
	else
		printf '  %-52s %8s s  (fetched %s = %s%% of the layer)\n' "ours: erofsfuse, tar index + zinfo" \
			"$o_t" "$(lz_mib "$b")" "$(lz_pct "$b")"
	fi
	r=$(div "$full" "$o_t" 1)
	if [[ $p == wan ]]; then
		judge "$r" ge 5
		printf '  ratio %s (full pull / ours, goal >= 5) %s\n' "${r:-n/a}" "$V"
	else
		printf '  ratio %s (full pull / ours)\n' "${r:-n/a}"
	fi
	erofs_row first
	vs_erofs "$o_t"

	echo "  b. a listing: a cold mount, then find (lstat and readlink of every entry)"
	measure "lz_list_$p" "$ROUNDS" frun "$src" "$lz/mnt" "$lz/pids" list
	o_t=$(min_of "lz_list_$p" list_secs)
	b=$(max_of "lz_list_$p" bytes_fetched)
	[[ -n $o_t ]] && o_t=$(awk -v a="$o_t" -v m="$(min_of "lz_list_$p" mount_secs)" 'BEGIN { printf "%.3f", a + m }')
	printf '  %-52s %8s s  %s entries, fetched %s = %s%% of the layer\n' "ours: mount + find" \
		"${o_t:-failed}" "$(distinct "lz_list_$p" entries)" "$(lz_mib "$b")" "$(lz_pct "$b")"
	if [[ $p == wan ]]; then
		judge "$(lz_pct "$b")" le 10
		echo "  bytes fetched for the listing: $(lz_pct "$b")% of the layer (goal <= 10%) $V"
	fi
	erofs_row list
	echo "  (the tar index holds every inode and directory: a listing reads the local index only, in both pipelines)"

	echo "  c. the whole tree: a cold mount, then tar -cf - through a pipe"
	measure "lz_tar_$p" 1 frun "$src" "$lz/mnt" "$lz/pids" tar
	o_t=$(min_of "lz_tar_$p" tar_secs)
	b=$(max_of "lz_tar_$p" bytes_fetched)
	[[ -n $o_t ]] && o_t=$(awk -v a="$o_t" -v m="$(min_of "lz_tar_$p" mount_secs)" 'BEGIN { printf "%.3f", a + m }')
	printf '  %-52s %8s s  (%s of tar, fetched %s)\n' "ours: mount + tar" "${o_t:-failed}" \
		"$(lz_mib "$(distinct "lz_tar_$p" tar_bytes)")" "$(lz_mib "$b")"
	printf '  ratio %s (full pull / ours)\n' "$(div "$full" "$o_t")"
	erofs_row tar
	vs_erofs "$o_t"
}

if [[ -n $lz_why ]]; then
	for _ in a-full a-erofs b c; do judge "" ge 1; done
	echo "  NOT MEASURED: $lz_why (4 goals)"
else
	lz_profile lan "$REGISTRY"
	if wan_proxy "$lz/wan.port" --profile wan; then
		lz_profile wan "$(cat "$lz/wan.port")"
	else
		for _ in a-full a-erofs b c; do judge "" ge 1; done
		echo "  -- wan: NOT MEASURED: wanproxy.py did not start: $(tail -n 1 "$lz/wan.port.err")"
	fi
	kill "$PROXY_PID" 2>/dev/null
	wait "$PROXY_PID" 2>/dev/null
fi
rm -rf "$lz"
