#!/usr/bin/env python3
"""Tiny client for the control API of c-tests/rig/faultproxy.py.

  faultctl.py PROXY rules '<json list>'   replace the rules ('-': read stdin)
  faultctl.py PROXY add '<json>'          append a rule or a list of rules
  faultctl.py PROXY list                  print the rules with their counters
  faultctl.py PROXY clear                 remove all rules
  faultctl.py PROXY stats                 print the stats JSON
  faultctl.py PROXY reset-stats           reset the stats

PROXY is HOST:PORT (e.g. $PROXY from faultproxy.env).  Exits 1 when the
proxy refuses the request (e.g. an invalid rule) or cannot be reached.
"""

import http.client
import json
import sys

COMMANDS = {
    # name: (method, path, takes a JSON argument)
    "rules": ("PUT", "/__proxy/rules", True),
    "add": ("POST", "/__proxy/rules", True),
    "list": ("GET", "/__proxy/rules", False),
    "clear": ("DELETE", "/__proxy/rules", False),
    "stats": ("GET", "/__proxy/stats", False),
    "reset-stats": ("DELETE", "/__proxy/stats", False),
}


def fail(msg):
    print(f"faultctl: {msg}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) < 3 or argv[2] not in COMMANDS:
        sys.stderr.write(__doc__)
        sys.exit(2)
    addr, cmd = argv[1], argv[2]
    method, path, takes_arg = COMMANDS[cmd]
    if len(argv) != (4 if takes_arg else 3):
        sys.stderr.write(__doc__)
        sys.exit(2)

    body = None
    if takes_arg:
        text = sys.stdin.read() if argv[3] == "-" else argv[3]
        try:
            json.loads(text)
        except ValueError as e:
            fail(f"invalid JSON argument: {e}")
        body = text.encode()

    if "://" in addr:
        addr = addr.split("://", 1)[1]
    addr = addr.rstrip("/")
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        fail(f"PROXY must be HOST:PORT, not {addr!r}")

    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as e:
        fail(f"{addr}: {e}")
    finally:
        conn.close()

    if resp.status != 200:
        fail(f"{method} {path}: HTTP {resp.status}: {data.decode(errors='replace').strip()}")
    if cmd in ("stats", "list"):
        sys.stdout.write(data.decode())


if __name__ == "__main__":
    main(sys.argv)
