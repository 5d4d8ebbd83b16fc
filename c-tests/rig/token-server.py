#!/usr/bin/env python3
"""A small Docker/OCI registry token issuer for the auth tests.

Implements the two halves of the Docker token protocol that clients use:

  GET  /token?service=S&scope=repository:NAME:pull[,push][&scope=...]
       optional HTTP Basic credentials; optional offline_token=true
       -> {"token", "access_token", "expires_in", "issued_at"}
          (+ "refresh_token" when offline_token=true and authenticated)

  POST /token  (application/x-www-form-urlencoded, OAuth2 style)
       grant_type=password       username, password, [service, scope, client_id]
       grant_type=refresh_token  refresh_token, [service, scope, client_id]
       -> {"access_token", "refresh_token", "expires_in", "issued_at",
           "token_type", "scope"}   (no "token" key, on purpose)

  GET  /healthz -> 200 "ok"

Tokens are RS256 JWTs signed with --key; the header carries either the
signing certificate chain ("x5c", default) or the libtrust key ID of the
signing key ("kid"), the two forms CNCF distribution 2.8 can check against
its auth.token.rootcertbundle.  The claims are what distribution reads:
iss, sub, aud (a single string), exp, nbf, iat, jti and access.

Access policy:
  * repositories named private or private/...: only privileged users
    (--privileged, default alice) get anything; anonymous callers and other
    users get a token whose access list has no entry for them;
  * every other repository: anyone gets "pull"; privileged users get every
    action they ask for (pull, push, delete, *);
  * registry:catalog:* : privileged users only.

Token lifetime: --expires-in (default 300 s) is what the JSON answer says.
distribution accepts a token until exp + 60 s (a fixed clock-skew leeway,
registry/auth/token/token.go), so by default the exp claim is set to
iat + expires_in - 60 to make the registry refuse the token once
expires_in has elapsed (--registry-leeway 0 gives the plain exp).

Every /token request is appended to --log as one JSON object per line:
  ts (epoch seconds), time (ISO 8601 UTC), method (GET/POST), path, query
  (raw query string), grant_type (POST only), service, scope (list, one item
  per scope; space-separated values are split), client_id, offline_token,
  access_type, account, basic_auth (GET sent an Authorization header),
  attempted_user (name given in Basic/password credentials, or the owner of
  the refresh token), user (the authenticated user, null when anonymous or
  on failure), status (HTTP status answered), access (the granted access
  list), error ("code: text" on failure), and on success jti and exp.

Python standard library only: the RSA signature is computed here from the
PEM key (PKCS#1 v1.5 over SHA-256), no third-party crypto module needed.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import http.server
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse

# --- minimal DER reader ------------------------------------------------------


def der_read(data, pos):
    """Read one DER element at pos.

    Returns (tag, start, content_start, end): start is where the element
    begins (its tag byte), end is one past its last content byte."""
    start = pos
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not supported")
    length = data[pos]
    pos += 1
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER element")
    return tag, start, pos, end


def der_children(data, content_start, end):
    """The elements inside a constructed element's content."""
    out = []
    pos = content_start
    while pos < end:
        el = der_read(data, pos)
        out.append(el)
        pos = el[3]
    return out


def der_int(data, el):
    tag, _, cs, end = el
    if tag != 0x02:
        raise ValueError(f"expected INTEGER, got tag {tag:#x}")
    return int.from_bytes(data[cs:end], "big", signed=True)


