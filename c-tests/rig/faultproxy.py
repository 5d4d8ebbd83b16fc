#!/usr/bin/env python3
"""Fault-injecting HTTP proxy for the liboci_registry tests.

Usage: faultproxy.py --upstream 127.0.0.1:PORT --state-file FILE [--quiet]

Listens on two ephemeral ports on 127.0.0.1:

  proxy  forwards every request to the upstream registry, unless a rule
         says otherwise;
  cdn    stands for another host (object storage behind a redirect): it
         fetches the requested path from the upstream registry, without
         the Authorization header (whether one arrived is recorded).

When both listen, FILE is written atomically with
  {"proxy": "127.0.0.1:P1", "cdn": "localhost:P2", "pid": N, "upstream": ...}
(the cdn address uses the name localhost so that an HTTP client sees a
different host from 127.0.0.1).  SIGTERM/SIGINT stop the proxy and remove
FILE.

Control API (main port only; never forwarded):
  PUT    /__proxy/rules   JSON list of rules: replaces the rule set
  POST   /__proxy/rules   JSON rule or list of rules: appended
  GET    /__proxy/rules   the rules, each with "_seen"/"_applied" counters
  DELETE /__proxy/rules   clears the rules
  GET    /__proxy/stats   JSON counters (see Stats.snapshot)
  DELETE /__proxy/stats   resets the counters
  GET    /__proxy/token   a stand-in Bearer token issuer: {"token": ...}
  GET    /__proxy/tokens  how many tokens were issued, and their queries

Rule fields:
  match     python regex, re.search()ed in the request path (with query)
  method    optional: "GET" or ["GET", "HEAD"]
  listener  optional: "proxy" (default), "cdn" or "any"
  auth      optional: true/false: only requests with/without Authorization
  times     apply to the first N matching requests (default 1; -1 forever)
  skip      let the first K matching requests pass untouched (no other
            rule is consulted for them) before applying
  action    one of the actions below, with its parameters

Actions:
  status        answer `code` without forwarding; optional `headers` dict,
                optional `body` string (default: a distribution-style JSON
                error body)
  drop_after    forward; send the headers and the first `bytes` body bytes,
                then close abruptly (`how`: "reset" (default, TCP RST) or
                "fin")
  stall         forward; send the first `bytes` body bytes (default 0), sleep
                `seconds`, then `then`: "continue" (default) or "close"
                (closed like drop_after, `how` applies)
  throttle      forward the body at at most `rate` bytes/second
  corrupt       forward, XOR 0xFF the body byte at `offset` (negative:
                from the end, when the length is known)
  ignore_range  forward without Range/If-Range; the upstream's 200 and whole
                body pass through
  redirect      answer `code` (default 307) with Location:
                http://<cdn address><path and query>, or
                <target><path and query> when `target` is given
  truncate      forward; declare the upstream Content-Length, send only the
                first `bytes` body bytes, then close (FIN)
  extend        forward; append `bytes` garbage bytes to the body (the
                Content-Length grows accordingly)
  header        forward; add/replace response headers from `headers`
                (a null value removes the header)
  delay         sleep `seconds`, then forward normally
  close         read the request, then close without answering (`how`:
                "fin" (default) or "reset")

Python standard library only.
"""

import argparse
import fcntl
import http.client
import http.server
import json
import os
import re
import signal
import socket
import struct
import sys
import termios
import threading
import time
import urllib.parse
from collections import deque

BUF_SIZE = 1 << 20
UPSTREAM_TIMEOUT = 300
STATS_KEEP = 500

# Never copied between the client and upstream connections.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
    "trailer", "trailers", "upgrade", "expect", "content-length",
    "proxy-authorization", "proxy-authenticate",
}

ACTIONS = {
    "status", "drop_after", "stall", "throttle", "corrupt", "ignore_range",
    "redirect", "truncate", "extend", "header", "delay", "close",
}

