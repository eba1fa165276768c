"""The one object-store layer: results.json at a result URI (the tool runtime uploads it, the
plugin reads and deletes it) and omnibio_tes's staging area both go through it.

One credential rule per scheme, whoever asks:
- s3: boto3's standard chain (``AWS_PROFILE``, keys, roles; ``AWS_ENDPOINT_URL_S3`` /
  ``AWS_ENDPOINT_URL`` for MinIO, moto or a VPC endpoint).
- Azure Blob: ``AZURE_STORAGE_CONNECTION_STRING`` when set (its account key or SAS, and its
  endpoint), else azure-identity's ``DefaultAzureCredential`` at the account's endpoint:
  ``AZURE_STORAGE_BLOB_ENDPOINT`` or ``https://<account>.blob.core.windows.net`` for an
  ``azureblob://`` URI, the URL itself for an https staging URL.
- gs: google-cloud-storage's Application Default Credentials (``STORAGE_EMULATOR_HOST``).

Each cloud SDK is imported only when its scheme is used, so a tool image needs only the SDK of the
store it writes to.
"""

import contextlib
import importlib
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .uri import ResultUri, parse_result_uri

# Where an azureblob:// account is served, unless AZURE_STORAGE_CONNECTION_STRING or
# AZURE_STORAGE_BLOB_ENDPOINT says otherwise (Azurite, sovereign clouds, private endpoints).
AZURE_BLOB_URL = "https://{account}.blob.core.windows.net"
# Hosts of Azure Blob Storage accounts (public and sovereign clouds): <account>.blob.<suffix>;
# any other https/http host is an emulator (Azurite) or a proxy addressed path-style
# (<endpoint>/<account>/<container>/...).
AZURE_BLOB_SUFFIXES = (
    ".blob.core.windows.net",
    ".blob.core.chinacloudapi.cn",
    ".blob.core.usgovcloudapi.net",
)
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
S3_ABSENT = ("404", "NoSuchKey", "NotFound")
_S3_CLIENTS: dict[tuple[Any, ...], Any] = {}
_S3_LOCK = threading.Lock()


class StoreError(Exception):
    """A store operation failed; the message is one line (the SDK's reason, never a secret)."""


def import_sdk(module: str) -> ModuleType:
    """Import a cloud SDK; RuntimeError names the pip package when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = SDKS[module]
        raise RuntimeError(
            f"{package} not installed: pip install '{package}' (the [{extra}] extra of "
            "miniwdl-omnibio)"
        ) from None


def s3_client(profile: str | None = None, retries: int | None = None) -> Any:
    """boto3's standard chain; ``retries`` of a failed or throttled request (None: boto3's).

    One client per profile, retry count and AWS environment, shared by every thread (boto3
    clients are thread-safe): making one costs tens of milliseconds of CPU, which a launcher
    clearing a thousand attempts' stale results at once would otherwise spend a thousand times.
    The boto3 module is part of the key, so a stand-in for it (upstream's uploader tests) gets
    its own."""
    boto3 = import_sdk("boto3")
    key = (boto3, profile, retries, *(os.environ.get(name) for name in S3_ENVIRONMENT))
    with _S3_LOCK:
        client = _S3_CLIENTS.get(key)
        if client is None:
            session = boto3.Session(**({"profile_name": profile} if profile else {}))
            options: dict[str, Any] = {}
            if retries is not None:
                from botocore.config import Config

                options["config"] = Config(
                    retries={"max_attempts": retries + 1, "mode": "standard"}, connect_timeout=10
                )
            client = _S3_CLIENTS[key] = session.client("s3", **options)
    return client


def azure_account_url(account: str) -> str:
    """The endpoint of an azureblob:// account: AZURE_STORAGE_BLOB_ENDPOINT or the public URL."""
    return os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT") or AZURE_BLOB_URL.format(account=account)


def azure_connection_string() -> str | None:
    return os.environ.get("AZURE_STORAGE_CONNECTION_STRING") or None


def blob_container(
    account_url: str, container: str, connection_string: str | None, retries: int | None = None
) -> Any:
    """A ContainerClient: from the connection string when one is given, else
    DefaultAzureCredential (managed identity, workload identity, az login) at ``account_url``."""
    blob = import_sdk("azure.storage.blob")
    options = {} if retries is None else {"retry_total": retries}
    if connection_string:
        return blob.ContainerClient.from_connection_string(connection_string, container, **options)
    identity = import_sdk("azure.identity")
    credential = identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)
    return blob.ContainerClient(account_url, container, credential=credential, **options)


