"""The KEY=VALUE files the set-up scripts write (registry.env,
faultproxy.env, auth-MODE.env), read back by the Python tests."""


def read(path):
    """A dict of the file's KEY=VALUE lines; blank lines and lines that
    start with '#' are skipped, and a value is everything after the first
    '=' (no quotes, no expansion: the writers never need them)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out