ERROR_CODES = {
    400: ("BAD_REQUEST", "bad request"),
    401: ("UNAUTHORIZED", "authentication required"),
    403: ("DENIED", "requested access to the resource is denied"),
    405: ("UNSUPPORTED", "the operation is unsupported"),
    416: ("RANGE_INVALID", "requested range not satisfiable"),
    429: ("TOOMANYREQUESTS", "too many requests"),
    503: ("UNAVAILABLE", "service unavailable"),
}

GARBAGE = b"faultproxy-garbage\n"


def log(msg):
    if not QUIET:
        print(f"faultproxy: {msg}", file=sys.stderr, flush=True)


QUIET = False
TOKEN_LOCK = threading.Lock()
TOKENS = {"issued": 0, "queries": []}


def error_body(code, path):
    if code == 404:
        if "/blobs/" in path:
            ecode, msg = "BLOB_UNKNOWN", "blob unknown to registry"
        elif "/manifests/" in path:
            ecode, msg = "MANIFEST_UNKNOWN", "manifest unknown"
        else:
            ecode, msg = "NAME_UNKNOWN", "repository name not known to registry"
    else:
        ecode, msg = ERROR_CODES.get(code, ("UNKNOWN", "unknown error"))
    return json.dumps({"errors": [{"code": ecode, "message": msg,
                                   "detail": "injected by faultproxy"}]})


# --- rules -------------------------------------------------------------------


class RuleError(ValueError):
    pass


def _num(rule, key, default, kind=int, minimum=None):
    v = rule.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RuleError(f"{key!r} must be a number")
    v = kind(v)
    if minimum is not None and v < minimum:
        raise RuleError(f"{key!r} must be >= {minimum}")
    return v


def compile_rule(raw):
    """Validate a rule dict; return an internal copy."""
    if not isinstance(raw, dict):
        raise RuleError("a rule must be a JSON object")
    rule = dict(raw)
    action = rule.get("action")
    if action not in ACTIONS:
        raise RuleError(f"unknown action {action!r}; known: {sorted(ACTIONS)}")
    try:
        rule["_re"] = re.compile(rule.get("match", ""))
    except (re.error, TypeError) as e:
        raise RuleError(f"bad match regex: {e}")
    m = rule.get("method")
    if m is None:
        rule["_methods"] = None
    elif isinstance(m, str):
        rule["_methods"] = {m.upper()}
    elif isinstance(m, list) and all(isinstance(x, str) for x in m):
        rule["_methods"] = {x.upper() for x in m}
    else:
        raise RuleError("'method' must be a string or a list of strings")
    if rule.get("listener", "proxy") not in ("proxy", "cdn", "any"):
        raise RuleError("'listener' must be proxy, cdn or any")
    if "auth" in rule and not isinstance(rule["auth"], bool):
        raise RuleError("'auth' must be true or false")
    rule["times"] = _num(rule, "times", 1, minimum=-1)
    rule["skip"] = _num(rule, "skip", 0, minimum=0)
    if action == "status":
        rule["code"] = _num(rule, "code", 500, minimum=100)
        if rule["code"] > 999:
            raise RuleError("'code' must be a 3-digit status")
        if "body" in rule and not isinstance(rule["body"], str):
            raise RuleError("'body' must be a string")
    if action in ("drop_after", "truncate", "extend"):
        rule["bytes"] = _num(rule, "bytes", 0, minimum=0)
    if action == "stall":
        rule["bytes"] = _num(rule, "bytes", 0, minimum=0)
        rule["seconds"] = _num(rule, "seconds", 1, kind=float, minimum=0)
        if rule.get("then", "continue") not in ("continue", "close"):
            raise RuleError("'then' must be continue or close")
    if action == "delay":
        rule["seconds"] = _num(rule, "seconds", 1, kind=float, minimum=0)
    if action == "throttle":
        rule["rate"] = _num(rule, "rate", 0, minimum=1)
    if action == "corrupt":
        rule["offset"] = _num(rule, "offset", 0)
    if action in ("drop_after", "stall", "close"):
        default = "fin" if action == "close" else "reset"
        if rule.get("how", default) not in ("reset", "fin"):
            raise RuleError("'how' must be reset or fin")
    if action == "redirect":
        rule["code"] = _num(rule, "code", 307, minimum=300)
        if "target" in rule and not isinstance(rule["target"], str):
            raise RuleError("'target' must be a string")
    if action in ("status", "header"):
        h = rule.get("headers", {})
        if not isinstance(h, dict) or not all(
                isinstance(k, str) and (v is None or isinstance(v, (str, int, float)))
                for k, v in h.items()):
            raise RuleError("'headers' must be an object of name: string|null")
    rule["_seen"] = 0
    rule["_applied"] = 0
    return rule


