#!/usr/bin/env bash
# Prepare everything the C tests need in WORKDIR:
#   install dependencies, start (or reuse) the registry, push the fixtures.
# Prints the registry address (127.0.0.1:PORT) on stdout; the details are in
# WORKDIR/registry.env and WORKDIR/fixtures.txt.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
workdir=$1
mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)

bash "$here/setup-deps.sh" >&2
bash "$here/registry.sh" start "$workdir" >/dev/null

registry=$(sed -n 's/^REGISTRY=//p' "$workdir/registry.env")
if [[ -z "$registry" ]]; then
    echo "fixtures.sh: no REGISTRY in $workdir/registry.env" >&2
    exit 1
fi

python3 "$here/push_fixtures.py" --registry "$registry" --work "$workdir" >&2
echo "$registry"
