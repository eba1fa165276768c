"""A read-only container registry on 127.0.0.1 serving one tiny image, for pull-policy tests.

It speaks the pull half of the registry HTTP API, as dockerd uses it:
- OCI distribution-spec (github.com/opencontainers/distribution-spec, spec.md): "end-1"
  ``GET /v2/`` answers 200 when the API is there; "Pulling manifests" ``GET|HEAD
  /v2/<name>/manifests/<reference>`` (a tag or a digest) answers the manifest with its media type
  as Content-Type and ``Docker-Content-Digest``, or 404; "Pulling blobs" ``GET|HEAD
  /v2/<name>/blobs/<digest>`` likewise; "Error Codes": a 404 body is ``{"errors": [{"code":
  "MANIFEST_UNKNOWN" | "BLOB_UNKNOWN", "message": ...}]}``.
- The manifest is Docker's "Image Manifest Version 2, Schema 2"
  (github.com/distribution/distribution, docs/spec/manifest-v2-2.md): a config blob
  (application/vnd.docker.container.image.v1+json) and gzip layers
  (application/vnd.docker.image.rootfs.diff.tar.gzip). The config is the image JSON of moby's
  image spec v1.2 (architecture, os, rootfs.diff_ids = sha256 of each uncompressed layer), so
  the image id dockerd gives it is the sha256 of the config blob.
- A registry that cannot serve answers 503 with the code UNAVAILABLE, "service unavailable"
  (github.com/distribution/distribution, registry/api/errcode/register.go,
  ErrorCodeUnavailable): ``unavailable`` makes the next manifest requests answer so. A slow
  network is ``blob_delay``, a pause before each blob's answer.
- dockerd treats registries on 127.0.0.0/8 as insecure by default and then speaks plain HTTP to
  them (Docker Engine API, RegistryServiceConfig.InsecureRegistryCIDRs), so no TLS is needed.
"""

import base64
import gzip
import hashlib
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import docker

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Run in the rig's base image: a tar of dash, bash, sleep and the libraries they load, which is
# all a task (miniwdl's /bin/bash command) and the run's network sandbox (/bin/sh, sleep) need.
# In base64: dockerd's log driver keeps text, not bytes.
LAYER_SCRIPT = r"""
set -e
cd /
paths="usr/bin/sh usr/bin/dash usr/bin/bash usr/bin/sleep"
for top in bin lib lib64 sbin; do [ -L "$top" ] && paths="$paths $top"; done
for binary in /usr/bin/dash /usr/bin/bash /usr/bin/sleep; do
  for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    paths="$paths $(readlink -f "$(dirname "$lib")" | cut -c2-)/$(basename "$lib")"
    paths="$paths $(readlink -f "$lib" | cut -c2-)"
  done
done
tar -cf - --owner=0 --group=0 --no-recursion $(echo $paths | tr ' ' '\n' | sort -u) | base64 -w0
"""


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    host: str  # 127.0.0.1:<port>
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)  # "<name>:<tag>" -> manifest
    requests: list[str] = field(default_factory=list)  # "GET /v2/..." in order
    blob_delay: float = 0.0  # seconds each blob GET waits before its answer: a slow pull
    unavailable: int = 0  # how many manifest requests to come answer 503: a registry hiccup

    def add_image(self, name: str, tag: str, layer_tar: bytes, base: dict) -> tuple[str, str]:
        """Serve ``layer_tar`` as the image ``name:tag``; returns (image id, manifest digest)."""
        layer = gzip.compress(layer_tar, mtime=0)
        config = json.dumps(
            {
                "architecture": base["Architecture"],
                "os": base["Os"],
                "config": {"Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": [_digest(layer_tar)]},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {
                    "mediaType": CONFIG_TYPE,
                    "size": len(config),
                    "digest": _digest(config),
                },
                "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": _digest(layer)}],
            }
        ).encode()
        self.blobs[_digest(config)] = config
        self.blobs[_digest(layer)] = layer
        self.manifests[f"{name}:{tag}"] = manifest
        self.manifests[f"{name}:{_digest(manifest)}"] = manifest
        return _digest(config), _digest(manifest)

    def manifest_requests(self, name: str) -> int:
        return sum(1 for r in self.requests if f" /v2/{name}/manifests/" in r)


def tiny_layer() -> tuple[bytes, dict]:
    """The layer tar made in the rig's base image, and that image's attributes."""
    client = docker.from_env()
    base = client.images.get("omnibio/base:bookworm")
    encoded = client.containers.run(base.id, ["/bin/sh", "-c", LAYER_SCRIPT], remove=True)
    return base64.b64decode(encoded), base.attrs


def _handler(registry: Registry) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            registry.requests.append(f"{self.command} {self.path}")
            if self.path == "/v2/":
                return self._send(200, "application/json", b"{}", None, body)
            match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", self.path)
            if match and match.group(2) == "manifests" and registry.unavailable > 0:
                registry.unavailable -= 1
                errors = {"errors": [{"code": "UNAVAILABLE", "message": "service unavailable"}]}
                return self._send(503, "application/json", json.dumps(errors).encode(), None, body)
            if match and match.group(2) == "manifests":
                found = registry.manifests.get(f"{match.group(1)}:{match.group(3)}")
                if found is not None:
                    return self._send(200, MANIFEST_TYPE, found, _digest(found), body)
                return self._error("MANIFEST_UNKNOWN", "manifest unknown", body)
            if match and match.group(3) in registry.blobs:
                blob = registry.blobs[match.group(3)]
                if body:
                    time.sleep(registry.blob_delay)
                return self._send(200, "application/octet-stream", blob, _digest(blob), body)
            return self._error("BLOB_UNKNOWN", "blob unknown to registry", body)

        def _error(self, code: str, message: str, body: bool) -> None:
            errors = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
            self._send(404, "application/json", errors, None, body)

        def _send(
            self, status: int, content_type: str, data: bytes, digest: str | None, body: bool
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            if digest:
                self.send_header("Docker-Content-Digest", digest)
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


@contextmanager
def serve() -> Iterator[Registry]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(Registry("")))
    registry = Registry(f"127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
