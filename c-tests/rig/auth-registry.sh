#!/usr/bin/env bash
# Run a throw-away CNCF distribution registry (Debian's docker-registry) that
# requires authentication, on free 127.0.0.1 ports, with its state under
# WORKDIR/auth-MODE/.
#
#   auth-registry.sh start WORKDIR MODE   start (or reuse); writes WORKDIR/auth-MODE.env
#   auth-registry.sh stop WORKDIR MODE    stop what start launched (files are kept)
#
# MODE:
#   basic-tls  HTTPS with a private CA (WORKDIR/auth-basic-tls/ca/ca.pem; the
#              server certificate covers IP 127.0.0.1 and DNS localhost) and
#              htpasswd (bcrypt) Basic auth.  Users: alice/s3cret-pass and
#              bob/b0b-Passw0rd.  htpasswd only authenticates: any valid user
#              may pull and push anything, and nothing is anonymous.
#   token      plain HTTP with auth.token, backed by c-tests/rig/token-server.py
#              on another port (Docker token protocol, RS256 JWTs).  private/...
#              needs alice; everything else is anonymously pullable; alice can
#              push.  Each token request is logged to TOKEN_LOG (JSON lines).
#
# Environment knobs for `start` (token mode; a running instance started with
# other values is restarted):
#   TOKEN_EXPIRES_IN   token lifetime in seconds (default 300)
#   TOKEN_JWT_HEADER   x5c (default) or kid: how the JWT names its signing key
#
# The .env file holds KEY=VALUE lines (no quoting needed: no value has spaces):
#   AUTH_MODE AUTH_REGISTRY AUTH_URL AUTH_USER AUTH_PASS AUTH_USER2 AUTH_PASS2
#   basic-tls: AUTH_CA AUTH_CERT_DIR AUTH_REALM
#   token:     TOKEN_SERVER TOKEN_REALM TOKEN_SERVICE TOKEN_ISSUER TOKEN_LOG
#              TOKEN_EXPIRES_IN TOKEN_JWT_HEADER AUTH_REFRESH_TOKEN
#              AUTH_REFRESH_TOKEN2
#
# Needs docker-registry, openssl, curl and python3; the bcrypt htpasswd file is
# made with `htpasswd -B` if present, else Python's crypt module (glibc's
# libxcrypt does bcrypt), else apache2-utils is installed with apt-get.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop WORKDIR basic-tls|mtls|token" >&2
    exit 2
}

[[ $# -eq 3 ]] || usage
cmd=$1
workdir=$2
mode=$3
case "$mode" in
    basic-tls | mtls | token) ;;
    *) usage ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=c-tests/rig/procs.sh
. "$here/procs.sh"
mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)
dir="$workdir/auth-$mode"
# mtls serves basic-tls's storage: the images pushed there, behind a
# registry that also wants a client certificate.
datadir="$dir/data"
[[ "$mode" == mtls ]] && datadir="$workdir/auth-basic-tls/data"
envfile="$workdir/auth-$mode.env"
config="$dir/config.yml"
reglog="$dir/registry.log"
regpidfile="$dir/registry.pid"
tokpidfile="$dir/token-server.pid"
tokportfile="$dir/token-server.port"
toklog="$dir/token-server.stderr"
tokreqlog="$dir/token-requests.jsonl"
settingsfile="$dir/settings"

USER1=alice
PASS1=s3cret-pass
USER2=bob
PASS2=b0b-Passw0rd
REFRESH1=alice-refresh-token
REFRESH2=bob-refresh-token
SERVICE=liboci-test-registry
ISSUER=liboci-test-token-issuer
BASIC_REALM=liboci-test-basic
BCRYPT_COST=5   # the registry checks bcrypt on every request: keep it cheap

expires_in=${TOKEN_EXPIRES_IN:-300}
jwt_header=${TOKEN_JWT_HEADER:-x5c}
[[ "$expires_in" =~ ^[1-9][0-9]*$ ]] || {
    echo "auth-registry.sh: TOKEN_EXPIRES_IN must be a positive integer" >&2
    exit 2
}
[[ "$jwt_header" == x5c || "$jwt_header" == kid ]] || {
    echo "auth-registry.sh: TOKEN_JWT_HEADER must be x5c or kid" >&2
    exit 2
}