def one_line(exn: Exception) -> str:
    return " ".join(str(exn).split())[:300]


class ObjectStore(ABC):
    """Objects below one prefix of one bucket or container."""

    scheme: str  # the URL scheme a TES task sees: s3, gs, https or http
    prefix: str  # below the bucket/container, no leading or trailing "/"
    where: str  # the bucket or container, for messages
    _absent: type[Exception]
    _errors: tuple[type[Exception], ...]

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def _fail(self, action: str, exn: Exception) -> StoreError:
        return StoreError(f"could not {action} in {self.where}: {one_line(exn)}")

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """The SDK's "no such object" as FileNotFoundError, its other errors as StoreError
        (``_absent`` and ``_errors``: the SDK's exception classes; S3 tells absence by an
        error code instead, and maps its errors itself)."""
        try:
            yield
        except self._absent:
            raise FileNotFoundError(self.url(key)) from None
        except self._errors as exn:
            raise self._fail(f"read {key}", exn) from None

    @abstractmethod
    def url(self, key: str) -> str:
        """The URL of a key, as a TES server (and miniwdl's download cache) names it."""

    @abstractmethod
    def key_of(self, url: str) -> str | None:
        """The key of a URL in this bucket/container (any prefix); None for another store."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size; None when there is none."""

    @abstractmethod
    def put(self, path: str, key: str) -> None: ...

    @abstractmethod
    def put_bytes(self, data: bytes, key: str, content_type: str | None = None) -> None: ...

    @abstractmethod
    def get(self, key: str, path: str) -> None:
        """Download to ``path`` (its directory is made); FileNotFoundError when absent."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's content; FileNotFoundError when absent."""

    @abstractmethod
    def keys(self, prefix: str) -> Iterator[str]:
        """Every key below ``prefix`` + "/"."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Remove the objects; an absent one is fine."""

    def delete_below(self, prefix: str) -> int:
        found = list(self.keys(prefix))
        for start in range(0, len(found), 1000):
            self.delete(found[start : start + 1000])
        return len(found)


