#!/usr/bin/env python3
"""Generate the test fixture images and push them to a plain-HTTP registry.

Usage: push_fixtures.py --registry 127.0.0.1:PORT --work WORKDIR

Every blob pushed (layers, configs, manifests, indexes) is also saved as
WORKDIR/blobs/sha256/<hex>, and WORKDIR/fixtures.txt describes what was
pushed (see write_fixtures() for the record format).

Content comes from PRNGs seeded by fixture name, and tar/gzip metadata is
pinned, so the small layers have stable digests from run to run.  The big
layer (>= 105 MiB compressed) is the only slow part; it is cached in
WORKDIR/blobs and remembered in WORKDIR/fixtures-cache.json.

Python standard library only, plus the `zstd` command-line tool.
"""

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
import urllib.parse

# --- media types -----------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

KIB = 1024
MIB = 1024 * 1024

# Fixed timestamp for tar members, gzip headers and image configs.
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"

BIG_MIN_COMPRESSED = 105 * MIB
BIG_CACHE_KEY = "big/layer:v1 layer 0"


def log(msg):
    print(f"push_fixtures: {msg}", file=sys.stderr, flush=True)


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def seed_of(*parts):
    """Stable integer seed for a fixture component."""
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big")


# --- local blob store --------------------------------------------------------


class BlobStore:
    """WORKDIR/blobs/sha256/<hex>: a copy of every blob we push."""

    def __init__(self, root):
        self.dir = os.path.join(root, "sha256")
        os.makedirs(self.dir, exist_ok=True)

    def path(self, digest):
        algo, hexpart = digest.split(":", 1)
        assert algo == "sha256", digest
        return os.path.join(self.dir, hexpart)

    def add(self, data):
        """Store bytes; return (digest, size)."""
        digest = sha256_digest(data)
        path = self.path(digest)
        if not (os.path.exists(path) and os.path.getsize(path) == len(data)):
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return digest, len(data)

    def verify(self, digest, size):
        """True if the stored file exists with this size and hash."""
        path = self.path(digest)
        try:
            if os.path.getsize(path) != size:
                return False
        except OSError:
            return False
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while True:
                chunk = f.read(4 * MIB)
                if not chunk:
                    break
                h.update(chunk)
        return "sha256:" + h.hexdigest() == digest


# --- registry client ---------------------------------------------------------


class RegistryError(Exception):
    pass


class Registry:
    """Minimal OCI distribution API client over plain HTTP."""

    def __init__(self, addr, store):
        self.addr = addr
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.store = store
        self.blobs_uploaded = 0
        self.blobs_skipped = 0

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=300, blocksize=MIB)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.headers, data
        finally:
            conn.close()

    def check(self, what, status, data, expected):
        if status not in expected:
            text = data[:500].decode("utf-8", "replace")
            raise RegistryError(f"{what}: HTTP {status}: {text}")

    def blob_exists(self, repo, digest):
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        return status == 200

    def _location_path(self, location):
        """Path + query of an upload Location header (may be absolute)."""
        u = urllib.parse.urlsplit(location)
        return u.path + ("?" + u.query if u.query else "")

    def push_blob(self, repo, digest, size, mount_from=None):
        """Upload a blob from the local store unless the registry has it."""
        if self.blob_exists(repo, digest):
            self.blobs_skipped += 1
            return
        path = f"/v2/{repo}/blobs/uploads/"
        if mount_from:
            q = urllib.parse.urlencode({"mount": digest, "from": mount_from})
            path += "?" + q
        status, headers, data = self.request(
            "POST", path, body=b"", headers={"Content-Length": "0"})
        if status == 201:  # cross-repository mount succeeded
            self.blobs_skipped += 1
            return
        self.check(f"start upload {repo}", status, data, (202,))
        location = headers.get("Location")
        if not location:
            raise RegistryError(f"start upload {repo}: no Location header")
        put_path = self._location_path(location)
        sep = "&" if "?" in put_path else "?"
        put_path += sep + urllib.parse.urlencode({"digest": digest})
        with open(self.store.path(digest), "rb") as f:
            status, headers, data = self.request(
                "PUT", put_path, body=f,
                headers={"Content-Length": str(size),
                         "Content-Type": "application/octet-stream"})
        self.check(f"upload {digest} to {repo}", status, data, (201,))
        got = headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise RegistryError(f"upload to {repo}: registry says {got}, expected {digest}")
        self.blobs_uploaded += 1

    def put_manifest(self, repo, reference, body, media_type):
        status, headers, data = self.request(
            "PUT", f"/v2/{repo}/manifests/{reference}", body=body,
            headers={"Content-Type": media_type, "Content-Length": str(len(body))})
        self.check(f"put manifest {repo}:{reference}", status, data, (201,))
        want = sha256_digest(body)
        got = headers.get("Docker-Content-Digest")
        if got and got != want:
            raise RegistryError(f"manifest {repo}:{reference}: registry says {got}, expected {want}")
        return want