log() { echo "auth-registry.sh[$mode]: $*" >&2; }

reg_pid() { alive_pid "$regpidfile" "$config"; }
tok_pid() { alive_pid "$tokpidfile" "token-server.py"; }

# The settings a running instance must match to be reused.
settings() {
    if [[ "$mode" == token ]]; then
        echo "expires_in=$expires_in jwt_header=$jwt_header"
    else
        echo "basic"
    fi
}

# --- certificates ------------------------------------------------------------

# basic-tls and mtls (basic-tls that also requires a client certificate
# signed by the same CA) serve HTTPS.
is_tls() {
    [[ "$mode" == basic-tls || "$mode" == mtls ]]
}

# openssl config with only what we ask for (no distro default extensions).
write_openssl_cnf() {
    cat >"$dir/ca/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_signer]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
}

# Certificate $1 exists, parses, and is valid for at least another day.
cert_ok() {
    [[ -s "$1" ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1
}

make_ca() {
    local cnf="$dir/ca/openssl.cnf"
    if cert_ok "$dir/ca/ca.pem" && [[ -s "$dir/ca/ca.key" ]]; then
        return 0
    fi
    log "creating private CA"
    openssl req -x509 -new -config "$cnf" -extensions v3_ca \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca/ca.key" -out "$dir/ca/ca.pem" -days 3650 \
        -subj "/O=liboci_registry tests/CN=liboci test CA ($mode)" 2>/dev/null
    # Certificates signed by an older CA are now useless.
    rm -f "$dir/tls/server.pem" "$dir/signer/token.pem"
}

# issue_cert KEYTYPE KEYFILE CERTFILE EXTENSIONS SUBJECT
issue_cert() {
    local keytype=$1 key=$2 cert=$3 ext=$4 subj=$5 csr
    csr="$cert.csr"
    if [[ "$keytype" == rsa ]]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" 2>/dev/null
    else
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$key" 2>/dev/null
    fi
    openssl req -new -config "$dir/ca/openssl.cnf" -key "$key" -out "$csr" -subj "$subj"
    openssl x509 -req -in "$csr" -CA "$dir/ca/ca.pem" -CAkey "$dir/ca/ca.key" \
        -set_serial "0x$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')" -days 825 \
        -extfile "$dir/ca/openssl.cnf" -extensions "$ext" -out "$cert" 2>/dev/null
    rm -f "$csr"
    openssl verify -CAfile "$dir/ca/ca.pem" "$cert" >/dev/null
}

make_certs() {
    (
        umask 077
        mkdir -p "$dir/ca"
        if is_tls; then mkdir -p "$dir/tls"; else mkdir -p "$dir/signer"; fi
    )
    write_openssl_cnf
    make_ca
    if is_tls; then
        if ! cert_ok "$dir/tls/server.pem" || [[ ! -s "$dir/tls/server.key" ]]; then
            log "issuing server certificate for 127.0.0.1 / localhost"
            issue_cert ec "$dir/tls/server.key" "$dir/tls/server.pem" v3_server \
                "/O=liboci_registry tests/CN=127.0.0.1"
        fi
        if [[ "$mode" == mtls ]] && { ! cert_ok "$dir/tls/client.pem" || [[ ! -s "$dir/tls/client.key" ]]; }; then
            log "issuing client certificate"
            issue_cert ec "$dir/tls/client.key" "$dir/tls/client.pem" v3_client \
                "/O=liboci_registry tests/CN=liboci test client"
        fi
        # skopeo/containers-image --cert-dir: *.crt files are CA certificates.
        mkdir -p "$dir/certs.d"
        cp "$dir/ca/ca.pem" "$dir/certs.d/ca.crt"
    else
        if ! cert_ok "$dir/signer/token.pem" || [[ ! -s "$dir/signer/token.key" ]]; then
            log "issuing token signing certificate"
            issue_cert rsa "$dir/signer/token.key" "$dir/signer/token.pem" v3_signer \
                "/O=liboci_registry tests/CN=liboci test token signer"
        fi
        # The registry trusts the CA (for x5c chains) and the signing
        # certificate itself (its key is then trusted by libtrust key ID, kid).
        cat "$dir/ca/ca.pem" "$dir/signer/token.pem" >"$dir/signer/rootcerts.pem"
    fi
}

# --- htpasswd ----------------------------------------------------------------

bcrypt_hash() {
    local user=$1 pass=$2
    if command -v htpasswd >/dev/null; then
        htpasswd -nbB -C "$BCRYPT_COST" "$user" "$pass" | head -n1 | cut -d: -f2-
        return
    fi
    if python3 -W ignore -c 'import crypt, sys; sys.exit(crypt.METHOD_BLOWFISH not in crypt.methods)' \
        2>/dev/null; then
        PASS="$pass" COST="$BCRYPT_COST" python3 -W ignore -c '
import crypt, os
salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2 ** int(os.environ["COST"]))
print(crypt.crypt(os.environ["PASS"], salt))'
        return
    fi
    if [[ ${EUID} -eq 0 ]]; then
        log "installing apache2-utils for htpasswd"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y apache2-utils >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y apache2-utils >/dev/null; }
        htpasswd -nbB -C "$BCRYPT_COST" "$user" "$pass" | head -n1 | cut -d: -f2-
        return
    fi
    log "cannot make bcrypt hashes: install apache2-utils (htpasswd)"
    return 1
}

