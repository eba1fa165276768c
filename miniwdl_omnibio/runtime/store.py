"""Putting results.json at a result URI and reading it back.

The tool runtime uploads from inside the container; the plugin downloads with the same code to
verify. Cloud SDKs are imported only for their scheme.
"""

import contextlib
import json
import os
import tempfile
from typing import Any

from .uri import ResultUri, parse_result_uri

# Where an azureblob:// account is served, unless AZURE_STORAGE_CONNECTION_STRING or
# AZURE_STORAGE_BLOB_ENDPOINT says otherwise (Azurite, sovereign clouds, private endpoints).
AZURE_BLOB_URL = "https://{account}.blob.core.windows.net"


def _as_uri(uri: str | ResultUri) -> ResultUri:
    return uri if isinstance(uri, ResultUri) else parse_result_uri(uri)


def _s3_client():
    import boto3  # honours AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL for MinIO, moto, VPC endpoints

    return boto3.session.Session().client("s3")


def _blob_client(uri: ResultUri):
    from azure.storage.blob import BlobClient

    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        return BlobClient.from_connection_string(connection_string, uri.bucket, uri.key)
    from azure.identity import DefaultAzureCredential  # managed identity, workload identity, CLI

    endpoint = os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT") or AZURE_BLOB_URL.format(
        account=uri.account
    )
    return BlobClient(endpoint, uri.bucket, uri.key, credential=DefaultAzureCredential())


def upload_result(uri: str | ResultUri, data: bytes) -> None:
    """Store ``data`` at the URI (file writes are atomic: a reader never sees half a file)."""
    target = _as_uri(uri)
    if target.scheme == "file":
        directory = os.path.dirname(target.key)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".results.")
        with os.fdopen(fd, "wb") as outfile:
            outfile.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target.key)
    elif target.scheme == "s3":
        _s3_client().put_object(
            Bucket=target.bucket, Key=target.key, Body=data, ContentType="application/json"
        )
    else:
        _blob_client(target).upload_blob(data, overwrite=True)


def download_result(uri: str | ResultUri) -> bytes:
    """Read the object at the URI; FileNotFoundError when there is none."""
    source = _as_uri(uri)
    if source.scheme == "file":
        with open(source.key, "rb") as infile:
            return infile.read()
    if source.scheme == "s3":
        client = _s3_client()
        try:
            return client.get_object(Bucket=source.bucket, Key=source.key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(str(source)) from None
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return _blob_client(source).download_blob().readall()
    except ResourceNotFoundError:
        raise FileNotFoundError(str(source)) from None


def delete_result(uri: str | ResultUri) -> None:
    """Remove a stale result before an attempt starts; absent is fine."""
    target = _as_uri(uri)
    if target.scheme == "file":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target.key)
    elif target.scheme == "s3":
        _s3_client().delete_object(Bucket=target.bucket, Key=target.key)
    else:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            _blob_client(target).delete_blob()


def write_result(
    results: dict[str, Any], *, ok: bool = True, error: str = "", env=None
) -> dict[str, Any]:
    """Build results.json for this run from the contract and upload it to RESULT_URI.

    Returns the document. Without a result URI in the contract, nothing is uploaded.
    """
    from .contract import read_contract

    contract = read_contract(env)
    document = {
        "ok": ok,
        "tool_id": contract.tool_id,
        "run_id": contract.run_id,
        "results": results,
    }
    if error:
        document["error"] = error
    if contract.result_uri:
        upload_result(contract.result_uri, json.dumps(document, indent=2).encode("utf-8"))
    return document