class Rules:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []

    def replace(self, raws):
        compiled = [compile_rule(r) for r in raws]
        with self.lock:
            self.rules = compiled

    def append(self, raws):
        compiled = [compile_rule(r) for r in raws]
        with self.lock:
            self.rules.extend(compiled)

    def clear(self):
        with self.lock:
            self.rules = []

    def listing(self):
        with self.lock:
            out = []
            for r in self.rules:
                d = {k: v for k, v in r.items() if k not in ("_re", "_methods")}
                d["_spent"] = r["times"] != -1 and r["_applied"] >= r["times"]
                out.append(d)
            return out

    def select(self, listener, method, path, auth):
        """The rule to apply to this request, or None."""
        with self.lock:
            for r in self.rules:
                if r["times"] != -1 and r["_applied"] >= r["times"]:
                    continue  # spent
                lst = r.get("listener", "proxy")
                if lst != "any" and lst != listener:
                    continue
                if r["_methods"] is not None and method not in r["_methods"]:
                    continue
                if "auth" in r and r["auth"] != auth:
                    continue
                if not r["_re"].search(path):
                    continue
                r["_seen"] += 1
                if r["_seen"] <= r["skip"]:
                    return None  # passes untouched
                r["_applied"] += 1
                return r
            return None


# --- stats -------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.total = 0
            self.by_listener = {"proxy": 0, "cdn": 0}
            self.actions = {}
            self.cdn_auth = 0
            self.requests = deque(maxlen=STATS_KEEP)

    def begin(self, listener, method, path, rng, auth):
        entry = {"listener": listener, "method": method, "path": path,
                 "range": rng, "auth": auth, "status": None, "rule": None,
                 "bytes": 0, "t0": time.monotonic(), "t1": None}
        with self.lock:
            self.total += 1
            self.by_listener[listener] = self.by_listener.get(listener, 0) + 1
            if listener == "cdn" and auth:
                self.cdn_auth += 1
            self.requests.append(entry)
        return entry

    def applied(self, entry, action):
        with self.lock:
            entry["rule"] = action
            self.actions[action] = self.actions.get(action, 0) + 1

    def snapshot(self):
        with self.lock:
            return {
                "total": self.total,
                "by_listener": dict(self.by_listener),
                "actions": dict(self.actions),
                "cdn_auth": self.cdn_auth,
                "requests": [dict(e) for e in self.requests],
            }


RULES = Rules()
STATS = Stats()


# --- request body sources ----------------------------------------------------


class ClientGone(Exception):
    """The client closed or broke its connection while sending a body."""



class LimitedReader:
    """File-like view of the next n bytes of a stream."""

    def __init__(self, f, n):
        self.f = f
        self.left = n

    def read(self, size=-1):
        if self.left <= 0:
            return b""
        if size is None or size < 0 or size > self.left:
            size = self.left
        try:
            data = self.f.read(size)
        except OSError as e:
            raise ClientGone(str(e))
        if not data:
            raise ClientGone("client closed while sending the request body")
        self.left -= len(data)
        return data


def chunked_reader(f):
    """Yield the data of a chunked request body (trailers are discarded)."""
    try:
        yield from _chunks(f)
    except (OSError, ValueError) as e:
        raise ClientGone(f"bad chunked body: {e}")