make_htpasswd() {
    local h1 h2
    [[ -s "$dir/htpasswd" ]] && return 0
    h1=$(bcrypt_hash "$USER1" "$PASS1")
    h2=$(bcrypt_hash "$USER2" "$PASS2")
    [[ "$h1" == \$2* && "$h2" == \$2* ]] || { log "bad bcrypt hash"; return 1; }
    printf '%s:%s\n%s:%s\n' "$USER1" "$h1" "$USER2" "$h2" >"$dir/htpasswd.tmp"
    mv "$dir/htpasswd.tmp" "$dir/htpasswd"
}

# --- registry config ---------------------------------------------------------

write_config() {
    local port=$1 token_addr=${2:-} secret
    secret=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    {
        cat <<CONF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
  fields:
    service: registry
    mode: $mode
storage:
  filesystem:
    rootdirectory: $datadir
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
CONF
        if is_tls; then
            cat <<CONF
  tls:
    certificate: $dir/tls/server.pem
    key: $dir/tls/server.key
CONF
            if [[ "$mode" == mtls ]]; then
                cat <<CONF
    clientcas:
      - $dir/ca/ca.pem
CONF
            fi
            cat <<CONF
auth:
  htpasswd:
    realm: $BASIC_REALM
    path: $dir/htpasswd
CONF
        else
            cat <<CONF
auth:
  token:
    realm: http://$token_addr/token
    service: $SERVICE
    issuer: $ISSUER
    rootcertbundle: $dir/signer/rootcerts.pem
CONF
        fi
        cat <<CONF
health:
  storagedriver:
    enabled: false
CONF
    } >"$config"
}

# --- readiness ---------------------------------------------------------------

registry_url() {
    if is_tls; then echo "https://$1"; else echo "http://$1"; fi
}

# GET /v2/ must answer 401 (authentication required).
probe_registry() {
    local code client=()
    [[ "$mode" == mtls ]] && client=(--cert "$dir/tls/client.pem" --key "$dir/tls/client.key")
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${client[@]}" \
        --cacert "$dir/ca/ca.pem" "$(registry_url "$1")/v2/" 2>/dev/null) || true
    [[ "$code" == "401" ]]
}

probe_token() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
        "http://$1/healthz" 2>/dev/null) || true
    [[ "$code" == "200" ]]
}

wait_registry() {
    local addr=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do # 100 * 0.2 s = 20 s
        probe_registry "$addr" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            log "registry (pid $pid) exited; log follows:"
            tail -n 50 "$reglog" >&2 || true
            return 1
        fi
        sleep 0.2
    done
    log "registry at $addr does not answer 401 on /v2/ after 20 s; log follows:"
    tail -n 50 "$reglog" >&2 || true
    return 1
}

