#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Auth tests: the library against the real registry configured with
htpasswd + TLS (private CA) and with token auth (token-server.py).

Usage: auth_tests.py WORKDIR FETCH_BINARY

Each case runs one `fetch` (c-tests/harness/fetch.c) with its own options and
environment (a temporary HOME, DOCKER_CONFIG, REGISTRY_AUTH_FILE,
XDG_RUNTIME_DIR, PATH with credential helpers) and checks the bytes (by
digest) or the errno and the message. No case may leak a password into
the message.
"""

import base64
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

RIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rig")
sys.path.insert(0, RIG)
import envfile  # noqa: E402  (c-tests/rig/envfile.py)

WORK, FETCH = sys.argv[1], sys.argv[2]


def layer(path, repo):
    with open(path) as f:
        for line in f:
            p = line.split()
            if p and p[0] == "layer" and p[1].endswith(f"/{repo}:v1"):
                return p[4], int(p[5])
    raise SystemExit(f"no {repo} in {path}")


BASIC = envfile.read(os.path.join(WORK, "auth-basic-tls.env"))
TOKEN = envfile.read(os.path.join(WORK, "auth-token.env"))
B_PRIV = layer(os.path.join(WORK, "auth-basic-tls-fixtures.txt"), "private/app")[0]
T_PRIV = layer(os.path.join(WORK, "auth-token-fixtures.txt"), "private/app")[0]
T_PUB = layer(os.path.join(WORK, "auth-token-fixtures.txt"), "public/app")[0]
SECRETS = [BASIC["AUTH_PASS"], BASIC["AUTH_PASS2"], TOKEN["AUTH_REFRESH_TOKEN"],
           "wrong-pass", "helper-secret"]

passed = failed = 0
SANDBOX = tempfile.mkdtemp(prefix="oci-auth-tests-")


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


def b64(s):
    return base64.b64encode(s.encode()).decode()


def tokens_logged():
    try:
        with open(TOKEN["TOKEN_LOG"]) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def sandbox(name, files=None, helpers=None):
    """A fresh directory tree for one case: returns the environment."""
    safe = "".join(c if c.isalnum() else "_" for c in name)[:40]
    root = os.path.join(SANDBOX, safe)
    os.makedirs(os.path.join(root, "home"), exist_ok=True)
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    env = {"PATH": os.path.join(root, "bin") + ":/usr/bin:/bin",
           "HOME": os.path.join(root, "home")}
    for rel, content in (files or {}).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
    for hname, script in (helpers or {}).items():
        path = os.path.join(root, "bin", f"docker-credential-{hname}")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + script)
        os.chmod(path, 0o755)
    return root, env


def case(name, ref, options, expect, files=None, helpers=None, env_extra=None,
         mode=("seq",), extra=None):
    root, env = sandbox(name, files, helpers)
    for k, v in (env_extra or {}).items():
        env[k] = v.replace("@ROOT@", root)
    before = len(tokens_logged())
    t0 = time.monotonic()
    p = subprocess.run([FETCH, ref, options, *mode], capture_output=True, text=True,
                       env=env, timeout=120)
    secs = time.monotonic() - t0
    out = p.stdout.strip()
    new_tokens = tokens_logged()[before:]
    if expect[0] == "ok":
        check(name, out.startswith(f"ok {expect[1]} ") or out.startswith("ok random"),
              f"got '{out}'")
    else:
        parts = out.split(" ", 2)
        ok = (len(parts) == 3 and parts[0] == "error" and int(parts[1]) == expect[1]
              and all(s in parts[2] for s in expect[2:]))
        check(name, ok, f"want error {expect[1]} with {expect[2:]}, got '{out}'")
    leaked = [s for s in SECRETS if s in out or s in p.stderr]
    check(f"{name}: no secret in the output", not leaked, f"leaked {leaked}")
    if extra:
        for what, cond in extra(new_tokens, secs):
            check(f"{name}: {what}", cond, json.dumps(new_tokens)[:600])


def main():
    breg, ca = BASIC["AUTH_REGISTRY"], BASIC["AUTH_CA"]
    user, pw = BASIC["AUTH_USER"], BASIC["AUTH_PASS"]
    bpriv = f"{breg}/private/app:v1"
    good = f"username={user},password={pw},ca={ca}"

    # --- htpasswd + TLS with a private CA
    case("basic: right credentials read the layer", bpriv, good, ("ok", B_PRIV))
    case("basic: auth= (base64 user:pass)", bpriv, f"auth={b64(user + ':' + pw)},ca={ca}",
         ("ok", B_PRIV))
    case("basic: wrong password is EACCES", bpriv,
         f"username={user},password=wrong-pass,ca={ca}",
         ("error", errno.EACCES, "credentials were refused", "private/app", "HTTP 401"))
    case("basic: no credentials is EACCES naming the repository", bpriv, f"ca={ca}",
         ("error", errno.EACCES, "credentials are needed", "private/app", breg))
    case("basic: no CA is a TLS error naming the ca= option", bpriv,
         f"username={user},password={pw}", ("error", errno.EPROTO, "ca="))
    case("basic: tls_verify=0 reads without the CA", bpriv,
         f"username={user},password={pw},tls_verify=0", ("ok", B_PRIV))
    case("basic: localhost name also verifies", f"localhost:{breg.split(':')[1]}/private/app:v1",
         good, ("ok", B_PRIV))

    auth_entry = {"auths": {breg: {"auth": b64(f"{user}:{pw}")}}}
    case("source: ~/.docker/config.json auths.auth", bpriv, f"ca={ca}", ("ok", B_PRIV),
         files={"home/.docker/config.json": auth_entry})
    case("source: $DOCKER_CONFIG/config.json username/password", bpriv, f"ca={ca}",
         ("ok", B_PRIV),
         files={"dc/config.json": {"auths": {f"https://{breg}/v2/":
                                              {"username": user, "password": pw}}}},
         env_extra={"DOCKER_CONFIG": "@ROOT@/dc"})
    case("source: $REGISTRY_AUTH_FILE wins over a wrong docker config", bpriv, f"ca={ca}",
         ("ok", B_PRIV),
         files={"authfile.json": auth_entry,
                "home/.docker/config.json": {"auths": {breg: {"auth": b64(f"{user}:wrong-pass")}}}},
         env_extra={"REGISTRY_AUTH_FILE": "@ROOT@/authfile.json"})
    case("source: $XDG_RUNTIME_DIR/containers/auth.json", bpriv, f"ca={ca}", ("ok", B_PRIV),
         files={"run/containers/auth.json": auth_entry},
         env_extra={"XDG_RUNTIME_DIR": "@ROOT@/run"})
    case("source: the options win over the files", bpriv, good, ("ok", B_PRIV),
         files={"home/.docker/config.json": {"auths": {breg: {"auth": b64(f"{user}:wrong-pass")}}}})
    case("source: a namespace key (host/private) wins over the host key", bpriv, f"ca={ca}",
         ("ok", B_PRIV),
         files={"home/.docker/config.json": {"auths": {
             breg: {"auth": b64(f"{user}:wrong-pass")},
             f"{breg}/private": {"auth": b64(f"{user}:{pw}")}}}})
    helper_ok = (f'read server; [ "$server" = "{breg}" ] || exit 3\n'
                 f'printf \'{{"ServerURL":"%s","Username":"{user}","Secret":"{pw}"}}\' "$server"\n')
    case("source: credHelpers runs docker-credential-test", bpriv, f"ca={ca}", ("ok", B_PRIV),
         files={"home/.docker/config.json": {"credHelpers": {breg: "test"}}},
         helpers={"test": helper_ok})
    case("source: credsStore is the default helper", bpriv, f"ca={ca}", ("ok", B_PRIV),
         files={"home/.docker/config.json": {"credsStore": "test"}},
         helpers={"test": helper_ok})
    case("source: a failing helper is a clear error", bpriv, f"ca={ca}",
         ("error", errno.EACCES, "docker-credential-broken", "failed"),
         files={"home/.docker/config.json": {"credsStore": "broken"}},
         helpers={"broken": "echo 'keychain locked' >&2; exit 2\n"})
    case("source: a helper that hangs times out", bpriv, f"ca={ca}",
         ("error", errno.ETIMEDOUT, "docker-credential-slow", "did not answer"),
         files={"home/.docker/config.json": {"credsStore": "slow"}},
         helpers={"slow": "sleep 60\n"},
         extra=lambda toks, secs: [("within about 10 s", secs < 20)])
    case("source: a missing helper is a clear error", bpriv, f"ca={ca}",
         ("error", errno.EACCES, "docker-credential-absent"),
         files={"home/.docker/config.json": {"credsStore": "absent"}})

    case("basic: a failure with tls_verify=0 carries the warning", bpriv,
         f"username={user},password=wrong-pass,tls_verify=0",
         ("error", errno.EACCES, "tls_verify=0", "credentials were refused"))

    # HTTP/2 (the registry offers it over TLS) must not fold parallel Range
    # requests into streams of one connection: a long link limits each
    # TCP connection, and parallel requests exist to use several. Through
    # c-tests/rig/wanproxy.py, which logs each connection it accepts.
    def carriers(path):
        """Connections that brought more than a chunk (8 KiB) of body:
        others, opened at the start beside the manifest's, carry only a
        TLS handshake and a short answer."""
        for _ in range(100):
            lines = open(path).read().split("\n")
            accepted = sum(ln.startswith("accept ") for ln in lines)
            closed = [int(ln.split()[2]) for ln in lines if ln.startswith("close ")]
            if len(closed) >= accepted:
                break
            time.sleep(0.05)
        return sum(b > 8192 for b in closed)

    port_file = os.path.join(SANDBOX, "wanproxy.port")
    log_path = os.path.join(SANDBOX, "wanproxy.log")
    with open(log_path, "w") as log:
        proxy = subprocess.Popen(
            [sys.executable, os.path.join(RIG, "wanproxy.py"), "--upstream", breg,
             "--rtt-ms", "2", "--port-file", port_file],
            stderr=log, env=dict(os.environ, WANPROXY_LOG="1"))
    try:
        for _ in range(100):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        with open(port_file) as f:
            via = f.read().strip()
        case("basic: HTTP/2 offered, 4 connections read the layer in parallel",
             f"{via}/private/app:v1", f"{good},connections=4,chunk=8K,block=4K",
             ("ok", B_PRIV), mode=("seq", "4096"),
             extra=lambda toks, secs: [
                 ("on connections of their own (at least 3), not HTTP/2 streams of one",
                  carriers(log_path) >= 3)])
    finally:
        proxy.terminate()
        proxy.wait()

    # --- mutual TLS (the same storage behind a registry that wants a
    # client certificate signed by its CA)
    mtls_env = os.path.join(WORK, "auth-mtls.env")
    if os.path.exists(mtls_env):
        M = envfile.read(mtls_env)
        mpriv = f"{M['AUTH_REGISTRY']}/private/app:v1"
        mca, mcert, mkey = M["AUTH_CA"], M["AUTH_CLIENT_CERT"], M["AUTH_CLIENT_KEY"]
        case("mtls: cert= and key= read the layer", mpriv,
             f"username={user},password={pw},ca={mca},cert={mcert},key={mkey}", ("ok", B_PRIV))
        case("mtls: without a client certificate the error names cert=/key=", mpriv,
             f"username={user},password={pw},ca={mca}",
             ("error", errno.ECONNRESET, "client certificate", "cert="))
        case("mtls: cert= without key= is refused", mpriv, f"ca={mca},cert={mcert}",
             ("error", errno.EINVAL, "'cert' and 'key' go together"))

    # --- token auth
    treg = TOKEN["AUTH_REGISTRY"]
    tpriv, tpub = f"{treg}/private/app:v1", f"{treg}/public/app:v1"
    case("token: a public namespace works anonymously", tpub, "", ("ok", T_PUB),
         extra=lambda toks, secs: [
             ("an anonymous GET token for pull only",
              any(t["method"] == "GET" and not t["basic_auth"]
                  and t["scope"] == ["repository:public/app:pull"] for t in toks))])
    case("token: anonymous access to a protected repository fails clearly", tpriv, "",
         ("error", errno.EACCES, "credentials are needed", "private/app", treg))
    case("token: credentials give a token for the private repository", tpriv,
         f"username={user},password={pw}", ("ok", T_PRIV),
         extra=lambda toks, secs: [
             ("GET with basic credentials", any(t["basic_auth"] and t["user"] == user
                                                for t in toks))])
    case("token: wrong credentials are refused by the token server", tpriv,
         f"username={user},password=wrong-pass",
         ("error", errno.EACCES, "token server refused"))
    case("token: an identity token is used with the OAuth2 POST", tpriv, "", ("ok", T_PRIV),
         files={"home/.docker/config.json": {"auths": {treg: {
             "identitytoken": TOKEN["AUTH_REFRESH_TOKEN"]}}}},
         extra=lambda toks, secs: [
             ("POST grant_type=refresh_token", any(
                 t["method"] == "POST" and t["grant_type"] == "refresh_token" for t in toks))])
    life = int(TOKEN.get("TOKEN_EXPIRES_IN", "300"))
    if life <= 10:
        blob = os.path.join(WORK, "blobs", "sha256", T_PRIV.split(":")[1])
        case(f"token: {life} s tokens while reading slowly: renewed, every read right",
             tpriv, f"username={user},password={pw},block=4K,readahead=4K,cache_mem=8K,"
             "spill=none,fill=none",
             ("ok", T_PRIV), mode=("random", blob, "10"),
             env_extra={"FETCH_DELAY_MS": str(life * 1000 // 2 + 300)},
             extra=lambda toks, secs: [("more than one token", len(toks) >= 2)])

    shutil.rmtree(SANDBOX, ignore_errors=True)
    print(f"auth tests: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