def _chunks(f):
    while True:
        line = f.readline(65537)
        if not line:
            raise ClientGone("client closed inside a chunked body")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while True:  # trailers up to the empty line
                t = f.readline(65537)
                if not t or t in (b"\r\n", b"\n"):
                    return
        left = size
        while left:
            data = f.read(min(left, BUF_SIZE))
            if not data:
                raise ClientGone("client closed inside a chunk")
            left -= len(data)
            yield data
        f.readline(65537)  # CRLF after the chunk


# --- response body writer ----------------------------------------------------


class Cut(Exception):
    """The rule wants the connection closed now."""


class BodyWriter:
    """Writes a response body to the client, applying the body faults."""

    def __init__(self, handler, entry, chunked, rule, length):
        self.h = handler
        self.entry = entry
        self.chunked = chunked
        self.sent = 0
        self.rate = None
        self.flip = None
        self.cut_at = None
        self.pause_at = None
        self.t0 = None
        action = rule["action"] if rule else None
        if action == "throttle":
            self.rate = rule["rate"]
        elif action == "corrupt":
            off = rule["offset"]
            if off < 0 and length is not None:
                off += length
            self.flip = off if off >= 0 else None
        elif action in ("drop_after", "truncate"):
            self.cut_at = rule["bytes"]
        elif action == "stall":
            self.pause_at = rule["bytes"]
            self.pause_for = rule["seconds"]
            self.pause_then = rule.get("then", "continue")

    def _raw(self, data):
        if self.chunked:
            self.h.wfile.write(b"%x\r\n" % len(data))
            self.h.wfile.write(data)
            self.h.wfile.write(b"\r\n")
        else:
            self.h.wfile.write(data)
        self.sent += len(data)
        self.entry["bytes"] = self.sent

    def _paced(self, data):
        if not self.rate:
            self._raw(data)
            return
        if self.t0 is None:
            self.t0 = time.monotonic()
            self.base = self.sent
        step = max(1, min(64 * 1024, self.rate // 20))
        for i in range(0, len(data), step):
            self._raw(data[i:i + step])
            due = self.t0 + (self.sent - self.base) / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _pause(self):
        self.pause_at = None
        time.sleep(self.pause_for)
        if self.pause_then == "close":
            raise Cut()

    def write(self, data):
        """Send data (a bytes-like object); raise Cut when the rule says so."""
        while len(data):
            if self.pause_at is not None and self.sent >= self.pause_at:
                self._pause()
            if self.cut_at is not None and self.sent >= self.cut_at:
                raise Cut()
            n = len(data)
            for limit in (self.pause_at, self.cut_at):
                if limit is not None:
                    n = min(n, limit - self.sent)
            piece, data = data[:n], data[n:]
            if self.flip is not None and self.sent <= self.flip < self.sent + n:
                piece = bytearray(piece)
                piece[self.flip - self.sent] ^= 0xFF
            self._paced(piece)

    def finish(self, extra=0):
        """End of the upstream body: append garbage, then terminate."""
        while extra > 0:
            chunk = (GARBAGE * (1 + min(extra, 65536) // len(GARBAGE)))[:min(extra, 65536)]
            self.write(chunk)
            extra -= len(chunk)
        if self.pause_at is not None and self.sent >= self.pause_at:
            self._pause()
        if self.cut_at is not None:
            raise Cut()
        if self.chunked:
            self.h.wfile.write(b"0\r\n\r\n")


# --- HTTP handler ------------------------------------------------------------


def outq(sock):
    """Bytes in the socket's send queue not yet acknowledged, or None."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]
    except (OSError, AttributeError):
        return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"
    sys_version = ""
    timeout = 600  # idle keep-alive connections and stuck writes
    listener = "proxy"
    upstream = None  # (host, port)
    cdn_addr = None

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.aborted = False

    def log_message(self, fmt, *args):
        log(f"{self.listener}: " + (fmt % args))

    def log_request(self, code="-", size="-"):
        pass  # one line per request is logged by dispatch()

    # every method goes through dispatch()
    def do_GET(self):
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # --- helpers ---------------------------------------------------------------

    def target(self):
        """Origin-form request target (path and query)."""
        p = self.path
        if p.startswith(("http://", "https://")):
            u = urllib.parse.urlsplit(p)
            p = (u.path or "/") + ("?" + u.query if u.query else "")
        return p

    def client_body_info(self):
        """(reader, length, chunked) for the request body."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            return chunked_reader(self.rfile), None, True
        cl = self.headers.get("Content-Length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                n = -1
            if n < 0:
                raise ValueError("bad Content-Length")
            return LimitedReader(self.rfile, n), n, False
        return None, None, False

    def discard_body(self):
        try:
            body, _, _ = self.client_body_info()
        except ValueError:
            self.close_connection = True
            return
        if body is None:
            return
        try:
            if isinstance(body, LimitedReader):
                while body.read(BUF_SIZE):
                    pass
            else:
                for _ in body:
                    pass
        except ClientGone:
            self.close_connection = True

    def close_abruptly(self, how="reset"):
        """Close the client connection now; nothing more is sent."""
        self.close_connection = True
        self.aborted = True
        sock = self.connection
        try:
            if how == "reset":
                # Let the bytes already written reach the client first; a RST
                # discards whatever is still queued.
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    q = outq(sock)
                    if q is None:
                        time.sleep(0.05)
                        break
                    if q == 0:
                        break
                    time.sleep(0.005)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            self.rfile.close()
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def finish(self):
        if getattr(self, "aborted", False):
            return  # the socket is gone already
        super().finish()

    def send_local(self, code, headers, body, entry=None, reason=None):
        """A response made here (not forwarded)."""
        data = body.encode() if isinstance(body, str) else (body or b"")
        if code < 200 or code in (204, 304):
            data = b""  # these never have a body
        self.send_response_only(code, reason)
        self.send_header("Date", self.date_time_string())
        names = {k.lower() for k, _ in headers}
        for k, v in headers:
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, str(v))
        if data and "content-type" not in names:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if entry is not None:
            entry["status"] = code
        if self.command != "HEAD" and data:
            self.wfile.write(data)
            if entry is not None:
                entry["bytes"] = len(data)

    # --- control API -------------------------------------------------------------

    def control(self):
        path = self.target().split("?", 1)[0]
        method = self.command

        def reply(code, obj):
            self.send_local(code, [("Content-Type", "application/json")],
                            json.dumps(obj, indent=1) + "\n")

        try:
            body, n, _ = self.client_body_info()
        except ValueError:
            self.close_connection = True
            return reply(400, {"error": "bad Content-Length"})
        raw = b""
        try:
            if isinstance(body, LimitedReader):
                raw = body.read(n) if n else b""
            elif body is not None:
                raw = b"".join(body)
        except ClientGone:
            self.close_connection = True
            return

        if path == "/__proxy/rules":
            if method in ("PUT", "POST"):
                try:
                    data = json.loads(raw or b"[]")
                    if isinstance(data, dict) and method == "POST":
                        data = [data]
                    if not isinstance(data, list):
                        raise RuleError("expected a JSON list of rules")
                    if method == "PUT":
                        RULES.replace(data)
                    else:
                        RULES.append(data)
                except (ValueError, RuleError) as e:
                    return reply(400, {"error": str(e)})
                log(f"rules {'set' if method == 'PUT' else 'added'}: "
                    f"{json.dumps(data)}")
                return reply(200, {"ok": True, "rules": len(RULES.listing())})
            if method == "DELETE":
                RULES.clear()
                log("rules cleared")
                return reply(200, {"ok": True})
            if method in ("GET", "HEAD"):
                return reply(200, RULES.listing())
        elif path == "/__proxy/token":
            # A stand-in Bearer token issuer: counts its calls and hands
            # out numbered tokens (the registry behind does not check them).
            with TOKEN_LOCK:
                TOKENS["issued"] += 1
                TOKENS["queries"].append(self.target().split("?", 1)[-1])
                n = TOKENS["issued"]
            return reply(200, {"token": f"test-token-{n}", "expires_in": 300})
        elif path == "/__proxy/tokens":
            with TOKEN_LOCK:
                return reply(200, dict(TOKENS))
        elif path == "/__proxy/stats":
            if method in ("GET", "HEAD"):
                return reply(200, STATS.snapshot())
            if method == "DELETE":
                STATS.reset()
                return reply(200, {"ok": True})
        else:
            return reply(404, {"error": f"unknown control path {path}"})
        return reply(405, {"error": f"{method} not allowed on {path}"})

    # --- proxying ----------------------------------------------------------------

    def dispatch(self):
        path = self.target()
        if path.startswith("/__proxy/"):
            if self.listener == "proxy":
                return self.control()
        method = self.command
        auth = self.headers.get("Authorization") is not None
        entry = STATS.begin(self.listener, method, path,
                            self.headers.get("Range"), auth)
        rule = RULES.select(self.listener, method, path, auth)
        action = rule["action"] if rule else None
        if action:
            STATS.applied(entry, action)
        try:
            if action == "status":
                self.discard_body()
                hdrs = [(k, v) for k, v in rule.get("headers", {}).items() if v is not None]
                body = rule["body"] if "body" in rule else error_body(rule["code"], path)
                self.send_local(rule["code"], hdrs, body, entry)
            elif action == "redirect":
                self.discard_body()
                base = rule.get("target") or f"http://{self.cdn_addr}"
                self.send_local(rule["code"], [("Location", base + path)], b"", entry)
            elif action == "close":
                self.discard_body()
                self.close_abruptly(rule.get("how", "fin"))
            else:
                if action == "delay":
                    time.sleep(rule["seconds"])
                self.forward(path, rule, entry)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError,
                socket.timeout) as e:
            entry["error"] = f"client: {e.__class__.__name__}"
            self.close_connection = True
        entry["t1"] = time.monotonic()
        log(f"{self.listener} {method} {path} range={entry['range']} "
            f"auth={auth} -> {entry['status']} rule={action} "
            f"bytes={entry['bytes']}" +
            (f" error={entry['error']}" if entry.get("error") else ""))

    def forward(self, path, rule, entry):
        action = rule["action"] if rule else None
        drop = set()
        if self.listener == "cdn":
            drop.add("authorization")
        if action == "ignore_range":
            drop.update(("range", "if-range"))
        try:
            body, length, chunked = self.client_body_info()
        except ValueError:
            self.close_connection = True
            self.send_local(400, [], error_body(400, path), entry)
            return

        host, port = self.upstream
        conn = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT,
                                          blocksize=BUF_SIZE)
        try:
            try:
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.putrequest(self.command, path, skip_host=True,
                                skip_accept_encoding=True)
                have_host = False
                for k, v in self.headers.items():
                    lk = k.lower()
                    if lk in HOP_BY_HOP or lk in drop:
                        continue
                    if lk == "host":
                        have_host = True
                    conn.putheader(k, v)
                if not have_host:
                    conn.putheader("Host", f"{host}:{port}")
                if chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                elif length is not None:
                    conn.putheader("Content-Length", str(length))
                conn.endheaders(body, encode_chunked=chunked)
                resp = conn.getresponse()
            except ClientGone as e:
                # the client went away while sending its body
                entry["error"] = f"client: {e}"
                self.close_abruptly("fin")
                return
            except (OSError, http.client.HTTPException) as e:
                entry["error"] = f"upstream: {e.__class__.__name__}: {e}"
                self.close_connection = True
                self.send_local(502, [], json.dumps({"errors": [{
                    "code": "UNAVAILABLE",
                    "message": f"faultproxy: upstream failed: {e}"}]}), entry)
                return
            self.relay(resp, rule, entry)
        finally:
            conn.close()

    def relay(self, resp, rule, entry):
        action = rule["action"] if rule else None
        method = self.command
        status = resp.status
        entry["upstream_status"] = status
        has_body = method != "HEAD" and status >= 200 and status not in (204, 304)

        up_len = None
        cl = resp.getheader("Content-Length")
        te = (resp.getheader("Transfer-Encoding") or "").lower()
        if cl is not None and "chunked" not in te:
            try:
                up_len = int(cl.split(",")[0].strip())
            except ValueError:
                up_len = None

        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        if action == "header":
            for name, value in rule.get("headers", {}).items():
                headers = [(k, v) for k, v in headers if k.lower() != name.lower()]
                if value is not None:
                    headers.append((name, str(value)))

        extra = rule["bytes"] if action == "extend" else 0
        declared = up_len + extra if up_len is not None else None
        chunked_out = False
        if declared is None and has_body:
            if self.request_version == "HTTP/1.1":
                chunked_out = True
            else:
                self.close_connection = True

        self.send_response_only(status, resp.reason)
        for k, v in headers:
            self.send_header(k, v)
        if declared is not None:
            self.send_header("Content-Length", str(declared))
        elif chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        entry["status"] = status

        writer = BodyWriter(self, entry, chunked_out, rule, up_len)
        try:
            if has_body:
                buf = bytearray(BUF_SIZE)
                mv = memoryview(buf)
                while True:
                    try:
                        n = resp.readinto(buf)
                    except (OSError, http.client.HTTPException) as e:
                        entry["error"] = f"upstream: {e.__class__.__name__}: {e}"
                        self.close_abruptly("fin")
                        return
                    if not n:
                        break
                    writer.write(mv[:n])
                if up_len is not None and writer.sent < up_len and writer.cut_at is None:
                    entry["error"] = "upstream: short body"
                    self.close_abruptly("fin")
                    return
                writer.finish(extra)
            elif action in ("drop_after", "truncate", "stall"):
                writer.finish(0)
        except Cut:
            how = "fin" if action == "truncate" else rule.get("how", "reset")
            self.close_abruptly(how)


# --- servers -----------------------------------------------------------------


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout)):
            return
        super().handle_error(request, client_address)


