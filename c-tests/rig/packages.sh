# SPDX-License-Identifier: MIT OR Apache-2.0
# Sourced by the build scripts: Debian packages installed when missing.
#
# ensure_packages PKG...: installs those of PKG... that are not installed
# (apt-get update first); on failure returns 1 with the reason in
# PACKAGES_WHY.
ensure_packages() {
    local pkg status missing=()
    PACKAGES_WHY=
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
    done
    [[ ${#missing[@]} -gt 0 ]] || return 0
    if [[ ${EUID} -ne 0 ]]; then
        PACKAGES_WHY="missing packages: ${missing[*]} (run as root to install them)"
        return 1
    fi
    echo "installing ${missing[*]}" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2; then
        PACKAGES_WHY="apt-get update failed"
        return 1
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >&2; then
        PACKAGES_WHY="apt-get install ${missing[*]} failed"
        return 1
    fi
}
