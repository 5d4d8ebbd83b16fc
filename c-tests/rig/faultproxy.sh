#!/usr/bin/env bash
# Run c-tests/rig/faultproxy.py in front of the test registry of WORKDIR.
#
#   faultproxy.sh start WORKDIR   start (or reuse) the proxy against REGISTRY
#                                 from WORKDIR/registry.env; writes
#                                 WORKDIR/faultproxy.env with
#                                 PROXY=127.0.0.1:P1 and CDN=localhost:P2.
#                                 A reused proxy gets its rules and stats
#                                 cleared.
#   faultproxy.sh stop WORKDIR    stop it
#
# Files: WORKDIR/faultproxy/{pid,state.json,log}.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop WORKDIR" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
cmd=$1
workdir=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=c-tests/rig/procs.sh
. "$here/procs.sh"

mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
dir="$workdir/faultproxy"
pidfile="$dir/pid"
statefile="$dir/state.json"
logfile="$dir/log"
envfile="$workdir/faultproxy.env"

# Print the pid from the pid file if that process is alive and is ours.
running_pid() { alive_pid "$pidfile" faultproxy.py; }

# state_field NAME: a field of the state file ("" if absent or unreadable).
state_field() {
    python3 - "$statefile" "$1" <<'PY' 2>/dev/null || true
import json, sys
try:
    with open(sys.argv[1]) as f:
        print(json.load(f).get(sys.argv[2], ""))
except (OSError, ValueError):
    pass
PY
}

# ctl METHOD ADDR PATH: HTTP status of a control request ("000" on failure).
ctl() {
    curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 2 \
        -X "$1" "http://$2$3" 2>/dev/null || true
}

write_env() {
    local proxy cdn
    proxy=$(state_field proxy)
    cdn=$(state_field cdn)
    printf 'PROXY=%s\nCDN=%s\n' "$proxy" "$cdn" >"$envfile.tmp"
    mv -f "$envfile.tmp" "$envfile"
    echo "$proxy"
}

stop() {
    kill_pidfile "$pidfile" faultproxy.py 50
    rm -f "$statefile" "$envfile"
}

start() {
    local registry pid addr i
    registry=$(sed -n 's/^REGISTRY=//p' "$workdir/registry.env" 2>/dev/null || true)
    if [[ -z "$registry" ]]; then
        echo "faultproxy.sh: no REGISTRY in $workdir/registry.env (run registry.sh start)" >&2
        exit 1
    fi
    mkdir -p "$dir"

    if pid=$(running_pid); then
        addr=$(state_field proxy)
        if [[ -n "$addr" && "$(state_field upstream)" == "$registry" &&
              "$(ctl GET "$addr" /__proxy/stats)" == "200" ]]; then
            ctl DELETE "$addr" /__proxy/rules >/dev/null
            ctl DELETE "$addr" /__proxy/stats >/dev/null
            write_env
            return 0
        fi
        echo "faultproxy.sh: restarting pid $pid (stale or other upstream)" >&2
    fi
    stop

    setsid nohup python3 "$here/faultproxy.py" --upstream "$registry" \
        --state-file "$statefile" >>"$logfile" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"

    for ((i = 0; i < 100; i++)); do   # 100 * 0.1 s = 10 s
        if [[ -f "$statefile" ]]; then
            addr=$(state_field proxy)
            if [[ -n "$addr" && "$(ctl GET "$addr" /__proxy/stats)" == "200" ]]; then
                write_env
                return 0
            fi
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "faultproxy.sh: proxy (pid $pid) exited; log follows:" >&2
            cat "$logfile" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        sleep 0.1
    done
    echo "faultproxy.sh: proxy not ready after 10 s; log follows:" >&2
    cat "$logfile" >&2 || true
    stop
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