def make_server(listener, upstream):
    cls = type(f"{listener.capitalize()}Handler", (Handler,),
               {"listener": listener, "upstream": upstream})
    return Server(("127.0.0.1", 0), cls), cls


def write_state(path, state):
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.write("\n")
    os.replace(tmp, path)


def parse_hostport(s):
    if "://" in s:
        s = urllib.parse.urlsplit(s).netloc
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host, int(port)


def main():
    global QUIET
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, type=parse_hostport,
                    help="registry address HOST:PORT")
    ap.add_argument("--state-file", required=True,
                    help="where to write the listening addresses (JSON)")
    ap.add_argument("--quiet", action="store_true", help="no per-request log")
    args = ap.parse_args()
    QUIET = args.quiet

    proxy, proxy_cls = make_server("proxy", args.upstream)
    cdn, cdn_cls = make_server("cdn", args.upstream)
    proxy_addr = f"127.0.0.1:{proxy.server_address[1]}"
    cdn_addr = f"localhost:{cdn.server_address[1]}"
    proxy_cls.cdn_addr = cdn_cls.cdn_addr = cdn_addr

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    for srv in (proxy, cdn):
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    state = {"proxy": proxy_addr, "cdn": cdn_addr, "pid": os.getpid(),
             "upstream": "%s:%d" % args.upstream}
    write_state(args.state_file, state)
    log(f"proxy {proxy_addr}, cdn {cdn_addr} -> upstream {state['upstream']} "
        f"(pid {os.getpid()})")

    while not stop.wait(1):
        pass
    log("stopping")
    try:
        with open(args.state_file) as f:
            if json.load(f).get("pid") == os.getpid():
                os.unlink(args.state_file)
    except (OSError, ValueError):
        pass
    for srv in (proxy, cdn):
        srv.shutdown()
        srv.server_close()


if __name__ == "__main__":
    main()
