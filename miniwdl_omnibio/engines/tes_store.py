"""The object store behind ``[omnibio_tes] staging_uri``: S3 (AWS or any S3-compatible endpoint
such as MinIO) or Azure Blob Storage, addressed by the URLs a TES server reads and writes.

Only what staging needs: does a key exist (and its size), put a file, get a file, list and
delete below a prefix. Keys are relative to the staging prefix; ``url(key)`` is what a TES
task names. Cloud SDKs are imported only for their store.
"""

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlsplit

# Hosts of Azure Blob Storage accounts (public and sovereign clouds): <account>.blob.<suffix>;
# any other https/http host is an emulator (Azurite) or a proxy addressed path-style
# (<endpoint>/<account>/<container>/...).
AZURE_BLOB_SUFFIXES = (
    ".blob.core.windows.net",
    ".blob.core.chinacloudapi.cn",
    ".blob.core.usgovcloudapi.net",
)


class StoreError(Exception):
    """A store operation failed; the message is one line (the SDK's reason, never a secret)."""


class ObjectStore(ABC):
    """Objects below one prefix of one bucket or container."""

    scheme: str  # the URL scheme tasks see: s3, https or http
    prefix: str  # below the bucket/container, no leading or trailing "/"

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

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
    def put_bytes(self, data: bytes, key: str) -> None: ...

    @abstractmethod
    def get(self, key: str, path: str) -> None:
        """Download to ``path`` (its directory is made); FileNotFoundError when absent."""

    @abstractmethod
    def keys(self, prefix: str) -> Iterator[str]:
        """Every key below ``prefix`` + "/"."""

    @abstractmethod
    def delete(self, keys: list[str]) -> None: ...

    def delete_below(self, prefix: str) -> int:
        found = list(self.keys(prefix))
        for start in range(0, len(found), 1000):
            self.delete(found[start : start + 1000])
        return len(found)


class S3Store(ObjectStore):
    """s3://bucket/prefix through boto3's standard chain (credentials, region, and
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL for MinIO, moto or a VPC endpoint)."""

    scheme = "s3"

    def __init__(self, bucket: str, prefix: str, retries: int) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.session.Session().client(
            "s3",
            config=Config(
                retries={"max_attempts": retries + 1, "mode": "standard"}, connect_timeout=10
            ),
        )
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_of(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or parts.netloc != self.bucket:
            return None
        return unquote(parts.path).lstrip("/")

    def _fail(self, action: str, exn: Exception) -> StoreError:
        return StoreError(f"could not {action} in s3://{self.bucket}: {str(exn)[:300]}")

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except self._errors as exn:
            code = str(getattr(exn, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(f"look up {key}", exn) from None

    def put(self, path: str, key: str) -> None:
        try:
            self.client.upload_file(path, self.bucket, key)
        except (*self._errors, OSError) as exn:
            raise self._fail(f"upload {path} to {key}", exn) from None

    def put_bytes(self, data: bytes, key: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except self._errors as exn:
            raise self._fail(f"write {key}", exn) from None

    def get(self, key: str, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if self.size(key) is None:
            raise FileNotFoundError(self.url(key))
        try:
            self.client.download_file(self.bucket, key, path)
        except (*self._errors, OSError) as exn:
            raise self._fail(f"download {key}", exn) from None

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
        if not keys:
            return
        try:
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
        except self._errors as exn:
            raise self._fail("delete staged objects", exn) from None


class AzureBlobStore(ObjectStore):
    """https://<account>.blob.core.windows.net/<container>/<prefix> (or an emulator's
    http://host:port/<account>/<container>/<prefix>), through AZURE_STORAGE_CONNECTION_STRING
    when set, else azure.identity's DefaultAzureCredential (managed identity, az login)."""

    def __init__(self, account_url: str, container: str, prefix: str, retries: int) -> None:
        from azure.core.exceptions import AzureError
        from azure.storage.blob import ContainerClient

        self.scheme = urlsplit(account_url).scheme
        self.account_url, self.container, self.prefix = account_url, container, prefix.strip("/")
        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if connection_string:
            self.client = ContainerClient.from_connection_string(
                connection_string, container, retry_total=retries
            )
        else:
            from azure.identity import DefaultAzureCredential

            self.client = ContainerClient(
                account_url, container, credential=DefaultAzureCredential(), retry_total=retries
            )
        self._errors = (AzureError,)

    def url(self, key: str) -> str:
        return f"{self.account_url}/{self.container}/{quote(key)}"

    def key_of(self, url: str) -> str | None:
        base = f"{self.account_url}/{self.container}/"
        return unquote(url[len(base) :]) if url.startswith(base) else None

    def _fail(self, action: str, exn: Exception) -> StoreError:
        reason = " ".join(str(exn).split())[:300]
        return StoreError(f"could not {action} in {self.account_url}/{self.container}: {reason}")

    def size(self, key: str) -> int | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return int(self.client.get_blob_client(key).get_blob_properties().size)
        except ResourceNotFoundError:
            return None
        except self._errors as exn:
            raise self._fail(f"look up {key}", exn) from None

    def put(self, path: str, key: str) -> None:
        try:
            with open(path, "rb") as data:
                self.client.upload_blob(key, data, overwrite=True)
        except (*self._errors, OSError) as exn:
            raise self._fail(f"upload {path} to {key}", exn) from None

    def put_bytes(self, data: bytes, key: str) -> None:
        try:
            self.client.upload_blob(key, data, overwrite=True)
        except self._errors as exn:
            raise self._fail(f"write {key}", exn) from None

    def get(self, key: str, path: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with open(path, "wb") as out:
                self.client.download_blob(key).readinto(out)
        except ResourceNotFoundError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise FileNotFoundError(self.url(key)) from None
        except (*self._errors, OSError) as exn:
            raise self._fail(f"download {key}", exn) from None

    def keys(self, prefix: str) -> Iterator[str]:
        try:
            for blob in self.client.list_blobs(name_starts_with=prefix.rstrip("/") + "/"):
                yield blob.name
        except self._errors as exn:
            raise self._fail(f"list {prefix}", exn) from None

    def delete(self, keys: list[str]) -> None:
        """One by one: the batch API runs a thread pool, which cannot start at interpreter exit
        (when staged objects are removed), and Azurite does not serve it."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            for key in keys:
                with contextlib.suppress(ResourceNotFoundError):
                    self.client.delete_blob(key)
        except self._errors as exn:
            raise self._fail("delete staged objects", exn) from None


def open_store(uri: str, retries: int = 8) -> ObjectStore:
    """The store of a staging URI (``retries``: of a failed or throttled request); ValueError
    names what is wrong with the URI."""
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
        return AzureBlobStore(root, segments[0], "/".join(segments[1:]), retries)
    raise ValueError(
        f"{uri!r} is neither s3://bucket/prefix nor an Azure Blob URL "
        "(https://account.blob.core.windows.net/container/prefix)"
    )
