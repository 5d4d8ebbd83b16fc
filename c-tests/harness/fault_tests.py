#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Fault tests: the library against the real registry behind faultproxy.py.

Usage: fault_tests.py WORKDIR FETCH_BINARY

Each case sets the proxy's rules, runs one `fetch` (c-tests/harness/fetch.c) and
checks its outcome: the right bytes (by digest), or the right errno with a
message naming the cause; never wrong bytes reported as success. Some
cases also check what the proxy saw (resumed ranges, retries, no
Authorization header at the redirect target).
"""

import errno
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rig"))
import envfile  # noqa: E402  (c-tests/rig/envfile.py)

WORK, FETCH = sys.argv[1], sys.argv[2]


REGISTRY = envfile.read(os.path.join(WORK, "registry.env"))["REGISTRY"]
PROXY = envfile.read(os.path.join(WORK, "faultproxy.env"))["PROXY"]

layers = {}
big = None
with open(os.path.join(WORK, "fixtures.txt")) as f:
    for line in f:
        p = line.split()
        if p and p[0] == "layer":
            layers[(p[1].split("/", 1)[1], int(p[3]))] = (p[4], int(p[5]))
        elif p and p[0] == "big":
            big = (p[1].split("/", 1)[1], p[2], int(p[3]))

# A 5-layer image of push_layered_fixtures.py (its layers' digests).
LAYERED_REF = "layered/whiteouts:v1"
LAYERED_DIGESTS = []
with open(os.path.join(WORK, "layered-fixtures.txt")) as f:
    for line in f:
        p = line.split()
        if p and p[0] == "layer" and p[1].endswith("/" + LAYERED_REF):
            LAYERED_DIGESTS.append(p[4])

SMALL_REF = "plain/nomt:v1"
SMALL_DIGEST, SMALL_SIZE = layers[(SMALL_REF, 1)]
BIG_REF, BIG_DIGEST, BIG_SIZE = big
BLOB_FILE = os.path.join(WORK, "blobs", "sha256", SMALL_DIGEST.split(":")[1])


def ctl(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{PROXY}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def fetch(ref, options, *mode, env=None):
    opts = ",".join(o for o in ("insecure", options) if o)
    t0 = time.monotonic()
    p = subprocess.run([FETCH, f"{PROXY}/{ref}", opts, *mode],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})
    return p.stdout.strip(), time.monotonic() - t0, p


def blob_gets(stats, digest, listener="proxy"):
    return [e for e in stats["requests"]
            if e["listener"] == listener and e["method"] == "GET"
            and e["path"].endswith("/blobs/" + digest)]


def gets_seen(stats, digest, *listeners):
    """The blob GETs each listener saw, in order: listener, range, status,
    bytes and when (seconds since the first)."""
    gets = sorted((e for ls in listeners for e in blob_gets(stats, digest, ls)),
                  key=lambda e: e["t0"])
    t = gets[0]["t0"] if gets else 0
    return "; ".join(f'{e["listener"]} {e["range"]} {e["status"]} {e["bytes"]}B '
                     f'+{e["t0"] - t:.3f}s' for e in gets)


def located_after_first(stats, digest):
    """Blob GETs reached the registry, and none after the first GET that
    its redirect sent elsewhere had been answered."""
    reg = blob_gets(stats, digest)
    cdn = blob_gets(stats, digest, "cdn")
    first = min((c["t1"] for c in cdn if c["t1"] is not None), default=None)
    return bool(reg) and first is not None and all(r["t0"] < first for r in reg)


BLOB = f"/blobs/{SMALL_DIGEST}$"


def resumed(stats):
    """A GET after the one the proxy dropped at byte 1000000 asks for the
    rest of that one's range from there: to the end as one stream does, or
    to the end of its chunk (connections=auto goes parallel where the
    registry's answers take 5 ms or more, as they may through the proxy
    under valgrind, and then the 3 MB blob goes as 1 MiB chunks)."""
    gets = sorted(blob_gets(stats, SMALL_DIGEST), key=lambda e: e["t0"])
    dropped = [e for e in gets if e["rule"] == "drop_after"]
    if not dropped:
        return False
    end = (dropped[0]["range"] or "bytes=0-").split("-", 1)[1]
    want = {f"bytes=1000000-{end}"}
    if end in ("", str(SMALL_SIZE - 1)):
        want |= {"bytes=1000000-", f"bytes=1000000-{SMALL_SIZE - 1}"}
    return any(e["range"] in want for e in gets if e["t0"] > dropped[0]["t0"])

BIGBLOB = f"/blobs/{BIG_DIGEST}$"
MANIFEST = "/manifests/"
AUTH_RULE = {
    "match": "^/v2/", "auth": False, "times": -1, "action": "status",
    "code": 401,
    "headers": {"WWW-Authenticate":
                f'Bearer realm="http://{PROXY}/__proxy/token",service="faultproxy"'},
}

passed = failed = 0


def check(name, cond, detail):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


# One connection unless a case asks for more: connections=auto would go
# parallel wherever the proxy (under valgrind) answers in 5 ms or more,
# and the small blob would then come as 1 MiB chunks, each faulted on its
# own: what a case counts would depend on the machine's speed.
ONE_STREAM = "layer=1,platform=linux/amd64,connections=1"


def case(name, rules, expect, ref=SMALL_REF, options=ONE_STREAM,
         mode=("seq",), extra=None, env=None):
    """expect: ("ok", digest) | ("random",) | ("at", [(off, len)...])
    | ("error", errno, substring)"""
    only = os.environ.get("CASES")
    if only and only not in name:
        return
    ctl("PUT", "/__proxy/rules", rules)
    ctl("DELETE", "/__proxy/stats")
    tokens_before = ctl("GET", "/__proxy/tokens")["issued"]
    out, secs, proc = fetch(ref, options, *mode, env=env)
    stats = ctl("GET", "/__proxy/stats")
    tokens = ctl("GET", "/__proxy/tokens")["issued"] - tokens_before
    if expect[0] == "ok":
        want = f"ok {expect[1]} "
        check(name, out.startswith(want), f"want '{want}...', got '{out}'")
    elif expect[0] == "random":
        check(name, out.startswith("ok random"), f"got '{out}'")
    elif expect[0] == "at":
        with open(BLOB_FILE, "rb") as f:
            data = f.read()
        want = "ok at " + " ".join(
            f"{n}:{hashlib.sha256(data[o:o + n]).hexdigest()}" for o, n in expect[1])
        check(name, out == want, f"want '{want}', got '{out}'")
    else:
        parts = out.split(" ", 2)
        ok = (len(parts) == 3 and parts[0] == "error"
              and int(parts[1]) == expect[1] and expect[2] in parts[2])
        check(name, ok, f"want error {expect[1]} with '{expect[2]}', got '{out}'")
    # FETCH may be valgrind around the tool: 99 is its verdict on errors.
    check(f"{name}: no memory errors or leaks", proc.returncode != 99,
          proc.stderr[-2000:])
    if extra:
        # (what, cond) or (what, cond, detail): the detail says what was
        # seen when cond fails; by default the last requests.
        for what, cond, *detail in extra(stats, secs, tokens):
            check(f"{name}: {what}", cond,
                  detail[0] if detail else json.dumps(stats.get("requests", [])[-6:]))


def main():
    small_ok = ("ok", SMALL_DIGEST)

    case("passthrough", [], small_ok)
    case("connection dropped once: resumed with Range",
         [{"match": BLOB, "method": "GET", "action": "drop_after", "bytes": 1000000}],
         small_ok,
         extra=lambda s, t, k: [
             ("a later GET asks for the rest from byte 1000000", resumed(s))])
    case("connection dropped three times: resumed each time",
         [{"match": BLOB, "method": "GET", "action": "drop_after", "bytes": 700000,
           "times": 3}],
         small_ok,
         extra=lambda s, t, k: [("four GETs", len(blob_gets(s, SMALL_DIGEST)) == 4)])
    case("short body (FIN before Content-Length): resumed",
         [{"match": BLOB, "method": "GET", "action": "truncate", "bytes": 123457}],
         small_ok)
    case("connection dropped on every try: ECONNRESET after the retries",
         [{"match": BLOB, "method": "GET", "action": "drop_after", "bytes": 100000,
           "times": -1}],
         ("error", errno.ECONNRESET, "read blob"), options=ONE_STREAM + ",retries=2",
         extra=lambda s, t, k: [("1 + 2 retries", len(blob_gets(s, SMALL_DIGEST)) == 3)])
    case("stall below the low-speed limit: aborted and resumed",
         [{"match": BLOB, "method": "GET", "action": "stall", "bytes": 200000,
           "seconds": 15}],
         small_ok, options=ONE_STREAM + ",low_speed_limit=100000,low_speed_time=2",
         # about 4.5 s (curl's average falls below the limit after a second
         # or two, then 2 s more), 7 s under valgrind on a loaded machine
         extra=lambda s, t, k: [("done before the stall ends", t < 14)])
    case("503 twice on the manifest, then served",
         [{"match": MANIFEST, "action": "status", "code": 503, "times": 2}],
         small_ok,
         extra=lambda s, t, k: [("three manifest GETs",
                                 sum(MANIFEST in e["path"] for e in s["requests"]) == 3)])
    case("500 then 502 on the blob, then served",
         [{"match": BLOB, "method": "GET", "action": "status", "code": 500},
          {"match": BLOB, "method": "GET", "action": "status", "code": 502}],
         small_ok)
    case("429 with Retry-After: 2 is honoured",
         [{"match": BLOB, "method": "GET", "action": "status", "code": 429,
           "headers": {"Retry-After": "2"}}],
         small_ok, extra=lambda s, t, k: [("waited 2 s", t >= 2.0)])
    case("404 on the blob is not retried",
         [{"match": BLOB, "method": "GET", "action": "status", "code": 404,
           "times": -1}],
         ("error", errno.ENOENT, "HTTP 404"),
         extra=lambda s, t, k: [("one GET", len(blob_gets(s, SMALL_DIGEST)) == 1)])
    case("a corrupted byte: EBADMSG naming both digests",
         [{"match": BLOB, "method": "GET", "action": "corrupt", "offset": 12345}],
         ("error", errno.EBADMSG, f"expected {SMALL_DIGEST}, got sha256:"))
    # Random preads never read the blob in order, but once they have asked
    # for a quarter of its blocks the background fill streams the rest from
    # byte 0 through the running hash: a corrupted byte in that stream (the
    # 7th GET: 6 random-read GETs come first, in this fixed order, one per
    # miss with connections=1) fails the reads after it, though no read
    # ever asked for that byte.
    case("random preads, the background fill's stream corrupted: EBADMSG",
         [{"match": BLOB, "method": "GET", "action": "corrupt", "offset": 12345,
           "skip": 6}],
         ("error", errno.EBADMSG, f"expected {SMALL_DIGEST}, got sha256:"),
         options="layer=1,platform=linux/amd64,block=64K,cache_mem=1M,readahead=256K,"
                 "connections=1",
         mode=("random", BLOB_FILE, "40"), env={"FETCH_DELAY_MS": "300"},
         extra=lambda s, t, k: [("the fill asked for the whole blob from byte 0",
                                 any(e["range"] == f"bytes=0-{SMALL_SIZE - 1}"
                                     for e in blob_gets(s, SMALL_DIGEST)))])
    case("a body longer than the descriptor: EBADMSG",
         [{"match": BLOB, "method": "GET", "action": "extend", "bytes": 100}],
         ("error", errno.EBADMSG, "longer"))
    case("a wrong Docker-Content-Digest on the manifest: EBADMSG",
         [{"match": MANIFEST, "method": "GET", "action": "header",
           "headers": {"Docker-Content-Digest": "sha256:" + "0" * 64}}],
         ("error", errno.EBADMSG, "digest mismatch"))
    # Parallel readahead: the small layer (3.1 MB) as 256 KiB Range
    # requests, 4 in flight (block=64K), from a read(2) reader.
    par = "layer=1,platform=linux/amd64,connections=4,block=64K,chunk=256K"

    def ranged(s):
        return [e["range"] for e in blob_gets(s, SMALL_DIGEST) if e["range"]]

    case("parallel readahead: right bytes in order, hash verified", [], small_ok,
         options=par,
         extra=lambda s, t, k: [
             ("bounded 256 KiB ranges", len(ranged(s)) >= 12
              and all(r.count("-") == 1 and not r.endswith("-") for r in ranged(s)))])
    case("parallel readahead: one of the ranges dropped, resumed from its byte",
         [{"match": BLOB, "method": "GET", "action": "drop_after", "bytes": 100000,
           "skip": 2}],
         small_ok, options=par,
         extra=lambda s, t, k: [
             ("a GET resumes the dropped range 100000 bytes in",
              any(r.startswith(f"bytes={int(q.split('=')[1].split('-')[0]) + 100000}-")
                  for q in ranged(s)[2:3] for r in ranged(s)[3:]))])
    case("parallel readahead: one connection stalled, the others go on",
         [{"match": BLOB, "method": "GET", "action": "stall", "bytes": 1000,
           "seconds": 15, "skip": 1}],
         small_ok, options=par + ",low_speed_limit=100000,low_speed_time=2",
         extra=lambda s, t, k: [("done before the stall ends", t < 14)])
    case("parallel readahead: a 200 to a ranged GET midway (Range no longer honoured)",
         [{"match": BLOB, "method": "GET", "action": "ignore_range", "skip": 3,
           "times": -1}],
         small_ok, options=par,
         extra=lambda s, t, k: [
             ("the proxy answered 200 to a ranged GET",
              any(e["range"] and e["status"] == 200
                  for e in blob_gets(s, SMALL_DIGEST)))])
    # A random miss of several blocks, where readahead goes parallel, goes
    # as several Range requests at once (the small layer's blocks at
    # 64 KiB, preads of up to 256 KiB); one of them dropped midway.
    rnd = "layer=1,platform=linux/amd64,connections=4,block=64K,fill=none"

    def split_misses(s):
        r = ranged(s)
        return len(r) > 24 and all(not q.endswith("-") for q in r)

    case("random misses as parallel parts: right bytes",
         [], ("random",), options=rnd, mode=("random", BLOB_FILE, "24"),
         extra=lambda s, t, k: [("more bounded Range GETs than reads", split_misses(s))])
    case("random misses as parallel parts: one part dropped, resumed",
         [{"match": BLOB, "method": "GET", "action": "drop_after", "bytes": 30000,
           "skip": 3}],
         ("random",), options=rnd, mode=("random", BLOB_FILE, "24"),
         extra=lambda s, t, k: [
             ("more bounded Range GETs than reads", split_misses(s)),
             ("a GET resumes the dropped part 30000 bytes in",
              any(r.startswith(f"bytes={int(q.split('=')[1].split('-')[0]) + 30000}-")
                  for q in ranged(s)[3:4] for r in ranged(s)[4:]))])

    # A small pread deep in a block that a far registry (each answer 30 ms
    # late, as over a long link: the ping and the manifest, from which the
    # library judges the distance) brings slowly (1 MB/s): its page and the
    # next 64 KiB come in a Range request of their own beside the block's,
    # and a pread 8 KiB on is served from them without another request.
    deep = (1 << 20) + 900000
    page = deep - deep % 4096
    reads = [(deep, 4096), (deep + 8192, 4096)]
    case("a pread deep in a block still arriving: a Range request of its own",
         [{"match": "^/v2/$|" + MANIFEST, "action": "delay", "seconds": 0.03, "times": -1},
          {"match": BLOB, "method": "GET", "action": "throttle", "rate": 1000000,
           "times": -1}],
         ("at", reads), mode=("at", *[str(x) for r in reads for x in r]),
         extra=lambda s, t, k: [
             # Either may reach the proxy first: the block's request may
             # wait for a new connection while the page's finds one ready.
             ("the block asked for whole, and 64 KiB from the pread's page",
              sorted(ranged(s)) == sorted([f"bytes={1 << 20}-{(2 << 20) - 1}",
                                           f"bytes={page}-{page + 65535}"]))])

    # Three readers' preads in three blocks of the blob, a far registry
    # bringing each block slowly (1 MB/s): the last, 900000 bytes deep in
    # its block and begun while the other two misses are in flight, gets
    # its page and the next 64 KiB in a Range request of its own (beside
    # the blocks' three), on one of the connections warmed for the misses.
    deep3 = [(100, 4096), (2 << 20, 4096), ((1 << 20) + 900000, 4096)]
    page3 = deep3[2][0] - deep3[2][0] % 4096
    case("several readers' misses: a pread deep in its block gets a Range request of its own",
         [{"match": "^/v2/$|" + MANIFEST, "action": "delay", "seconds": 0.03, "times": -1},
          {"match": BLOB, "method": "GET", "action": "throttle", "rate": 1000000,
           "times": -1}],
         ("at", deep3), options="layer=1,platform=linux/amd64,connections=4",
         mode=("together", *[str(x) for r in deep3 for x in r]),
         extra=lambda s, t, k: [
             ("three blocks asked for whole, and 64 KiB from the deep pread's page",
              sorted(ranged(s)) == sorted([f"bytes=0-{(1 << 20) - 1}",
                                           f"bytes={1 << 20}-{(2 << 20) - 1}",
                                           f"bytes={2 << 20}-{min(3 << 20, SMALL_SIZE) - 1}",
                                           f"bytes={page3}-{page3 + 65535}"]),
              " ".join(ranged(s)))])

    # A far registry (its ping and manifest answers 30 ms late): a reader
    # at random that may have four requests in flight has four warm
    # connections opened (two at the open, two more at its first miss),
    # each by a GET /v2/; a streaming reader only the open's two, as its
    # chunks open their own at once.
    far = [{"match": "^/v2/$|" + MANIFEST, "action": "delay", "seconds": 0.03,
            "times": -1}]

    def pings(s):
        return sum(e["method"] == "GET" and e["path"] == "/v2/"
                   for e in s["requests"])

    four = "layer=1,platform=linux/amd64,connections=4"
    case("a far registry: a reader at random gets a warm connection per request in flight",
         far, ("at", [(5000, 4096)]), options=four, mode=("at", "5000", "4096"),
         extra=lambda s, t, k: [("four GET /v2/", pings(s) == 4, f"{pings(s)} GET /v2/")])
    case("a far registry: a streaming reader gets only the open's warm connections",
         far, small_ok, options=four,
         extra=lambda s, t, k: [("two GET /v2/", pings(s) == 2, f"{pings(s)} GET /v2/")])

    # Flattening a 5-layer image whose every blob GET the proxy holds for
    # 0.3 s: the layers below the one being read are asked for meanwhile
    # (two of them), so that each does not begin with a round trip of its
    # own; the same bytes as flattened straight from the registry.
    flat_opts = "flatten,platform=linux/amd64"
    ref_out = subprocess.run([FETCH, f"{REGISTRY}/{LAYERED_REF}", f"insecure,{flat_opts}", "seq"],
                             capture_output=True, text=True, timeout=300).stdout.split()

    def layers_at_once(s):
        """Most of the image's layers whose blob GETs were in flight at once."""
        gets = [e for d in LAYERED_DIGESTS for e in blob_gets(s, d) if e["t1"]]
        return max((len({o["path"] for o in gets if o["t0"] <= e["t0"] < o["t1"]})
                    for e in gets), default=0)

    case("flatten: the layers below the one read are fetched meanwhile",
         [{"match": "/blobs/", "method": "GET", "action": "delay", "seconds": 0.3,
           "times": -1}],
         ("ok", ref_out[1] if len(ref_out) > 1 else "flatten failed straight from the registry"),
         ref=LAYERED_REF, options=flat_opts,
         extra=lambda s, t, k: [
             ("every layer asked for", all(blob_gets(s, d) for d in LAYERED_DIGESTS)),
             # (3: the one read and the two below; one ending may still
             # count while the next prefetch goes out)
             ("three layers' GETs in flight at once", layers_at_once(s) >= 3)])

    def refused_again(s):
        gets = blob_gets(s, SMALL_DIGEST)
        refused = [e["range"] for e in gets if e["status"] == 429]
        return len(refused) == 1 and sum(e["range"] == refused[0] for e in gets) == 2

    def at_once_after_429(s):
        """Most blob GETs in flight at once after the 429 was answered."""
        gets = blob_gets(s, SMALL_DIGEST)
        refused = [e["t1"] for e in gets if e["status"] == 429 and e["t1"]]
        if not refused:
            return None
        later = [e for e in gets if e["t0"] > refused[0] and e["t1"]]
        return max((sum(o["t0"] <= e["t0"] < o["t1"] for o in later) for e in later),
                   default=0)

    case("parallel readahead: 429 on the fifth connection, retried",
         [{"match": BLOB, "method": "GET", "action": "status", "code": 429,
           "headers": {"Retry-After": "1"}, "skip": 4}],
         small_ok, options=par,
         extra=lambda s, t, k: [
             ("the refused range asked for again, once", refused_again(s)),
             ("then fewer connections: at most 3 GETs at once, not 4",
              at_once_after_429(s) in (1, 2, 3))])
    # Random preads as in the corrupted-fill case below (its 7th GET is the
    # background fill): the fill's stream stalls for 30 s, and the reads
    # go on meanwhile, their misses fetched on their own (40 reads 0.3 s
    # apart: about 12 s). One request per miss (connections=1: under
    # valgrind the proxy's answers are slow enough for a long miss to go
    # as parallel parts), so that the 7th GET is the fill's.
    case("random preads: a reader's misses served while the fill is stalled",
         [{"match": BLOB, "method": "GET", "action": "stall", "bytes": 1000,
           "seconds": 30, "skip": 6}],
         ("random",),
         options="layer=1,platform=linux/amd64,block=64K,cache_mem=1M,readahead=256K,"
                 "connections=1",
         mode=("random", BLOB_FILE, "40"), env={"FETCH_DELAY_MS": "300"},
         extra=lambda s, t, k: [
             ("the fill asked for the blob from byte 0",
              any(e["range"] == f"bytes=0-{SMALL_SIZE - 1}"
                  for e in blob_gets(s, SMALL_DIGEST))),
             ("done long before the stall ends", t < 26)])
    case("a registry that ignores Range: right bytes from random preads",
         [{"match": BLOB, "method": "GET", "action": "ignore_range", "times": -1}],
         ("random",), mode=("random", BLOB_FILE, "24"),
         extra=lambda s, t, k: [("the proxy answered 200 to ranged GETs",
                                 any(e["range"] and e["status"] == 200
                                     for e in blob_gets(s, SMALL_DIGEST)))])
    case("Bearer token from the challenge's realm; blob redirected to another host",
         [AUTH_RULE,
          {"match": BLOB, "method": "GET", "action": "redirect", "times": -1}],
         small_ok,
         extra=lambda s, t, k: [
             ("a token was fetched", k >= 1),
             ("the registry got the token", any(e["auth"] for e in blob_gets(s, SMALL_DIGEST))),
             ("the other host got no Authorization",
              blob_gets(s, SMALL_DIGEST, "cdn") != []
              and not any(e["auth"] for e in blob_gets(s, SMALL_DIGEST, "cdn")))])
    # A registry that redirects its blob GETs (to a CDN, to object
    # storage): the location is remembered, and the Range requests that
    # follow go there directly, one round trip each instead of two.
    rnd_small = "layer=1,platform=linux/amd64,block=64K,fill=none"
    case("blob redirected: later Range requests go to the location directly",
         [{"match": BLOB, "method": "GET", "action": "redirect", "times": -1}],
         ("random",), options=rnd_small, mode=("random", BLOB_FILE, "24"),
         extra=lambda s, t, k: [
             ("the registry asked only before the first answer from the other "
              "host (the first read's parallel parts), the rest went there",
              located_after_first(s, SMALL_DIGEST)
              and len(blob_gets(s, SMALL_DIGEST, "cdn")) >= 8,
              gets_seen(s, SMALL_DIGEST, "proxy", "cdn"))])
    # ... until the location refuses (a signed URL expired): back to the
    # registry at once, which redirects again.
    case("blob redirected, then the location refuses: back to the registry",
         [{"match": BLOB, "method": "GET", "action": "redirect", "times": -1},
          {"match": BLOB, "listener": "cdn", "method": "GET", "action": "status",
           "code": 403, "skip": 4, "times": 1}],
         ("random",), options=rnd_small, mode=("random", BLOB_FILE, "24"),
         extra=lambda s, t, k: [
             ("the registry asked again after the refusal",
              any(e["t0"] > r["t0"] for r in blob_gets(s, SMALL_DIGEST, "cdn")
                  if r["status"] == 403 for e in blob_gets(s, SMALL_DIGEST)))])
    case("token expired mid-transfer: a fresh token, then resumed",
         [AUTH_RULE,
          {"match": BLOB, "method": "GET", "action": "drop_after", "bytes": 1000000},
          {"match": BLOB, "method": "GET", "auth": True, "action": "status", "code": 401,
           "headers": {"WWW-Authenticate":
                       f'Bearer realm="http://{PROXY}/__proxy/token",service="faultproxy"'}}],
         small_ok,
         extra=lambda s, t, k: [("two tokens", k >= 2),
                                ("resumed with Range", resumed(s))])
    case("big blob, dropped mid-way, verified to the end",
         [{"match": BIGBLOB, "method": "GET", "action": "drop_after", "bytes": 60000000}],
         ("ok", BIG_DIGEST), ref=BIG_REF, options="")

    # A pull-through mirror first (the proxy stands for one), then the
    # registry itself when the mirror fails; and a forward proxy from the
    # environment (libcurl's http_proxy), which the proxy also serves.
    def direct(name, options, env_extra, expect_prefix, proxy_used):
        if os.environ.get("CASES") and os.environ["CASES"] not in name:
            return
        ctl("DELETE", "/__proxy/stats")
        env = dict(os.environ, **env_extra)
        p = subprocess.run([FETCH, f"{REGISTRY}/{SMALL_REF}", options, "seq"],
                           capture_output=True, text=True, timeout=300, env=env)
        out = p.stdout.strip()
        check(name, out.startswith(expect_prefix), f"got '{out}' {p.stderr[-500:]}")
        check(f"{name}: no memory errors or leaks", p.returncode != 99, p.stderr[-2000:])
        seen = [e for e in ctl("GET", "/__proxy/stats")["requests"] if e["listener"] == "proxy"]
        check(f"{name}: the blob {'came' if proxy_used else 'did not come'} through the proxy",
              any(e["path"].endswith(SMALL_DIGEST) and e["status"] in (200, 206) for e in seen)
              == proxy_used, json.dumps(seen[-4:]))

    ctl("PUT", "/__proxy/rules", [])
    direct("mirror= is tried first", f"insecure,layer=1,mirror={PROXY}", {},
           f"ok {SMALL_DIGEST} ", True)
    ctl("PUT", "/__proxy/rules", [{"match": "^/v2/", "action": "status", "code": 503,
                                   "times": -1}])
    direct("a failing mirror falls back to the registry",
           f"insecure,layer=1,retries=0,mirror={PROXY}", {}, f"ok {SMALL_DIGEST} ", False)
    ctl("PUT", "/__proxy/rules", [])
    direct("http_proxy from the environment is used", "insecure,layer=1",
           {"http_proxy": f"http://{PROXY}", "no_proxy": "", "NO_PROXY": ""},
           f"ok {SMALL_DIGEST} ", True)

    ctl("DELETE", "/__proxy/rules")
    print(f"fault tests: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