def pem_blocks(text):
    """[(label, der_bytes)] for every PEM block in text."""
    out = []
    for m in re.finditer(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", text, re.S):
        out.append((m.group(1), base64.b64decode("".join(m.group(2).split()))))
    return out


# --- RSA signing -------------------------------------------------------------

SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


class RSAKey:
    def __init__(self, n, e, d, p, q, dp, dq, qinv):
        self.n, self.e, self.d = n, e, d
        self.p, self.q, self.dp, self.dq, self.qinv = p, q, dp, dq, qinv
        self.size = (n.bit_length() + 7) // 8

    @classmethod
    def from_pem(cls, text):
        for label, der in pem_blocks(text):
            if label == "RSA PRIVATE KEY":  # PKCS#1
                return cls._from_pkcs1(der)
            if label == "PRIVATE KEY":  # PKCS#8 wrapping PKCS#1
                top = der_read(der, 0)
                kids = der_children(der, top[2], top[3])
                if len(kids) < 3 or kids[2][0] != 0x04:
                    raise ValueError("malformed PKCS#8 key")
                alg = der_children(der, kids[1][2], kids[1][3])
                rsa_oid = bytes.fromhex("06092a864886f70d010101")
                if der[alg[0][1]:alg[0][3]] != rsa_oid:
                    raise ValueError("PKCS#8 key is not an RSA key (only RS256 is supported)")
                return cls._from_pkcs1(der[kids[2][2]:kids[2][3]])
        raise ValueError("no RSA private key found in PEM")

    @classmethod
    def _from_pkcs1(cls, der):
        top = der_read(der, 0)
        ints = [der_int(der, el) for el in der_children(der, top[2], top[3])]
        if len(ints) < 9:
            raise ValueError("malformed PKCS#1 RSA key")
        return cls(*ints[1:9])

    def sign_rs256(self, message):
        digest = hashlib.sha256(message).digest()
        t = SHA256_DIGEST_INFO + digest
        if self.size < len(t) + 11:
            raise ValueError("RSA key too small")
        em = b"\x00\x01" + b"\xff" * (self.size - len(t) - 3) + b"\x00" + t
        m = int.from_bytes(em, "big")
        # CRT exponentiation, then check the result with the public key.
        s1 = pow(m, self.dp, self.p)
        s2 = pow(m, self.dq, self.q)
        h = (self.qinv * (s1 - s2)) % self.p
        s = s2 + h * self.q
        if pow(s, self.e, self.n) != m:
            raise RuntimeError("RSA signature self-check failed")
        return s.to_bytes(self.size, "big")


# --- certificates and key IDs ------------------------------------------------


def cert_spki(der):
    """DER SubjectPublicKeyInfo of an X.509 certificate."""
    cert = der_read(der, 0)
    tbs = der_children(der, cert[2], cert[3])[0]
    fields = der_children(der, tbs[2], tbs[3])
    if fields and fields[0][0] == 0xA0:  # explicit [0] version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    spki = fields[5]
    return der[spki[1]:spki[3]]


def libtrust_key_id(spki_der):
    """docker/libtrust key ID: SHA-256 of the DER public key, first 240
    bits, base32, in 12 colon-separated groups of 4."""
    b32 = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact_json(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


# --- policy ------------------------------------------------------------------


def parse_scope(scope):
    """'repository:a/b:pull,push' -> (type, class, name, [actions]) or None.
    The name may itself contain ':' (e.g. a host:port prefix), so the type
    is cut at the first ':' and the actions at the last one."""
    first = scope.find(":")
    last = scope.rfind(":")
    if first <= 0 or last == first:
        return None
    rtype = scope[:first]
    name = scope[first + 1:last]
    actions = [a for a in scope[last + 1:].split(",") if a]
    rclass = None
    m = re.fullmatch(r"([a-z0-9]+)\(([a-z0-9]+)\)", rtype)
    if m:
        rtype, rclass = m.group(1), m.group(2)
    if not name:
        return None
    return rtype, rclass, name, actions


def is_private(name):
    return name == "private" or name.startswith("private/")


def dedupe(items):
    seen = []
    for x in items:
        if x not in seen:
            seen.append(x)
    return seen


class Policy:
    def __init__(self, privileged):
        self.privileged = set(privileged)

    def grant(self, user, rtype, name, actions):
        priv = user is not None and user in self.privileged
        if rtype == "repository":
            if priv:
                return dedupe(actions)
            if is_private(name):
                return []
            return ["pull"] if ("pull" in actions or "*" in actions) else []
        if rtype == "registry" and name == "catalog":
            return dedupe(actions) if priv else []
        return []

    def access(self, user, scopes):
        out = []
        for s in scopes:
            parsed = parse_scope(s)
            if parsed is None:
                continue
            rtype, rclass, name, actions = parsed
            granted = self.grant(user, rtype, name, actions)
            if not granted:
                continue
            entry = {"type": rtype, "name": name, "actions": granted}
            if rclass:
                entry["class"] = rclass
            out.append(entry)
        return out


# --- issuer ------------------------------------------------------------------


class Issuer:
    def __init__(self, args):
        with open(args.key) as f:
            self.key = RSAKey.from_pem(f.read())
        with open(args.cert) as f:
            certs = [der for label, der in pem_blocks(f.read()) if label == "CERTIFICATE"]
        if not certs:
            raise ValueError(f"no certificate in {args.cert}")
        self.x5c = [base64.b64encode(der).decode() for der in certs]
        self.kid = libtrust_key_id(cert_spki(certs[0]))
        self.header_mode = args.jwt_header
        self.issuer = args.issuer
        self.service = args.service
        self.expires_in = args.expires_in
        self.registry_leeway = args.registry_leeway

    def header(self):
        h = {"typ": "JWT", "alg": "RS256"}
        if self.header_mode == "x5c":
            h["x5c"] = self.x5c
        else:
            h["kid"] = self.kid
        return h

    def issue(self, user, access):
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + self.expires_in - self.registry_leeway,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (b64url(compact_json(self.header())) + "." +
                         b64url(compact_json(claims))).encode()
        sig = self.key.sign_rs256(signing_input)
        token = signing_input.decode() + "." + b64url(sig)
        issued_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        return token, claims, issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- HTTP --------------------------------------------------------------------


class RequestLog:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def write(self, record):
        line = json.dumps(record, sort_keys=True) + "\n"
        with self.lock:
            with open(self.path, "a") as f:
                f.write(line)
                f.flush()


class TokenError(Exception):
    def __init__(self, status, error, description, basic_challenge=False):
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.basic_challenge = basic_challenge


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "liboci-test-token-server/1"

    # Set on the class by main().
    issuer = None
    policy = None
    users = {}
    refresh_tokens = {}
    user_refresh = {}
    request_log = None

    def log_message(self, fmt, *args):
        sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def send_json(self, status, obj, extra_headers=()):
        body = json.dumps(obj).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if url.path != "/token":
            self.send_json(404, {"error": "not_found", "error_description": url.path})
            return
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        self.handle_token("GET", url.query, query)

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if url.path != "/token":
            self.send_json(404, {"error": "not_found", "error_description": url.path})
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form = {}
        form_error = None
        if ctype != "application/x-www-form-urlencoded":
            form_error = f"Content-Type must be application/x-www-form-urlencoded, got {ctype!r}"
        else:
            try:
                form = urllib.parse.parse_qs(raw.decode("utf-8"), keep_blank_values=True,
                                             strict_parsing=False)
            except UnicodeDecodeError:
                form_error = "form body is not UTF-8"
        # Query parameters on a POST are merged under the form fields.
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        for k, v in query.items():
            form.setdefault(k, v)
        self.handle_token("POST", url.query, form, form_error)

    def basic_credentials(self):
        """(user, password) from an Authorization: Basic header, None when
        there is no Authorization header; raises TokenError otherwise."""
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise TokenError(401, "unauthorized",
                             f"unsupported Authorization scheme {scheme!r} (only Basic)",
                             basic_challenge=True)
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise TokenError(401, "unauthorized", "malformed Basic credentials",
                             basic_challenge=True)
        user, sep, password = decoded.partition(":")
        if not sep:
            raise TokenError(401, "unauthorized", "malformed Basic credentials",
                             basic_challenge=True)
        return user, password

    def handle_token(self, method, raw_query, params, form_error=None):
        def one(name):
            vals = params.get(name)
            return vals[0] if vals else None

        record = {
            "ts": round(time.time(), 6),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "method": method,
            "path": "/token",
            "query": raw_query,
            "grant_type": one("grant_type") if method == "POST" else None,
            "service": one("service"),
            "scope": [s for v in params.get("scope", []) for s in v.split()],
            "client_id": one("client_id"),
            "offline_token": one("offline_token"),
            "access_type": one("access_type"),
            "account": one("account"),
            "basic_auth": self.headers.get("Authorization") is not None and method == "GET",
            "user": None,
            "attempted_user": None,
            "status": None,
            "access": None,
            "error": None,
        }
        self._record = record
        try:
            if form_error:
                raise TokenError(400, "invalid_request", form_error)
            service = record["service"]
            if service is not None and service != self.issuer.service:
                raise TokenError(400, "invalid_request",
                                 f"unknown service {service!r} (this issuer serves "
                                 f"{self.issuer.service!r})")
            refresh = None
            if method == "GET":
                creds = self.basic_credentials()
                user = None
                if creds is not None:
                    user = self.check_password(*creds, basic=True)
                if user is not None and (one("offline_token") or "").lower() == "true":
                    refresh = self.user_refresh.get(user)
            else:
                grant = record["grant_type"]
                if grant == "password":
                    username, password = one("username"), one("password")
                    if username is None or password is None:
                        raise TokenError(400, "invalid_request",
                                         "grant_type=password needs username and password")
                    user = self.check_password(username, password, basic=False)
                elif grant == "refresh_token":
                    rt = one("refresh_token")
                    if not rt:
                        raise TokenError(400, "invalid_request",
                                         "grant_type=refresh_token needs refresh_token")
                    user = self.refresh_tokens.get(rt)
                    record["attempted_user"] = user
                    if user is None:
                        raise TokenError(400, "invalid_grant", "unknown refresh token")
                elif grant is None:
                    raise TokenError(400, "invalid_request", "missing grant_type")
                else:
                    raise TokenError(400, "unsupported_grant_type",
                                     f"unsupported grant_type {grant!r}")
                refresh = self.user_refresh.get(user)
            record["user"] = user
            access = self.policy.access(user, record["scope"])
            token, claims, issued_at = self.issuer.issue(user, access)
            record["access"] = access
            record["jti"] = claims["jti"]
            record["exp"] = claims["exp"]
            if method == "GET":
                answer = {"token": token, "access_token": token,
                          "expires_in": self.issuer.expires_in, "issued_at": issued_at}
                if refresh:
                    answer["refresh_token"] = refresh
            else:
                answer = {"access_token": token, "token_type": "Bearer",
                          "expires_in": self.issuer.expires_in, "issued_at": issued_at,
                          "scope": " ".join(record["scope"])}
                if refresh:
                    answer["refresh_token"] = refresh
            record["status"] = 200
            self.request_log.write(record)
            self.send_json(200, answer)
        except TokenError as e:
            record["status"] = e.status
            record["error"] = f"{e.error}: {e.description}"
            self.request_log.write(record)
            headers = []
            if e.basic_challenge:
                headers.append(("WWW-Authenticate", 'Basic realm="liboci-test-token-server"'))
            self.send_json(e.status, {"error": e.error, "error_description": e.description,
                                      "details": e.description}, headers)

    def check_password(self, user, password, basic):
        self._record["attempted_user"] = user
        want = self.users.get(user)
        if want is None or not secrets.compare_digest(want.encode(), password.encode()):
            if basic:
                raise TokenError(401, "unauthorized", "incorrect username or password",
                                 basic_challenge=True)
            raise TokenError(400, "invalid_grant", "incorrect username or password")
        return user


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def parse_pairs(values, what):
    out = {}
    for v in values:
        k, sep, rest = v.partition(":" if what == "user" else "=")
        if not sep or not k or not rest:
            raise SystemExit(f"token-server: bad --{what} {v!r}")
        out[k] = rest
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:0",
                    help="HOST:PORT to bind (port 0: pick a free one); loopback only")
    ap.add_argument("--port-file", help="write the bound HOST:PORT here once listening")
    ap.add_argument("--key", required=True, help="PEM RSA private key that signs tokens")
    ap.add_argument("--cert", required=True,
                    help="PEM certificate(s) of the signing key, leaf first (x5c chain)")
    ap.add_argument("--issuer", default="liboci-test-token-issuer")
    ap.add_argument("--service", default="liboci-test-registry")
    ap.add_argument("--expires-in", type=int, default=300, help="token lifetime, seconds")
    ap.add_argument("--registry-leeway", type=int, default=60,
                    help="subtracted from the exp claim to cancel the registry's own "
                         "clock-skew leeway (distribution 2.8: 60 s)")
    ap.add_argument("--jwt-header", choices=("x5c", "kid"), default="x5c",
                    help="how the JWT header names the signing key")
    ap.add_argument("--user", action="append", default=[],
                    help="NAME:PASSWORD (repeatable; default alice and bob)")
    ap.add_argument("--privileged", action="append", default=[],
                    help="user who may pull private/ and push (repeatable; default alice)")
    ap.add_argument("--refresh-token", action="append", default=[],
                    help="TOKEN=USER fixed refresh/identity token (repeatable; default "
                         "alice-refresh-token=alice, bob-refresh-token=bob)")
    ap.add_argument("--log", required=True, help="JSON-lines request log (appended)")
    args = ap.parse_args()

    if args.expires_in <= 0:
        raise SystemExit("token-server: --expires-in must be positive")

    host, _, port = args.listen.rpartition(":")
    if not (host.startswith("127.") or host == "localhost"):
        raise SystemExit("token-server: refusing to listen on a non-loopback address")

    users = parse_pairs(args.user or ["alice:s3cret-pass", "bob:b0b-Passw0rd"], "user")
    refresh = parse_pairs(args.refresh_token or
                          ["alice-refresh-token=alice", "bob-refresh-token=bob"],
                          "refresh-token")
    for rt, user in refresh.items():
        if user not in users:
            raise SystemExit(f"token-server: refresh token for unknown user {user!r}")
    user_refresh = {}
    for rt, user in refresh.items():
        user_refresh.setdefault(user, rt)

    Handler.issuer = Issuer(args)
    Handler.policy = Policy(args.privileged or ["alice"])
    Handler.users = users
    Handler.refresh_tokens = refresh
    Handler.user_refresh = user_refresh
    Handler.request_log = RequestLog(args.log)

    srv = Server((host, int(port)), Handler)
    bound = f"{srv.server_address[0]}:{srv.server_address[1]}"
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(bound + "\n")
        os.replace(tmp, args.port_file)
    print(f"token-server: listening on {bound}, kid {Handler.issuer.kid}, "
          f"header {args.jwt_header}, expires_in {args.expires_in}", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