# --- layer generation --------------------------------------------------------


def tarinfo(name, kind=tarfile.REGTYPE, size=0, mode=0o644, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.linkname = linkname
    return ti


def text_blob(rng, label, lines):
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
             "hotel", "india", "juliet", "kilo", "lima", "mike", "november"]
    out = [f"# fixture {label}"]
    for i in range(lines):
        out.append(f"{i:05d} " + " ".join(rng.choice(words) for _ in range(8)))
    return ("\n".join(out) + "\n").encode()


def make_tar(label, random_size):
    """Uncompressed tar: a directory, a random (incompressible) file of
    random_size bytes, a text file, a config file and a symlink.  label
    makes every layer's content (and so its digest) unique."""
    rng = random.Random(seed_of("tar", label))
    top = "fx-" + hashlib.sha256(label.encode()).hexdigest()[:12]
    payload = rng.randbytes(random_size)
    text = text_blob(rng, label, 200)
    conf = f"label={label}\nsize={random_size}\n".encode()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarinfo(top + "/", tarfile.DIRTYPE, mode=0o755))
        tar.addfile(tarinfo(f"{top}/data.bin", size=len(payload)), io.BytesIO(payload))
        tar.addfile(tarinfo(f"{top}/notes.txt", size=len(text)), io.BytesIO(text))
        tar.addfile(tarinfo("etc/", tarfile.DIRTYPE, mode=0o755))
        tar.addfile(tarinfo(f"etc/{top}.conf", size=len(conf)), io.BytesIO(conf))
        tar.addfile(tarinfo(f"{top}/latest", tarfile.SYMTYPE, mode=0o777,
                            linkname="data.bin"))
    return buf.getvalue()


def gzip_bytes(data, level=6):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=level,
                       mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def zstd_bytes(data):
    res = subprocess.run(["zstd", "-q", "-c", "-3", "--no-progress"], input=data,
                         stdout=subprocess.PIPE, check=True)
    return res.stdout


def make_layer(store, label, random_size, compression, media_type):
    """Build, store and describe one layer."""
    tar = make_tar(label, random_size)
    if compression == "gzip":
        blob = gzip_bytes(tar)
    elif compression == "zstd":
        blob = zstd_bytes(tar)
    elif compression == "none":
        blob = tar
    else:
        raise ValueError(compression)
    digest, size = store.add(blob)
    return {"mediaType": media_type, "digest": digest, "size": size,
            "diff_id": sha256_digest(tar)}


class CountingHashWriter:
    """Write-through wrapper that hashes and counts what passes through."""

    def __init__(self, inner):
        self.inner = inner
        self.hash = hashlib.sha256()
        self.count = 0

    def write(self, data):
        self.hash.update(data)
        self.count += len(data)
        return self.inner.write(data)

    def tell(self):
        return self.count

    def flush(self):
        return self.inner.flush()


class RandomReader:
    """File-like source of size seeded pseudo-random bytes."""

    def __init__(self, seed, size):
        self.rng = random.Random(seed)
        self.left = size

    def read(self, n=-1):
        if n is None or n < 0 or n > self.left:
            n = self.left
        self.left -= n
        return self.rng.randbytes(n)


