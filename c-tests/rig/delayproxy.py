#!/usr/bin/env python3
"""A registry some milliseconds away, for make bench: a TCP proxy on
127.0.0.1 that holds every piece of a request back DELAY ms before it
passes it on, and passes the answers back untouched.

Usage: delayproxy.py --upstream HOST:PORT --delay-ms DELAY --port-file FILE

Each request then costs one more DELAY, as a round trip to a registry on
a network does, while the bodies flow at the loopback's speed (the proxy
copies them without looking at them, so it adds little CPU: unlike
faultproxy.py it does not parse HTTP). FILE gets "127.0.0.1:PORT" once
the proxy listens; SIGTERM or SIGINT stop it.
"""

import argparse
import os
import signal
import socket
import sys
import threading
import time

BUF = 256 * 1024


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


def requests(client, upstream, delay):
    """Client to upstream: what each recv() gets goes on DELAY later (a
    request, as HTTP/1.1 clients send one at a time and wait for its
    answer)."""
    try:
        while True:
            data = client.recv(BUF)
            if not data:
                break
            time.sleep(delay)
            upstream.sendall(data)
    except OSError:
        pass
    shut_write(upstream)


def answers(upstream, client):
    """Upstream to client, as it comes."""
    buf = bytearray(BUF)
    view = memoryview(buf)
    try:
        while True:
            n = upstream.recv_into(buf)
            if n == 0:
                break
            client.sendall(view[:n])
    except OSError:
        pass
    shut_write(client)


def serve(client, addr, delay):
    try:
        upstream = socket.create_connection(addr)
    except OSError:
        close_quietly(client)
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=answers, args=(upstream, client), daemon=True)
    back.start()
    requests(client, upstream, delay)
    back.join()
    close_quietly(client)
    close_quietly(upstream)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--delay-ms", type=float, required=True)
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    host, _, port = a.upstream.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        sys.exit(f"delayproxy: {a.upstream} is not a loopback address")
    addr = (host.strip("[]"), int(port))
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(a.port_file + ".tmp", "w") as f:
        f.write("127.0.0.1:%d\n" % lsock.getsockname()[1])
    os.replace(a.port_file + ".tmp", a.port_file)
    try:
        while True:
            client, _ = lsock.accept()
            threading.Thread(
                target=serve, args=(client, addr, a.delay_ms / 1000.0), daemon=True
            ).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
