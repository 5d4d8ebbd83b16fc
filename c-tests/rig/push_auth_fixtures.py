#!/usr/bin/env python3
"""Push the auth test images to the registries started by auth-registry.sh.

Usage: push_auth_fixtures.py --work WORKDIR [--mode basic-tls|token ...]

For each mode (default: every WORKDIR/auth-MODE.env that exists) this reads
WORKDIR/auth-MODE.env, pushes

    private/app:v1   and   public/app:v1

(each one OCI image manifest, linux/amd64, one small gzip layer) as alice,
and writes WORKDIR/auth-MODE-fixtures.txt with `registry`, `manifest` and
`layer` records in the format of push_fixtures.py's fixtures.txt:

    layer <ref> <platform> <index> <digest> <size> <mediaType>

basic-tls: HTTPS verified against AUTH_CA, HTTP Basic credentials.
token:     the registry's Bearer challenge is answered with a token from
           TOKEN_REALM (GET with HTTP Basic credentials and a
           repository:NAME:pull,push scope).

Every blob is also saved under WORKDIR/blobs/sha256/<hex>.  Content is
derived from fixed seeds, so digests are the same on every run.
Python standard library only.
"""

import argparse
import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import re
import ssl
import sys
import tarfile
import urllib.parse

import envfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

MTIME = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
KIB = 1024

REPOS = ("private/app", "public/app")
TAG = "v1"


def log(msg):
    print(f"push_auth_fixtures: {msg}", file=sys.stderr, flush=True)


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class PushError(Exception):
    pass


# --- content -----------------------------------------------------------------


def build_image(repo):
    """(blobs, manifest_bytes, layer_descriptor) for one small image.
    blobs maps digest -> bytes for the config and the layer."""
    rng = random.Random(hashlib.sha256(f"auth-fixture|{repo}".encode()).digest())
    top = "auth-" + repo.replace("/", "-")
    payload = rng.randbytes(40 * KIB + len(repo) * 97)
    note = (f"auth fixture {repo}\n" +
            "".join(f"line {i:03d} {rng.getrandbits(64):016x}\n" for i in range(64))).encode()

    def member(name, size=0, kind=tarfile.REGTYPE, mode=0o644):
        ti = tarfile.TarInfo(name)
        ti.type, ti.size, ti.mode, ti.mtime = kind, size, mode, MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member(top + "/", kind=tarfile.DIRTYPE, mode=0o755))
        tar.addfile(member(f"{top}/payload.bin", len(payload)), io.BytesIO(payload))
        tar.addfile(member(f"{top}/README", len(note)), io.BytesIO(note))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=6) as f:
        f.write(tar_bytes)
    layer = gz.getvalue()

    config = {
        "created": CREATED,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Labels": {"fixture": repo}},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(tar_bytes)]},
        "history": [{"created": CREATED, "created_by": f"auth fixture {repo}"}],
    }
    config_bytes = json.dumps(config, indent=2).encode() + b"\n"
    layer_desc = {"mediaType": OCI_LAYER_GZIP, "digest": digest_of(layer), "size": len(layer)}
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config_bytes),
                   "size": len(config_bytes)},
        "layers": [layer_desc],
    }
    manifest_bytes = json.dumps(manifest, indent=2).encode() + b"\n"
    blobs = {digest_of(config_bytes): config_bytes, layer_desc["digest"]: layer}
    return blobs, manifest_bytes, layer_desc


def save_blob(work, data):
    d = os.path.join(work, "blobs", "sha256")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, hashlib.sha256(data).hexdigest())
    if not (os.path.exists(path) and os.path.getsize(path) == len(data)):
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)


# --- registry client with Basic / Bearer auth ----------------------------------