def make_big_layer(store, work):
    """The >= 105 MiB gzip layer; reuses the cached blob when possible."""
    cache_path = os.path.join(work, "fixtures-cache.json")
    cache = {}
    try:
        with open(cache_path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(BIG_CACHE_KEY)
    if entry and entry.get("size", 0) >= BIG_MIN_COMPRESSED and \
            store.verify(entry["digest"], entry["size"]):
        log(f"big layer: reusing cached {entry['digest']}")
        return {"mediaType": OCI_LAYER_GZIP, "digest": entry["digest"],
                "size": entry["size"], "diff_id": entry["diff_id"]}

    t0 = time.monotonic()
    tmp = os.path.join(store.dir, "big-layer.tmp")
    # 3 random files of 35 MiB + 96 KiB each: gzip -1 cannot shrink them, so
    # the compressed blob ends up a little above 105 MiB.
    part = 35 * MIB + 96 * KIB
    label = "big/layer:v1"
    top = "big-" + hashlib.sha256(label.encode()).hexdigest()[:12]
    with open(tmp, "wb") as raw:
        outer = CountingHashWriter(raw)
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=outer, compresslevel=1, mtime=0)
        inner = CountingHashWriter(gz)
        with tarfile.open(fileobj=inner, mode="w", format=tarfile.PAX_FORMAT,
                          copybufsize=MIB) as tar:
            tar.addfile(tarinfo(top + "/", tarfile.DIRTYPE, mode=0o755))
            for i in range(3):
                tar.addfile(tarinfo(f"{top}/random-{i}.bin", size=part),
                            RandomReader(seed_of("big", str(i)), part))
            note = b"105 MiB of pseudo-random data for streaming tests\n"
            tar.addfile(tarinfo(f"{top}/README", size=len(note)), io.BytesIO(note))
            tar.addfile(tarinfo(f"{top}/first", tarfile.SYMTYPE, mode=0o777,
                                linkname="random-0.bin"))
        gz.close()
        raw.flush()
        os.fsync(raw.fileno())
    digest = "sha256:" + outer.hash.hexdigest()
    size = outer.count
    diff_id = "sha256:" + inner.hash.hexdigest()
    if size < BIG_MIN_COMPRESSED:
        os.unlink(tmp)
        raise RuntimeError(f"big layer only {size} bytes")
    os.replace(tmp, store.path(digest))
    cache[BIG_CACHE_KEY] = {"digest": digest, "size": size, "diff_id": diff_id}
    with open(cache_path + ".tmp", "w") as f:
        json.dump(cache, f, indent=2, sort_keys=True)
    os.replace(cache_path + ".tmp", cache_path)
    log(f"big layer: generated {digest} ({size} bytes) in {time.monotonic() - t0:.1f}s")
    return {"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size, "diff_id": diff_id}


# --- images ------------------------------------------------------------------


def dumps(obj):
    return json.dumps(obj, indent=2).encode() + b"\n"


def platform_str(p):
    s = f"{p['os']}/{p['architecture']}"
    if p.get("variant"):
        s += "/" + p["variant"]
    return s


def platform(os_, arch, variant=None):
    p = {"architecture": arch, "os": os_}
    if variant:
        p["variant"] = variant
    return p


class Image:
    """One single-platform image: config + layers + manifest bytes."""

    def __init__(self, store, plat, layers, docker=False, with_media_type=True):
        self.platform = plat
        self.layers = layers
        config = {
            "created": CREATED,
            "architecture": plat["architecture"],
            "os": plat["os"],
        }
        if plat.get("variant"):
            config["variant"] = plat["variant"]
        config["config"] = {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        }
        config["rootfs"] = {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]}
        config["history"] = [{"created": CREATED, "created_by": f"fixture layer {i}"}
                             for i in range(len(layers))]
        config_bytes = dumps(config)
        self.config_digest, self.config_size = store.add(config_bytes)

        self.media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifest = {"schemaVersion": 2}
        if with_media_type:
            manifest["mediaType"] = self.media_type
        manifest["config"] = {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": self.config_digest,
            "size": self.config_size,
        }
        manifest["layers"] = [{"mediaType": l["mediaType"], "digest": l["digest"],
                               "size": l["size"]} for l in layers]
        self.body = dumps(manifest)
        self.digest, self.size = store.add(self.body)

    def descriptor(self):
        return {"mediaType": self.media_type, "digest": self.digest,
                "size": self.size, "platform": self.platform}

    def push(self, reg, repo, tags=(), mount_from=None):
        reg.push_blob(repo, self.config_digest, self.config_size, mount_from)
        for l in self.layers:
            reg.push_blob(repo, l["digest"], l["size"], mount_from)
        reg.put_manifest(repo, self.digest, self.body, self.media_type)
        for tag in tags:
            reg.put_manifest(repo, tag, self.body, self.media_type)


