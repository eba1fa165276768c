"""Reading a task's results.json back on the launcher and deciding whether it verifies the attempt.

The tool runtime uploads results.json from inside the container; the plugin reads it with the same
store code after the command exited 0. Pure of miniwdl: the lifecycle decides what a problem does
(fail the task, or warn) from ``[omnibio] result_check``.
"""

import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from WDL._util import path_really_within, write_atomic

from .contract import mount_pairs
from .runtime.contract import DEFAULT_RESULT_MAX_BYTES
from .runtime.provenance import SIGNING_KEY_VARIABLE, file_digest, signature_matches
from .runtime.store import delete_result, download_result
from .runtime.uri import ResultUri

# The verified results.json is copied here, in the task's working directory, so WDL outputs can
# use it: read_json("omnibio_result.json") or File result = "omnibio_result.json".
RESULT_FILE = "omnibio_result.json"
RESULT_CHECKS = ("fail", "warn", "off")
ToHost = Callable[[str], str | None]


class ResultProblem(Exception):
    """results.json does not verify the attempt; the message is one line naming what is wrong."""


def clear_stale(result: ResultUri) -> None:
    """Remove a results.json an earlier attempt left: it must not verify this one."""
    delete_result(result)


def container_to_host(mounts: Iterable[Any]) -> ToHost:
    """Map an in-container path back to the launcher through the attempt's mounts
    (Mount objects or (host_path, container_path, read_only) tuples); None when none holds it."""
    pairs = sorted(mount_pairs(mounts), key=lambda pair: len(pair[1]), reverse=True)

    def to_host(path: str) -> str | None:
        for host, container in pairs:
            if path == container:
                return host
            if path.startswith(container.rstrip("/") + "/"):
                found = os.path.join(host, path[len(container.rstrip("/")) + 1 :])
                # as miniwdl: no .. or symlink may lead out of the mount on the host
                return found if path_really_within(found, host) else None
        return None

    return to_host


def _load(result: ResultUri, max_bytes: int) -> dict[str, Any]:
    try:
        data = download_result(result)
    except FileNotFoundError:
        raise ResultProblem(f"results.json missing: the tool did not upload {result}") from None
    except Exception as exn:
        raise ResultProblem(f"results.json unreadable at {result}: {str(exn)[:300]}") from None
    if len(data) > max_bytes:
        raise ResultProblem(
            f"results.json at {result} is {len(data)} bytes, above [omnibio] result_max_bytes"
            f" = {max_bytes}"
        )
    try:
        document = json.loads(data)
    except ValueError as exn:
        raise ResultProblem(f"results.json unreadable at {result}: {exn}") from None
    if not isinstance(document, dict):
        raise ResultProblem(f"results.json unreadable at {result}: not a JSON object")
    return document


def _check_fields(document: Mapping[str, Any], result: ResultUri, run_id: str) -> None:
    """A boolean ``ok`` and this attempt's ``run_id`` are required."""
    missing = [name for name in ("ok", "run_id") if name not in document]
    if missing:
        raise ResultProblem(f"results.json at {result} has no {' and no '.join(missing)}")
    if not isinstance(document["ok"], bool):
        raise ResultProblem(
            f"results.json at {result}: ok must be true or false, not {document['ok']!r}"
        )
    if document["run_id"] != run_id:
        raise ResultProblem(
            f"results.json at {result} is from run {document['run_id']}, not {run_id}"
        )


def _check_manifest(document: Mapping[str, Any], result: ResultUri, to_host: ToHost) -> None:
    """Re-hash each file the manifest names, where the launcher can see it."""
    manifest = document.get("manifest", [])
    if not isinstance(manifest, list):
        raise ResultProblem(f"results.json at {result}: manifest is not a list")
    for entry in manifest:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            raise ResultProblem(f"results.json at {result}: manifest entry without a path")
        host_path = to_host(path)
        if host_path is None:
            continue  # not on a mount the launcher shares (e.g. the container's /tmp)
        if not os.path.isfile(host_path):
            raise ResultProblem(f"results.json at {result} names {path}, which does not exist")
        size, sha256 = file_digest(host_path)
        if size != entry.get("size"):
            raise ResultProblem(
                f"results.json at {result}: {path} is {size} bytes, the manifest says"
                f" {entry.get('size')}"
            )
        if sha256 != entry.get("sha256"):
            raise ResultProblem(f"results.json at {result}: {path} does not match its sha256")


def _check_signature(document: Mapping[str, Any], result: ResultUri, key: str) -> None:
    if "signature" not in document:
        raise ResultProblem(
            f"results.json at {result} is not signed, but {SIGNING_KEY_VARIABLE} is set"
        )
    if not signature_matches(document, key):
        raise ResultProblem(
            f"results.json at {result}: signature does not match (altered, or signed with"
            " another key)"
        )


def verify_result(
    result: ResultUri,
    run_id: str,
    host_work_dir: str,
    *,
    max_bytes: int = DEFAULT_RESULT_MAX_BYTES,
    to_host: ToHost | None = None,
    signing_key: str | None = None,
) -> dict[str, Any]:
    """The attempt's results.json, checked and copied to ``host_work_dir``/RESULT_FILE.

    ``to_host`` maps the in-container paths of the manifest to the launcher (files it maps to
    None are not re-hashed); ``signing_key`` defaults to OMNIBIO_RESULT_SIGNING_KEY in the
    launcher's environment, and when set every results.json must carry a matching signature.
    """
    document = _load(result, max_bytes)
    _check_fields(document, result, run_id)
    key = signing_key if signing_key is not None else os.environ.get(SIGNING_KEY_VARIABLE)
    if key:
        _check_signature(document, result, key)
    _check_manifest(document, result, to_host or (lambda path: None))
    if document["ok"] is False:
        error = f": {document['error']}" if document.get("error") else ""
        raise ResultProblem(f"results.json at {result} says ok=false{error}")
    write_atomic(json.dumps(document, indent=2), os.path.join(host_work_dir, RESULT_FILE))
    return document
