"""How the test server's worker moves task files, by URL scheme, as the servers people run do.

* ``s3://bucket/key``: an S3 endpoint configured on the server, as Funnel's GenericS3 storage
  (Endpoint, Key, Secret; funnel storage/generic_s3.go) and TESK's S3 filer
  (tesk_core/filer_s3.py) are; moto server in tests.
* Azure Blob URLs under a configured blob endpoint (Azurite in tests), read and written with the
  account's key, as TES on Azure reaches the storage accounts it is given access to.
* ``http(s)://`` elsewhere: GET only, as Funnel's HTTPStorage (storage/http.go: "used to
  download public files on the web via a GET request"); uploads are refused.
* ``file://``: only below the configured allowed directories, copied, as Funnel's LocalStorage
  AllowedDirs (config/default-config.yaml) allows.

A DIRECTORY is every object below ``url + "/"``, each at its relative path (funnel
worker/storage.go FlattenInputs / FlattenOutputs).
"""

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import requests


class TransferError(Exception):
    """A download or upload failed: the task ends in SYSTEM_ERROR with this line."""


@dataclass(frozen=True)
class S3Access:
    endpoint: str
    key: str
    secret: str
    region: str = "us-east-1"


class Storage:
    def __init__(
        self,
        s3: S3Access | None = None,
        azure_connection_string: str | None = None,
        allowed_dirs: Sequence[str] = (),
    ) -> None:
        self.s3 = None
        if s3:
            import boto3

            self.s3 = boto3.session.Session(
                aws_access_key_id=s3.key, aws_secret_access_key=s3.secret, region_name=s3.region
            ).client("s3", endpoint_url=s3.endpoint)
        self.azure = None
        self.azure_endpoint = ""
        if azure_connection_string:
            from azure.storage.blob import BlobServiceClient

            self.azure = BlobServiceClient.from_connection_string(azure_connection_string)
            self.azure_endpoint = self.azure.url.rstrip("/")
        self.allowed_dirs = [os.path.abspath(d) for d in allowed_dirs]

    # --- downloads -------------------------------------------------------------------------

    def download(self, url: str, target: str, directory: bool) -> int:
        """Fetch a FILE or every object of a DIRECTORY to ``target``; the number of files."""
        parts = urlsplit(url)
        if parts.scheme == "s3" and self.s3:
            return self._s3_download(
                parts.netloc, unquote(parts.path).lstrip("/"), target, directory
            )
        if self.azure and url.startswith(self.azure_endpoint + "/"):
            return self._azure_download(url[len(self.azure_endpoint) + 1 :], target, directory)
        if parts.scheme in ("http", "https") and not directory:
            try:
                response = requests.get(url, timeout=30)
            except requests.RequestException as exn:
                raise TransferError(f"GET {url}: {type(exn).__name__}") from None
            if not response.ok:
                raise TransferError(f"GET {url}: HTTP {response.status_code}")
            _write(target, response.content)
            return 1
        if parts.scheme == "file":
            return self._local_copy(unquote(parts.path), target, directory)
        raise TransferError(f"{url}: no storage of this server reads it")

    def _s3_download(self, bucket: str, key: str, target: str, directory: bool) -> int:
        assert self.s3
        if not directory:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                self.s3.download_file(bucket, key, target)
            except Exception as exn:
                raise TransferError(f"s3://{bucket}/{key}: {exn}") from None
            return 1
        prefix = key.rstrip("/") + "/"
        count = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents") or []:
                path = os.path.join(target, item["Key"][len(prefix) :])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self.s3.download_file(bucket, item["Key"], path)
                count += 1
        return count

    def _azure_download(self, path: str, target: str, directory: bool) -> int:
        assert self.azure
        container, _, name = unquote(path).partition("/")
        client = self.azure.get_container_client(container)
        names = (
            [b.name for b in client.list_blobs(name_starts_with=name.rstrip("/") + "/")]
            if directory
            else [name]
        )
        for blob in names:
            local = os.path.join(target, blob[len(name) + 1 :]) if directory else target
            try:
                _write(local, client.download_blob(blob).readall())
            except Exception as exn:
                raise TransferError(f"{container}/{blob}: {type(exn).__name__}") from None
        return len(names)

    def _local_copy(self, path: str, target: str, directory: bool) -> int:
        path = os.path.abspath(path)
        if not any(path == d or path.startswith(d + "/") for d in self.allowed_dirs):
            raise TransferError(f"file://{path} is not below an allowed directory")
        if directory:
            shutil.copytree(path, target, dirs_exist_ok=True)
            return sum(len(files) for _, _, files in os.walk(target))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
        return 1

    # --- uploads ---------------------------------------------------------------------------

    def upload(self, source: str, url: str) -> None:
        """Put one file at ``url``."""
        parts = urlsplit(url)
        try:
            if parts.scheme == "s3" and self.s3:
                self.s3.upload_file(source, parts.netloc, unquote(parts.path).lstrip("/"))
                return
            if self.azure and url.startswith(self.azure_endpoint + "/"):
                container, _, name = unquote(url[len(self.azure_endpoint) + 1 :]).partition("/")
                with open(source, "rb") as data:
                    self.azure.get_container_client(container).upload_blob(
                        name, data, overwrite=True
                    )
                return
        except Exception as exn:
            raise TransferError(f"upload to {url}: {type(exn).__name__}: {exn}") from None
        raise TransferError(f"{url}: no storage of this server writes it")


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as outfile:
        outfile.write(data)