def parse_challenge(header):
    """'Bearer realm="x",service="y"' -> ('bearer', {'realm': 'x', ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in re.finditer(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return scheme.lower(), params


class Client:
    def __init__(self, env):
        self.env = env
        self.addr = env["AUTH_REGISTRY"]
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)
        self.tls = env.get("AUTH_URL", "").startswith("https://")
        self.ctx = ssl.create_default_context(cafile=env["AUTH_CA"]) if self.tls else None
        self.user = env["AUTH_USER"]
        self.password = env["AUTH_PASS"]
        self.basic = "Basic " + base64.b64encode(
            f"{self.user}:{self.password}".encode()).decode()
        self.use_basic = False
        self.tokens = {}  # scope -> bearer token
        self.token_requests = 0

    def _conn(self, host, port, tls):
        if tls:
            return http.client.HTTPSConnection(host, port, timeout=60, context=self.ctx)
        return http.client.HTTPConnection(host, port, timeout=60)

    def _send(self, method, path, body, headers):
        conn = self._conn(self.host, self.port, self.tls)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def fetch_token(self, params, scope):
        realm = urllib.parse.urlsplit(params["realm"])
        if realm.hostname not in ("127.0.0.1", "localhost"):
            raise PushError(f"refusing non-loopback token realm {params['realm']}")
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        path = realm.path + "?" + (realm.query + "&" if realm.query else "") + \
            urllib.parse.urlencode(query)
        conn = self._conn(realm.hostname, realm.port or (443 if realm.scheme == "https" else 80),
                          realm.scheme == "https")
        try:
            conn.request("GET", path, headers={"Authorization": self.basic})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.token_requests += 1
        if resp.status != 200:
            raise PushError(f"token request {path}: HTTP {resp.status}: {data[:300]!r}")
        answer = json.loads(data)
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise PushError(f"token answer without a token: {answer}")
        return token

    def request(self, method, path, scope, body=b"", headers=None, expect=(200,)):
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Length", str(len(body)))
        for attempt in range(2):
            h = dict(hdrs)
            if self.use_basic:
                h["Authorization"] = self.basic
            elif scope in self.tokens:
                h["Authorization"] = "Bearer " + self.tokens[scope]
            status, rh, data = self._send(method, path, body, h)
            if status != 401 or attempt == 1:
                break
            scheme, params = parse_challenge(rh.get("WWW-Authenticate", ""))
            if scheme == "basic":
                if not self.tls:
                    raise PushError("refusing to send Basic credentials over plain HTTP")
                self.use_basic = True
            elif scheme == "bearer":
                self.tokens[scope] = self.fetch_token(params, scope)
            else:
                raise PushError(f"{method} {path}: unsupported challenge {rh.get('WWW-Authenticate')!r}")
        if status not in expect:
            raise PushError(f"{method} {path}: HTTP {status}: {data[:400]!r}")
        return status, rh, data

    def push_blob(self, repo, digest, data):
        scope = f"repository:{repo}:pull,push"
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope, body=None,
                                    expect=(200, 404))
        if status == 200:
            return False
        _, rh, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope, expect=(202,))
        loc = urllib.parse.urlsplit(rh["Location"])
        q = urllib.parse.parse_qsl(loc.query, keep_blank_values=True)
        q.append(("digest", digest))
        put = loc.path + "?" + urllib.parse.urlencode(q)
        _, rh, _ = self.request("PUT", put, scope, body=data,
                                headers={"Content-Type": "application/octet-stream"},
                                expect=(201,))
        got = rh.get("Docker-Content-Digest")
        if got and got != digest:
            raise PushError(f"blob {digest}: registry says {got}")
        return True

    def put_manifest(self, repo, ref, body):
        scope = f"repository:{repo}:pull,push"
        _, rh, _ = self.request("PUT", f"/v2/{repo}/manifests/{ref}", scope, body=body,
                                headers={"Content-Type": OCI_MANIFEST}, expect=(201,))
        got = rh.get("Docker-Content-Digest")
        if got and got != digest_of(body):
            raise PushError(f"manifest {repo}:{ref}: registry says {got}")

    def get_manifest(self, repo, ref):
        _, rh, data = self.request("GET", f"/v2/{repo}/manifests/{ref}",
                                   f"repository:{repo}:pull,push", body=None,
                                   headers={"Accept": OCI_MANIFEST})
        return data


# --- main ----------------------------------------------------------------------


def push_mode(work, mode):
    env = envfile.read(os.path.join(work, f"auth-{mode}.env"))
    client = Client(env)
    addr = env["AUTH_REGISTRY"]
    lines = [
        "# generated by c-tests/rig/push_auth_fixtures.py; fields separated by single spaces",
        "# registry <host:port>",
        "# layer <ref> <platform> <index> <digest> <size> <mediaType>",
        "# manifest <ref> <platform> <digest>",
        f"registry {addr}",
    ]
    uploaded = 0
    for repo in REPOS:
        blobs, manifest, layer = build_image(repo)
        for digest, data in blobs.items():
            save_blob(work, data)
            uploaded += client.push_blob(repo, digest, data)
        save_blob(work, manifest)
        client.put_manifest(repo, TAG, manifest)
        if client.get_manifest(repo, TAG) != manifest:
            raise PushError(f"{repo}:{TAG}: manifest read back differs")
        ref = f"{addr}/{repo}:{TAG}"
        lines.append(f"manifest {ref} linux/amd64 {digest_of(manifest)}")
        lines.append(f"layer {ref} linux/amd64 0 {layer['digest']} {layer['size']} "
                     f"{layer['mediaType']}")
    out = os.path.join(work, f"auth-{mode}-fixtures.txt")
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(out + ".tmp", out)
    log(f"{mode}: pushed {', '.join(REPOS)} to {addr} ({uploaded} blobs uploaded, "
        f"{client.token_requests} token requests); wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="work directory given to auth-registry.sh")
    ap.add_argument("--mode", action="append", choices=("basic-tls", "token"),
                    help="registry to push to (repeatable; default: every auth-*.env found)")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    modes = args.mode or [m for m in ("basic-tls", "token")
                          if os.path.exists(os.path.join(work, f"auth-{m}.env"))]
    if not modes:
        raise PushError(f"no auth-*.env in {work}: run auth-registry.sh start first")
    for mode in modes:
        push_mode(work, mode)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (PushError, OSError, ValueError, KeyError, ssl.SSLError) as e:
        log(f"error: {e!r}")
        sys.exit(1)
