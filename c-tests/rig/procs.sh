# SPDX-License-Identifier: MIT OR Apache-2.0
# shellcheck shell=bash
# Shared by the scripts that run throw-away services (registry.sh,
# auth-registry.sh, faultproxy.sh) and by those that check on them:
# pid files, stopping, free ports, and the registries' collector target.
# Sourced, not run.

# The Go collector's target for the registries the rig runs. distribution's
# blob GET reads through a 4 MiB buffer allocated for that request; at Go's
# default (GOGC=100) and the registry's small live heap, the collector runs
# after nearly every blob GET and the freed pages are faulted in again:
# about 5 ms of CPU per GET, whatever its length (200 ranged GETs of 64 KiB:
# 1.0 s). This machine's two cores are shared with the client and the WAN
# model, where a real registry's CPU is not: a burst of parallel Range
# requests waited tens of ms on it. At 400 a GET costs about half (0.46 s
# for the same 200); its RSS stayed near 56 MB. A registry already running
# keeps the setting it was started with (registry.sh reuses it).
REGISTRY_GOGC=400

# alive_pid PIDFILE PATTERN: print the pid in PIDFILE if that process is
# alive and its command line contains PATTERN (guards against pid reuse).
alive_pid() {
    local pidfile=$1 pattern=$2 pid
    [[ -f "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
    echo "$pid"
}

# kill_pidfile PIDFILE PATTERN [TENTHS]: stop the process of PIDFILE (if
# alive_pid vouches for it): SIGTERM, up to TENTHS (default 100) tenths of
# a second to exit, then SIGKILL; the pid file goes either way.
kill_pidfile() {
    local pidfile=$1 pattern=$2 tenths=${3:-100} pid i
    if ! pid=$(alive_pid "$pidfile" "$pattern"); then
        rm -f "$pidfile"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < tenths; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null || true
        sleep 0.1
    fi
    rm -f "$pidfile"
}

# free_port: a TCP port free on 127.0.0.1 (the kernel's choice).
free_port() {
    python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
'
}