class Index:
    """An OCI image index or Docker manifest list over several Images."""

    def __init__(self, store, images, docker=False, with_media_type=True):
        self.images = images
        self.media_type = DOCKER_LIST if docker else OCI_INDEX
        index = {"schemaVersion": 2}
        if with_media_type:
            index["mediaType"] = self.media_type
        index["manifests"] = [img.descriptor() for img in images]
        self.body = dumps(index)
        self.digest, self.size = store.add(self.body)

    def push(self, reg, repo, tag):
        for img in self.images:
            img.push(reg, repo)
        reg.put_manifest(repo, tag, self.body, self.media_type)


def small_layers(store, repo, plat, specs, docker=False):
    """specs: list of (random_size, compression)."""
    out = []
    for i, (size, comp) in enumerate(specs):
        if docker:
            mt = DOCKER_LAYER_GZIP
        else:
            mt = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER_TAR}[comp]
        out.append(make_layer(store, f"{repo}|{platform_str(plat)}|{i}", size, comp, mt))
    return out


# --- fixtures.txt --------------------------------------------------------------


class Fixtures:
    def __init__(self, addr):
        self.addr = addr
        self.lines = [
            "# generated by c-tests/rig/push_fixtures.py; fields separated by single spaces",
            "# registry <host:port>",
            "# layer <ref> <platform> <index> <digest> <size> <mediaType>",
            "# manifest <ref> <platform> <digest>",
            "# index <ref> <digest>",
            "# url <url> <digest> <size>",
            "# big <ref> <digest> <size>",
            f"registry {addr}",
        ]

    def ref(self, repo, tag):
        return f"{self.addr}/{repo}:{tag}"

    def image(self, ref, img, plat=None):
        p = platform_str(plat or img.platform)
        self.lines.append(f"manifest {ref} {p} {img.digest}")
        for i, l in enumerate(img.layers):
            self.lines.append(f"layer {ref} {p} {i} {l['digest']} {l['size']} {l['mediaType']}")

    def index(self, ref, idx):
        self.lines.append(f"index {ref} {idx.digest}")
        for img in idx.images:
            self.image(ref, img)

    def url(self, path, layer):
        self.lines.append(f"url http://{self.addr}{path} {layer['digest']} {layer['size']}")

    def write(self, path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        os.replace(tmp, path)


# --- main --------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--registry", required=True, help="host:port, e.g. 127.0.0.1:5001")
    ap.add_argument("--work", required=True, help="work directory")
    args = ap.parse_args()

    t0 = time.monotonic()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    store = BlobStore(os.path.join(work, "blobs"))
    reg = Registry(args.registry, store)
    fx = Fixtures(args.registry)

    status, _, body = reg.request("GET", "/v2/")
    if status != 200:
        raise RegistryError(f"GET /v2/ on {args.registry}: HTTP {status} {body[:200]!r}")

    # a. library/hello:latest -- OCI index, 3 platforms x 2 gzip layers.
    repo = "library/hello"
    hello = {}
    for n, plat in enumerate([platform("linux", "amd64"),
                              platform("linux", "arm64", "v8"),
                              platform("linux", "arm", "v7")]):
        layers = small_layers(store, repo, plat,
                              [(160 * KIB + n * 40 * KIB, "gzip"),
                               (300 * KIB + n * 50 * KIB, "gzip")])
        hello[plat["architecture"]] = Image(store, plat, layers)
    hello_idx = Index(store, list(hello.values()))
    hello_idx.push(reg, repo, "latest")
    fx.index(fx.ref(repo, "latest"), hello_idx)

    # b. library/big:latest and big/layer:v1 -- one >= 105 MiB gzip layer.
    big_layer = make_big_layer(store, work)
    big = Image(store, platform("linux", "amd64"), [big_layer])
    big.push(reg, "library/big", ["latest"])
    big.push(reg, "big/layer", ["v1"], mount_from="library/big")
    fx.image(fx.ref("library/big", "latest"), big)
    fx.image(fx.ref("big/layer", "v1"), big)

    # c. plain/nomt:v1 -- OCI manifest without mediaType; tar, gzip, zstd layers.
    repo = "plain/nomt"
    plat = platform("linux", "amd64")
    layers = small_layers(store, repo, plat,
                          [(2 * MIB + 512 * KIB, "none"),
                           (3 * MIB, "gzip"),
                           (3 * MIB + 512 * KIB, "zstd")])
    nomt = Image(store, plat, layers, with_media_type=False)
    nomt.push(reg, repo, ["v1"])
    fx.image(fx.ref(repo, "v1"), nomt)

    # d. multi/index:v1 -- OCI index without mediaType, 5 platforms.
    repo = "multi/index"
    images = []
    for n, plat in enumerate([platform("linux", "amd64"),
                              platform("linux", "arm64", "v8"),
                              platform("linux", "arm", "v6"),
                              platform("linux", "arm", "v7"),
                              platform("linux", "s390x")]):
        layers = small_layers(store, repo, plat, [(8 * KIB + n * KIB, "gzip")])
        images.append(Image(store, plat, layers))
    multi = Index(store, images, with_media_type=False)
    multi.push(reg, repo, "v1")
    fx.index(fx.ref(repo, "v1"), multi)

    # e. docker/list:v1 -- Docker manifest list of schema 2 manifests.
    repo = "docker/list"
    images = []
    for n, plat in enumerate([platform("linux", "amd64"),
                              platform("linux", "arm64", "v8")]):
        layers = small_layers(store, repo, plat,
                              [(48 * KIB + n * KIB, "gzip"), (96 * KIB + n * KIB, "gzip")],
                              docker=True)
        images.append(Image(store, plat, layers, docker=True))
    dlist = Index(store, images, docker=True)
    dlist.push(reg, repo, "v1")
    fx.index(fx.ref(repo, "v1"), dlist)

    # f. a/b/c:tag -- nested repository, Docker schema 2 manifest.
    repo = "a/b/c"
    plat = platform("linux", "amd64")
    layers = small_layers(store, repo, plat, [(32 * KIB, "gzip")], docker=True)
    abc = Image(store, plat, layers, docker=True)
    abc.push(reg, repo, ["tag"])
    fx.image(fx.ref(repo, "tag"), abc)

    # URLs in the original grammar:
    #   /v2/library/<repo>/[arch-<a>/][os-<o>/][digest-<n>]  (defaults amd64, linux, 1)
    #   /v2/library/<repo>/blobs/<digest>
    fx.url("/v2/library/hello/", hello["amd64"].layers[0])
    fx.url("/v2/library/hello/digest-2", hello["amd64"].layers[1])
    fx.url("/v2/library/hello/os-linux/digest-1", hello["amd64"].layers[0])
    fx.url("/v2/library/hello/arch-arm64/digest-2", hello["arm64"].layers[1])
    fx.url("/v2/library/hello/arch-arm64/os-linux/digest-1", hello["arm64"].layers[0])
    fx.url("/v2/library/hello/arch-arm/digest-1", hello["arm"].layers[0])
    fx.url(f"/v2/library/hello/blobs/{hello['arm64'].layers[0]['digest']}",
           hello["arm64"].layers[0])
    fx.url("/v2/library/big/digest-1", big_layer)
    fx.url(f"/v2/library/big/blobs/{big_layer['digest']}", big_layer)

    fx.lines.append(f"big {fx.ref('big/layer', 'v1')} {big_layer['digest']} {big_layer['size']}")
    fx.write(os.path.join(work, "fixtures.txt"))
    log(f"done in {time.monotonic() - t0:.1f}s: {reg.blobs_uploaded} blobs uploaded, "
        f"{reg.blobs_skipped} already present; wrote {os.path.join(work, 'fixtures.txt')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RegistryError, OSError, subprocess.CalledProcessError, RuntimeError) as e:
        log(f"error: {e}")
        sys.exit(1)
