"""Provenance of a result: which files it names, their size and sha256, and an HMAC over it all.

The runtime adds the manifest when it writes results.json; the plugin re-hashes the same files on
the launcher and checks the signature with the same functions, so both sides agree by
construction.
"""

import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

# The shared secret; passed to the task from the launcher's environment, never logged.
SIGNING_KEY_VARIABLE = "OMNIBIO_RESULT_SIGNING_KEY"
SIGNATURE_ALGORITHM = "hmac-sha256"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def file_digest(path: str) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as infile:
        while chunk := infile.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def file_manifest(results: Any) -> list[dict[str, Any]]:
    """One entry per regular file named by an absolute path anywhere in ``results``."""
    paths = sorted({s for s in _strings(results) if s.startswith("/") and os.path.isfile(s)})
    manifest = []
    for path in paths:
        size, sha256 = file_digest(path)
        manifest.append({"path": path, "size": size, "sha256": sha256})
    return manifest


def signature(document: Mapping[str, Any], key: str) -> str:
    """HMAC-SHA256 over the document's canonical JSON, its own ``signature`` field left out."""
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    mac = hmac.new(key.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256)
    return f"{SIGNATURE_ALGORITHM}:{mac.hexdigest()}"


def seal(document: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Add the manifest of the files the results name, and sign when the key is in ``env``."""
    manifest = file_manifest(document.get("results"))
    if manifest:
        document["manifest"] = manifest
    key = env.get(SIGNING_KEY_VARIABLE)
    if key:
        document["signature"] = signature(document, key)
    return document


def signature_matches(document: Mapping[str, Any], key: str) -> bool:
    return hmac.compare_digest(str(document.get("signature", "")), signature(document, key))