class BucketStore(ObjectStore):
    """A store whose URLs are <scheme>://<bucket>/<key> (s3, gs)."""

    bucket: str

    def url(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    def key_of(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.scheme != self.scheme or parts.netloc != self.bucket:
            return None
        return unquote(parts.path).lstrip("/")


class S3Store(BucketStore):
    """s3://bucket/prefix through boto3's standard chain."""

    scheme = "s3"

    def __init__(
        self, bucket: str, prefix: str, retries: int | None = None, profile: str | None = None
    ) -> None:
        self.bucket, self.prefix, self.where = (
            bucket,
            prefix.strip("/"),
            f"{self.scheme}://{bucket}",
        )
        self.client = s3_client(profile, retries)
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)

    def _missing(self, exn: Exception) -> bool:
        code = str(getattr(exn, "response", {}).get("Error", {}).get("Code", ""))
        return code in S3_ABSENT

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except self._errors as exn:
            if self._missing(exn):
                return None
            raise self._fail(f"look up {key}", exn) from None

    def put(self, path: str, key: str) -> None:
        try:
            self.client.upload_file(path, self.bucket, key)
        except self._errors + (OSError,) as exn:
            raise self._fail(f"upload {path} to {key}", exn) from None

    def put_bytes(self, data: bytes, key: str, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except self._errors as exn:
            raise self._fail(f"write {key}", exn) from None

    def get(self, key: str, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if self.size(key) is None:
            raise FileNotFoundError(self.url(key))
        try:
            self.client.download_file(self.bucket, key, path)
        except self._errors + (OSError,) as exn:
            raise self._fail(f"download {key}", exn) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self._errors as exn:
            if self._missing(exn):
                raise FileNotFoundError(self.url(key)) from None
            raise self._fail(f"read {key}", exn) from None

    def keys(self, prefix: str) -> Iterator[str]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/"
            )
            for page in pages:
                for item in page.get("Contents") or []:
                    yield item["Key"]
        except self._errors as exn:
            raise self._fail(f"list {prefix}", exn) from None

    def delete(self, keys: list[str]) -> None:
        """One DeleteObjects call; its per-key errors (AccessDenied) come back in the body."""
        if not keys:
            return
        try:
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
        except self._errors as exn:
            raise self._fail(f"delete {keys[0]}", exn) from None
        for error in answer.get("Errors") or []:
            reason = f"{error.get('Code')}: {error.get('Message')}"
            raise StoreError(f"could not delete {error.get('Key')} in {self.where}: {reason}")


class AzureBlobStore(ObjectStore):
    """<account_url>/<container>/<prefix>: ``account_url`` is
    https://<account>.blob.core.windows.net or an emulator's http://host:port/<account>."""

    def __init__(
        self,
        account_url: str,
        container: str,
        prefix: str,
        retries: int | None = None,
        connection_string: str | None = None,
    ) -> None:
        self.client = blob_container(account_url, container, connection_string, retries)
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        self.scheme = urlsplit(account_url).scheme
        self.account_url, self.container, self.prefix = account_url, container, prefix.strip("/")
        self.where = f"{account_url}/{container}"
        self._errors, self._absent = (AzureError,), ResourceNotFoundError

    def url(self, key: str) -> str:
        return f"{self.account_url}/{self.container}/{quote(key)}"

    def key_of(self, url: str) -> str | None:
        base = f"{self.account_url}/{self.container}/"
        return unquote(url[len(base) :]) if url.startswith(base) else None

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.get_blob_client(key).get_blob_properties().size)
        except self._absent:
            return None
        except self._errors as exn:
            raise self._fail(f"look up {key}", exn) from None

    def put(self, path: str, key: str) -> None:
        try:
            with open(path, "rb") as data:
                self.client.upload_blob(key, data, overwrite=True)
        except self._errors + (OSError,) as exn:
            raise self._fail(f"upload {path} to {key}", exn) from None

    def put_bytes(self, data: bytes, key: str, content_type: str | None = None) -> None:
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type=content_type) if content_type else None
        try:
            self.client.upload_blob(key, data, overwrite=True, content_settings=settings)
        except self._errors as exn:
            raise self._fail(f"write {key}", exn) from None

    def get(self, key: str, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with open(path, "wb") as out:
                self.client.download_blob(key).readinto(out)
        except self._absent:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise FileNotFoundError(self.url(key)) from None
        except self._errors + (OSError,) as exn:
            raise self._fail(f"download {key}", exn) from None

    def get_bytes(self, key: str) -> bytes:
        with self._reading(key):
            data = self.client.download_blob(key).readall()
        return bytes(data)

    def keys(self, prefix: str) -> Iterator[str]:
        try:
            for blob in self.client.list_blobs(name_starts_with=prefix.rstrip("/") + "/"):
                yield blob.name
        except self._errors as exn:
            raise self._fail(f"list {prefix}", exn) from None

    def delete(self, keys: list[str]) -> None:
        """One by one: the batch API runs a thread pool, which cannot start at interpreter exit
        (when staged objects are removed), and Azurite does not serve it."""
        try:
            for key in keys:
                with contextlib.suppress(self._absent):
                    self.client.delete_blob(key)
        except self._errors as exn:
            raise self._fail(f"delete {keys[0]}", exn) from None


class GcsStore(BucketStore):
    """gs://bucket/prefix through Application Default Credentials."""

    scheme = "gs"

    def __init__(self, bucket: str, prefix: str) -> None:
        storage = import_sdk("google.cloud.storage")
        from google.api_core.exceptions import GoogleAPIError, NotFound

        self.bucket, self.prefix, self.where = (
            bucket,
            prefix.strip("/"),
            f"{self.scheme}://{bucket}",
        )
        self.client = storage.Client()
        self._errors, self._absent = (GoogleAPIError,), NotFound

    def _blob(self, key: str) -> Any:
        return self.client.bucket(self.bucket).blob(key)

    def size(self, key: str) -> int | None:
        try:
            blob = self.client.bucket(self.bucket).get_blob(key)
        except self._errors as exn:
            raise self._fail(f"look up {key}", exn) from None
        return None if blob is None else int(blob.size)

    def put(self, path: str, key: str) -> None:
        try:
            self._blob(key).upload_from_filename(path)
        except self._errors + (OSError,) as exn:
            raise self._fail(f"upload {path} to {key}", exn) from None

    def put_bytes(self, data: bytes, key: str, content_type: str | None = None) -> None:
        try:
            self._blob(key).upload_from_string(data, content_type=content_type)
        except self._errors as exn:
            raise self._fail(f"write {key}", exn) from None

    def get(self, key: str, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as out:
            out.write(self.get_bytes(key))

    def get_bytes(self, key: str) -> bytes:
        with self._reading(key):
            data = self._blob(key).download_as_bytes()
        return bytes(data)

    def keys(self, prefix: str) -> Iterator[str]:
        try:
            for blob in self.client.list_blobs(self.bucket, prefix=prefix.rstrip("/") + "/"):
                yield blob.name
        except self._errors as exn:
            raise self._fail(f"list {prefix}", exn) from None

    def delete(self, keys: list[str]) -> None:
        try:
            for key in keys:
                with contextlib.suppress(self._absent):
                    self._blob(key).delete()
        except self._errors as exn:
            raise self._fail(f"delete {keys[0]}", exn) from None


def open_store(uri: str, retries: int = 8) -> ObjectStore:
    """The store of a staging URI, ``s3://bucket/prefix`` or an Azure Blob URL
    (``retries``: of a failed or throttled request); ValueError names what is wrong with it."""
    parts = urlsplit(uri)
    path = unquote(parts.path).strip("/")
    if parts.query or parts.fragment:
        raise ValueError(f"{uri!r} must not have a query or fragment (no SAS tokens in URLs)")
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"{uri!r} names no bucket (s3://bucket/prefix)")
        return S3Store(parts.netloc, path, retries)
    if parts.scheme in ("https", "http") and parts.hostname:
        segments = path.split("/") if path else []
        root = f"{parts.scheme}://{parts.netloc}"
        if not parts.hostname.endswith(AZURE_BLOB_SUFFIXES):  # path-style: /<account>/...
            if not segments:
                raise ValueError(f"{uri!r} names no storage account (http://host/account/...)")
            root, segments = f"{root}/{segments[0]}", segments[1:]
        if not segments:
            raise ValueError(f"{uri!r} names no blob container")
        blobs = AzureBlobStore(
            root, segments[0], "/".join(segments[1:]), retries, azure_connection_string()
        )
        if blobs.client.url.rstrip("/") != blobs.where:  # the server would read another account
            raise ValueError(
                f"{uri!r} is not where AZURE_STORAGE_CONNECTION_STRING writes"
                f" ({blobs.client.url}): name that account's URL, or unset the variable"
            )
        return blobs
    raise ValueError(
        f"{uri!r} is neither s3://bucket/prefix nor an Azure Blob URL "
        "(https://account.blob.core.windows.net/container/prefix)"
    )


def result_store(uri: ResultUri) -> ObjectStore:
    """The bucket or container of an s3, gs or azureblob result URI (its key is ``uri.key``)."""
    if uri.scheme == "s3":
        return S3Store(uri.bucket, "")
    if uri.scheme == "gs":
        return GcsStore(uri.bucket, "")
    account_url = azure_account_url(uri.account)
    return AzureBlobStore(account_url, uri.bucket, "", None, azure_connection_string())


def _as_uri(uri: str | ResultUri) -> ResultUri:
    return uri if isinstance(uri, ResultUri) else parse_result_uri(uri)


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
    else:
        result_store(target).put_bytes(data, target.key, content_type)


def download_result(uri: str | ResultUri) -> bytes:
    """Read the object at the URI; FileNotFoundError when there is none."""
    source = _as_uri(uri)
    if source.scheme == "file":
        with open(source.key, "rb") as infile:
            return infile.read()
    try:
        return result_store(source).get_bytes(source.key)
    except FileNotFoundError:
        raise FileNotFoundError(str(source)) from None


def delete_result(uri: str | ResultUri) -> None:
    """Remove a stale result before an attempt starts; absent is fine."""
    target = _as_uri(uri)
    if target.scheme == "file":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target.key)
    else:
        result_store(target).delete([target.key])
