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
echo "demo: done (building an EROFS image with mkfs.erofs comes with the erofs-utils integration)"
