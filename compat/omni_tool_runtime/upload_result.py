"""``upload_to_result_uri(...)`` and ``upload_result(document)``, as upstream documents them.

Dispatch goes through the module-level ``S3Uploader`` and ``AzureBlobUploader`` names (so a test
can replace them); gs:// and file:// go straight to miniwdl_omnibio.runtime.store.
"""

import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from miniwdl_omnibio.runtime import store
from miniwdl_omnibio.runtime.contract import read_contract
from miniwdl_omnibio.runtime.result import ResultTooLarge, complete, publish
from miniwdl_omnibio.runtime.uri import parse_result_uri as _parse_uri

from .result_uri import parse_result_uri
from .uploaders.azureblob_uploader import AzureBlobUploader
from .uploaders.s3_uploader import S3Uploader

__all__ = ["upload_to_result_uri", "upload_result", "S3Uploader", "AzureBlobUploader"]


def _normalize_result_uri(result_uri: str | None) -> str:
    """A URI ending in .json is the object itself; anything else is a prefix for results.json."""
    text = (result_uri or "").strip()
    if not text:
        raise RuntimeError("RESULT_URI not set: no result URI to upload to")
    if text.endswith("/"):
        return text.rstrip("/") + "/results.json"
    return text if text.lower().endswith(".json") else text + "/results.json"


def _parts(result_uri: str, scheme: str, label: str) -> tuple[str, str, str]:
    """(account, bucket or container, key) of a URI that must have ``scheme``."""
    if urlsplit(result_uri).scheme != scheme:
        raise ValueError(f"Not an {label} URI: {result_uri}")
    try:
        parsed = _parse_uri(result_uri)
    except ValueError as exn:
        raise ValueError(f"Invalid {label} URI: {exn}") from None
    return parsed.account, parsed.bucket, parsed.key


def _parse_s3(result_uri: str) -> tuple[str, str]:
    _, bucket, key = _parts(result_uri, "s3", "s3")
    return bucket, key


def _parse_azureblob(result_uri: str) -> tuple[str, str, str]:
    return _parts(result_uri, "azureblob", "azureblob")


def _check_gs(result_uri: str) -> None:
    _parts(result_uri, "gs", "gs://")


def _check_size(payload: bytes) -> None:
    """The plugin's [omnibio] result_max_bytes, passed as RESULT_MAX_BYTES."""
    limit = os.environ.get("RESULT_MAX_BYTES")
    if limit and len(payload) > int(limit):
        raise ResultTooLarge(
            f"results.json is {len(payload)} bytes, above the limit of {limit}"
            " ([omnibio] result_max_bytes); not uploaded"
        )


def upload_to_result_uri(
    *,
    result_uri: str,
    content: bytes | None = None,
    data: bytes | None = None,
    content_type: str = "application/json",
    aws_profile: str | None = None,
    azure_auth: str = "managed_identity",
    azure_connection_string: str | None = None,
) -> None:
    """Upload ``content`` (or, by its older name, ``data``) to the result URI or below a prefix.

    AWS_PROFILE, AZURE_AUTH and AZURE_STORAGE_CONNECTION_STRING fill in what is not passed.
    """
    payload = content if content is not None else data
    if payload is None:
        raise TypeError("upload_to_result_uri needs the bytes to upload: content=... or data=...")
    target = _normalize_result_uri(result_uri)
    scheme = parse_result_uri(target).scheme
    _check_size(payload)
    if scheme == "s3":
        bucket, key = _parse_s3(target)
        profile = aws_profile if aws_profile is not None else os.environ.get("AWS_PROFILE")
        S3Uploader(aws_profile=profile or None).upload_bytes(
            bucket=bucket, key=key, data=payload, content_type=content_type
        )
    elif scheme == "azureblob":
        account, container, blob_path = _parse_azureblob(target)
        if azure_connection_string is None:
            azure_connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if azure_auth == "managed_identity":
            azure_auth = os.environ.get("AZURE_AUTH", "managed_identity")
            if azure_connection_string and azure_auth == "managed_identity":
                azure_auth = "connection_string"  # a connection string in hand wins
        AzureBlobUploader(
            account_name=account, auth=azure_auth, connection_string=azure_connection_string
        ).upload_bytes(
            container=container, blob_path=blob_path, data=payload, content_type=content_type
        )
    elif scheme in ("gs", "file"):
        if scheme == "gs":
            _check_gs(target)  # a malformed gs:// URI gets upstream's message
        store.upload_result(target, payload, content_type)
    else:
        raise ValueError(f"Unsupported RESULT_URI scheme {scheme!r}: {target}")


def upload_result(result: dict[str, Any]) -> dict[str, Any]:
    """Upload a results.json document for this run (README's tool example): ok, tool_id and
    run_id filled in where missing, files it names listed with their sha256 (and signed with
    OMNIBIO_RESULT_SIGNING_KEY), printed to stdout; no upload without a result URI."""
    contract = read_contract(os.environ, required=False)
    document = complete(dict(result), contract, os.environ)
    body = json.dumps(document, indent=2)
    print(body)
    sys.stdout.flush()
    publish(body.encode("utf-8"), contract)
    return document
