"""Putting results.json at a result URI and reading it back.

The tool runtime uploads from inside the container; the plugin downloads with the same code to
verify. Each cloud SDK is imported only when its scheme is used, so a tool image needs only the
SDK of the store it writes to.
"""

import contextlib
import importlib
import os
import tempfile
import threading
from types import ModuleType
from typing import Any

from .uri import ResultUri, parse_result_uri

# Where an azureblob:// account is served, unless AZURE_STORAGE_CONNECTION_STRING or
# AZURE_STORAGE_BLOB_ENDPOINT says otherwise (Azurite, sovereign clouds, private endpoints).
AZURE_BLOB_URL = "https://{account}.blob.core.windows.net"
JSON = "application/json"
# module imported -> (pip package, extra of this distribution that brings it)
SDKS = {
    "boto3": ("boto3", "aws"),
    "azure.storage.blob": ("azure-storage-blob", "azure"),
    "azure.identity": ("azure-identity", "azure"),
    "google.cloud.storage": ("google-cloud-storage", "gcs"),
}


# what boto3 reads from the environment to pick an S3 endpoint and credentials
S3_ENVIRONMENT = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
_S3_CLIENTS: dict[tuple[Any, ...], Any] = {}
_S3_LOCK = threading.Lock()


def import_sdk(module: str) -> ModuleType:
    """Import a cloud SDK; RuntimeError names the pip package when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = SDKS[module]
        raise RuntimeError(
            f"{package} not installed: pip install '{package}' (the [{extra}] extra of "
            "miniwdl-omnibio, which also serves the omnibioai-tool-runtime API)"
        ) from None


def _as_uri(uri: str | ResultUri) -> ResultUri:
    return uri if isinstance(uri, ResultUri) else parse_result_uri(uri)


def s3_client(profile: str | None = None) -> Any:
    """boto3's standard chain (AWS_PROFILE, AWS_ENDPOINT_URL_S3 for MinIO and moto, roles).

    One client per profile and AWS environment, shared by every thread (boto3 clients are
    thread-safe): making one costs tens of milliseconds of CPU, which a launcher clearing a
    thousand attempts' stale results at once would otherwise spend a thousand times. The boto3
    module is part of the key, so a stand-in for it (upstream's uploader tests) gets its own."""
    boto3 = import_sdk("boto3")
    key = (boto3, profile, *(os.environ.get(name) for name in S3_ENVIRONMENT))
    with _S3_LOCK:
        client = _S3_CLIENTS.get(key)
        if client is None:
            session = boto3.Session(**({"profile_name": profile} if profile else {}))
            client = _S3_CLIENTS[key] = session.client("s3")
    return client


def blob_service(account: str, connection_string: str | None = None) -> Any:
    """A BlobServiceClient: from a connection string, else azure-identity's default chain
    (managed identity, workload identity, CLI) at AZURE_STORAGE_BLOB_ENDPOINT or the public URL."""
    blob = import_sdk("azure.storage.blob")
    if connection_string:
        return blob.BlobServiceClient.from_connection_string(connection_string)
    identity = import_sdk("azure.identity")
    credential = identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)
    endpoint = os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT") or AZURE_BLOB_URL.format(
        account=account
    )
    return blob.BlobServiceClient(account_url=endpoint, credential=credential)


def gcs_blob(bucket: str, key: str) -> Any:
    """A google-cloud-storage Blob: Application Default Credentials, or STORAGE_EMULATOR_HOST."""
    storage = import_sdk("google.cloud.storage")
    return storage.Client().bucket(bucket).blob(key)


def put_s3(
    bucket: str, key: str, data: bytes, content_type: str = JSON, profile: str | None = None
) -> None:
    s3_client(profile).put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)


def put_blob(
    service: Any, container: str, blob: str, data: bytes, content_type: str = JSON
) -> None:
    client = service.get_blob_client(container=container, blob=blob)
    client.upload_blob(data, overwrite=True, content_type=content_type)


def put_gcs(bucket: str, key: str, data: bytes, content_type: str = JSON) -> None:
    gcs_blob(bucket, key).upload_from_string(data, content_type=content_type)


def _blob_client(uri: ResultUri) -> Any:
    connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    service = blob_service(uri.account, connection_string)
    return service.get_blob_client(container=uri.bucket, blob=uri.key)


def _write_file(path: str, data: bytes) -> None:
    """Atomic: a reader never sees half a file."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".results.")
    try:
        with os.fdopen(fd, "wb") as outfile:
            outfile.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a failed write leaves no partial temporary file
            os.unlink(tmp)
        raise


def upload_result(uri: str | ResultUri, data: bytes, content_type: str = JSON) -> None:
    """Store ``data`` at the URI."""
    target = _as_uri(uri)
    if target.scheme == "file":
        _write_file(target.key, data)
    elif target.scheme == "s3":
        put_s3(target.bucket, target.key, data, content_type)
    elif target.scheme == "gs":
        put_gcs(target.bucket, target.key, data, content_type)
    else:
        service = blob_service(target.account, os.environ.get("AZURE_STORAGE_CONNECTION_STRING"))
        put_blob(service, target.bucket, target.key, data, content_type)


def download_result(uri: str | ResultUri) -> bytes:
    """Read the object at the URI; FileNotFoundError when there is none."""
    source = _as_uri(uri)
    if source.scheme == "file":
        with open(source.key, "rb") as infile:
            return infile.read()
    if source.scheme == "s3":
        client = s3_client()
        try:
            return client.get_object(Bucket=source.bucket, Key=source.key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(str(source)) from None
    if source.scheme == "gs":
        from google.api_core.exceptions import NotFound

        try:
            return gcs_blob(source.bucket, source.key).download_as_bytes()
        except NotFound:
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
        s3_client().delete_object(Bucket=target.bucket, Key=target.key)
    elif target.scheme == "gs":
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            gcs_blob(target.bucket, target.key).delete()
    else:
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            _blob_client(target).delete_blob()
