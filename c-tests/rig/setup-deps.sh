#!/usr/bin/env bash
# Install (as root) the Debian 12 packages the C test rig needs; with
# `bench`, also the peers only make bench runs (containerd).
# Idempotent: when everything is already installed it does nothing.
set -euo pipefail

packages=(
    docker-registry
    skopeo
    libcurl4-openssl-dev
    libssl-dev
    pkg-config
    zstd
    libzstd-dev
    zlib1g-dev
    apache2-utils
    valgrind
    python3
    curl
    openssl
    dpkg-dev
    time
    strace
)
if [[ ${1:-} == bench ]]; then
    packages+=(containerd)
fi

missing=()
for pkg in "${packages[@]}"; do
    # "install ok installed" is the only state that means the package is usable.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ ${EUID} -ne 0 ]]; then
    echo "setup-deps.sh: missing packages: ${missing[*]} (run as root to install)" >&2
    exit 1
fi

echo "setup-deps.sh: installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "${missing[@]}"

# The docker-registry package ships a service listening on :5000; the rig
# never uses it, so it is left alone (it may or may not be running). The
# same goes for containerd's service: the bench starts its own daemon.
exit 0