start_token_server() {
    local pid i
    rm -f "$tokportfile"
    setsid nohup python3 "$here/token-server.py" \
        --listen 127.0.0.1:0 --port-file "$tokportfile" \
        --key "$dir/signer/token.key" --cert "$dir/signer/token.pem" \
        --issuer "$ISSUER" --service "$SERVICE" \
        --expires-in "$expires_in" --jwt-header "$jwt_header" \
        --user "$USER1:$PASS1" --user "$USER2:$PASS2" --privileged "$USER1" \
        --refresh-token "$REFRESH1=$USER1" --refresh-token "$REFRESH2=$USER2" \
        --log "$tokreqlog" >>"$toklog" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$tokpidfile"
    for ((i = 0; i < 100; i++)); do
        if [[ -s "$tokportfile" ]]; then
            token_addr=$(<"$tokportfile")
            probe_token "$token_addr" && return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "token server (pid $pid) exited; log follows:"
            tail -n 30 "$toklog" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    log "token server not ready after 10 s"
    return 1
}

write_env() {
    local addr=$1
    {
        echo "AUTH_MODE=$mode"
        echo "AUTH_REGISTRY=$addr"
        echo "AUTH_URL=$(registry_url "$addr")"
        echo "AUTH_USER=$USER1"
        echo "AUTH_PASS=$PASS1"
        echo "AUTH_USER2=$USER2"
        echo "AUTH_PASS2=$PASS2"
        if is_tls; then
            echo "AUTH_CA=$dir/ca/ca.pem"
            echo "AUTH_CERT_DIR=$dir/certs.d"
            if [[ "$mode" == mtls ]]; then
                echo "AUTH_CLIENT_CERT=$dir/tls/client.pem"
                echo "AUTH_CLIENT_KEY=$dir/tls/client.key"
            fi
            echo "AUTH_REALM=$BASIC_REALM"
        else
            echo "AUTH_REFRESH_TOKEN=$REFRESH1"
            echo "AUTH_REFRESH_TOKEN2=$REFRESH2"
            echo "TOKEN_SERVER=$token_addr"
            echo "TOKEN_REALM=http://$token_addr/token"
            echo "TOKEN_SERVICE=$SERVICE"
            echo "TOKEN_ISSUER=$ISSUER"
            echo "TOKEN_LOG=$tokreqlog"
            echo "TOKEN_EXPIRES_IN=$expires_in"
            echo "TOKEN_JWT_HEADER=$jwt_header"
        fi
    } >"$envfile.tmp"
    mv "$envfile.tmp" "$envfile"
}

# --- start / stop ------------------------------------------------------------

stop() {
    kill_pidfile "$regpidfile" "$config"
    kill_pidfile "$tokpidfile" "token-server.py"
}

start() {
    local rpid addr port token_addr=""
    mkdir -p "$dir/data" "$datadir"

    # Reuse a healthy instance started with the same settings.
    if rpid=$(reg_pid); then
        addr=$(sed -n 's/^AUTH_REGISTRY=//p' "$envfile" 2>/dev/null || true)
        local ok=1
        [[ -n "$addr" && "$(cat "$settingsfile" 2>/dev/null)" == "$(settings)" ]] || ok=0
        if [[ "$mode" == token && $ok -eq 1 ]]; then
            token_addr=$(sed -n 's/^TOKEN_SERVER=//p' "$envfile" 2>/dev/null || true)
            if ! tok_pid >/dev/null || [[ -z "$token_addr" ]] || ! probe_token "$token_addr"; then
                ok=0
            fi
        fi
        if [[ $ok -eq 1 ]] && wait_registry "$addr" "$rpid"; then
            echo "$addr"
            return 0
        fi
        log "restarting (not answering, or settings changed)"
    fi
    stop

    command -v docker-registry >/dev/null || {
        log "docker-registry not installed (run setup-deps.sh)"
        exit 1
    }
    command -v openssl >/dev/null || { log "openssl not installed"; exit 1; }

    make_certs
    rm -f "$envfile"
    if is_tls; then
        make_htpasswd
    else
        start_token_server || { stop; exit 1; }
        token_addr=$(<"$tokportfile")
    fi

    port=$(free_port)
    addr="127.0.0.1:$port"
    write_config "$port" "$token_addr"

    GOGC=$REGISTRY_GOGC setsid nohup docker-registry serve "$config" >>"$reglog" 2>&1 </dev/null &
    rpid=$!
    echo "$rpid" >"$regpidfile"
    if ! wait_registry "$addr" "$rpid"; then
        stop
        exit 1
    fi
    settings >"$settingsfile"
    write_env "$addr"
    echo "$addr"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
