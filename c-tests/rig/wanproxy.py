#!/usr/bin/env python3
"""A model of a real network link in front of the test registry, in user
space (these machines have no netem): a TCP proxy on 127.0.0.1 that

- holds every chunk back a one-way delay in each direction, so that each
  request costs a round trip, and a new connection one more (its
  handshake);
- caps the download rate of each connection and of all of them together
  (token buckets: one per connection, one shared);
- leaves the bytes untouched (it does not parse HTTP, and TLS passes
  through).

Usage:
  wanproxy.py --upstream HOST:PORT --profile NAME --port-file FILE
  wanproxy.py --upstream HOST:PORT --rtt-ms R [--conn-mbps C] [--total-mbps T] --port-file FILE
  wanproxy.py --list            the profiles, one "NAME RTT_MS CONN TOTAL" line each

With WANPROXY_LOG=1 in the environment it writes a line to stderr for
each connection it accepts ("accept TIME") and closes ("close TIME
BYTES", BYTES what it passed down to the client).

Rates are in MB/s (10^6 bytes); 0 means no cap. FILE gets
"127.0.0.1:PORT" once the proxy listens; SIGTERM or SIGINT stop it.
"""

import argparse
import collections
import os
import signal
import socket
import sys
import threading
import time

# The named profiles: round trip (ms), per-connection and total download
# caps (MB/s). `lan` is bare loopback: the bench runs no proxy for it.
PROFILES = {
    "lan": (0, 0, 0),
    "wan": (30, 20, 160),
    "far": (100, 5, 50),
}

CHUNK = 128 * 1024
# Burst of a connection's bucket (the shared one holds four): a sender
# that wakes a little late catches up instead of losing the time.
DEPTH = 512 * 1024


class Bucket:
    """Bytes may leave at `rate` bytes/s on average, in bursts of up to
    `depth` bytes (a token bucket, kept as the time its tokens run out):
    each send books its slot."""

    def __init__(self, rate, depth):
        self.rate = rate
        self.burst = depth / rate if rate else 0
        self.next = 0.0
        self.lock = threading.Lock()

    def book(self, n, not_before):
        """The time a send of n bytes may start, no earlier than
        not_before."""
        if not self.rate:
            return not_before
        with self.lock:
            # Unused time (up to the depth) is credit: a sender that woke
            # late, or a link that was idle, may catch up.
            self.next = max(self.next, not_before - self.burst)
            t = max(not_before, self.next)
            self.next += n / self.rate
            return t


def log_line(text):
    """With WANPROXY_LOG set, one line to stderr in one write(2):
    connections close on threads of their own, and print() of several
    values can interleave with theirs."""
    if os.environ.get("WANPROXY_LOG"):
        os.write(2, (text + "\n").encode())


def sleep_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def close_quietly(s):
    try:
        s.close()
    except OSError:
        pass


def shut_write(s):
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class Pipe:
    """One direction of one connection: a reader thread timestamps what
    arrives and queues it (at most `limit` bytes, so that the sender is
    held back as a real link's window would), a writer thread passes each
    chunk on `delay` after it arrived, paced by the buckets."""

    def __init__(self, src, dst, delay, buckets, limit):
        self.src, self.dst = src, dst
        self.delay, self.buckets, self.limit = delay, buckets, limit
        self.q = collections.deque()
        self.queued = 0
        self.cond = threading.Condition()
        self.eof = False
        self.passed = 0

    def read(self):
        try:
            while True:
                with self.cond:
                    while self.queued >= self.limit:
                        self.cond.wait()
                data = self.src.recv(CHUNK)
                if not data:
                    break
                with self.cond:
                    self.q.append((time.monotonic(), data))
                    self.queued += len(data)
                    self.cond.notify_all()
        except OSError:
            pass
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def write(self):
        try:
            while True:
                with self.cond:
                    while not self.q and not self.eof:
                        self.cond.wait()
                    if not self.q:
                        break
                    arrived, data = self.q.popleft()
                t = arrived + self.delay
                for b in self.buckets:
                    t = b.book(len(data), t)
                sleep_until(t)
                self.dst.sendall(data)
                self.passed += len(data)
                with self.cond:
                    self.queued -= len(data)
                    self.cond.notify_all()
        except OSError:
            pass
        shut_write(self.dst)

    def start(self):
        threads = [threading.Thread(target=f, daemon=True) for f in (self.read, self.write)]
        for t in threads:
            t.start()
        return threads


def serve(client, addr, one_way, conn_rate, total):
    # A new connection's handshake: one round trip before anything flows.
    time.sleep(2 * one_way)
    try:
        upstream = socket.create_connection(addr)
    except OSError:
        close_quietly(client)
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # What may wait in the proxy per direction: the link's bandwidth-delay
    # product, twice, and at least 1 MiB.
    rate = conn_rate or total.rate or 1e9
    limit = max(1 << 20, int(2 * rate * one_way * 2))
    down = [b for b in (Bucket(conn_rate, DEPTH), total) if b.rate]
    threads = Pipe(client, upstream, one_way, [], limit).start()
    downstream = Pipe(upstream, client, one_way, down, limit)
    threads += downstream.start()
    for t in threads:
        t.join()
    log_line(f"close {time.monotonic()} {downstream.passed}")
    close_quietly(client)
    close_quietly(upstream)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream")
    ap.add_argument("--profile", choices=sorted(PROFILES))
    ap.add_argument("--rtt-ms", type=float)
    ap.add_argument("--conn-mbps", type=float, default=0)
    ap.add_argument("--total-mbps", type=float, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        for name, (rtt, conn, tot) in PROFILES.items():
            print(name, rtt, conn, tot)
        return
    if not a.upstream or not a.port_file or (a.profile is None) == (a.rtt_ms is None):
        ap.error("--upstream, --port-file and one of --profile / --rtt-ms are needed")
    if a.profile:
        rtt, conn, tot = PROFILES[a.profile]
    else:
        rtt, conn, tot = a.rtt_ms, a.conn_mbps, a.total_mbps
    host, _, port = a.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        sys.exit(f"wanproxy: {a.upstream} is not a loopback address")
    addr = (host.strip("[]"), int(port))
    one_way = rtt / 2000.0
    total = Bucket(tot * 1e6, 4 * DEPTH)
    # Threads that wake to send must get the interpreter soon.
    sys.setswitchinterval(0.0005)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("127.0.0.1:%d\n" % ls.getsockname()[1])
    os.rename(tmp, a.port_file)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            c, _ = ls.accept()
            log_line(f"accept {time.monotonic()}")
            threading.Thread(
                target=serve, args=(c, addr, one_way, conn * 1e6, total), daemon=True
            ).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
