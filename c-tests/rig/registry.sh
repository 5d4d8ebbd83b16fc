#!/usr/bin/env bash
# Run a throw-away CNCF distribution registry (Debian's docker-registry) on
# a free 127.0.0.1 port, with its state under WORKDIR.
#
#   registry.sh start WORKDIR   start (or reuse) the registry; writes
#                               WORKDIR/registry.env with REGISTRY=127.0.0.1:PORT
#   registry.sh stop WORKDIR    stop it (data and files are kept)
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
regdir="$workdir/registry"
pidfile="$regdir/pid"
envfile="$workdir/registry.env"
config="$regdir/config.yml"
logfile="$regdir/registry.log"

# Print the pid from the pid file if that process is alive and is a registry.
running_pid() { alive_pid "$pidfile" docker-registry; }

# Succeeds when GET /v2/ answers 200.
probe() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://$1/v2/" 2>/dev/null) || true
    [[ "$code" == "200" ]]
}

wait_ready() {
    local addr=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do   # 100 * 0.2 s = 20 s
        if probe "$addr"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "registry.sh: registry (pid $pid) exited; log follows:" >&2
            cat "$logfile" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    echo "registry.sh: registry at $addr not ready after 20 s; log follows:" >&2
    cat "$logfile" >&2 || true
    return 1
}

write_config() {
    local port=$1 secret
    # Random upload-state secret, new per start (silences a startup warning).
    secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    cat >"$config" <<CONF
version: 0.1
log:
  level: warn
  formatter: text
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $regdir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: $secret
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
CONF
}

start() {
    local pid port addr
    mkdir -p "$regdir/data"

    if pid=$(running_pid); then
        addr=$(sed -n 's/^REGISTRY=//p' "$envfile" 2>/dev/null || true)
        if [[ -n "$addr" ]] && wait_ready "$addr" "$pid"; then
            echo "$addr"
            return 0
        fi
        echo "registry.sh: pid $pid is alive but not answering; restarting" >&2
        stop
    fi

    command -v docker-registry >/dev/null || {
        echo "registry.sh: docker-registry not installed (run setup-deps.sh)" >&2
        exit 1
    }

    port=$(free_port)
    addr="127.0.0.1:$port"
    write_config "$port"
    rm -f "$envfile"

    # setsid + nohup: detach from our session so it outlives this script.
    GOGC=$REGISTRY_GOGC setsid nohup docker-registry serve "$config" \
        >>"$logfile" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"

    if ! wait_ready "$addr" "$pid"; then
        kill "$pid" 2>/dev/null || true
        rm -f "$pidfile"
        exit 1
    fi
    echo "REGISTRY=$addr" >"$envfile"
    echo "$addr"
}

stop() { kill_pidfile "$pidfile" docker-registry; }

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
