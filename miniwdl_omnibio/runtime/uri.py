"""Result URIs: ``s3://bucket/key``, ``gs://bucket/key``, ``azureblob://account/container/path``,
``file:///path``."""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = ("s3", "gs", "azureblob", "file")
EXPECTED = "expected one of s3://, gs://, azureblob://, file://"


@dataclass(frozen=True)
class ResultUri:
    scheme: str
    account: str  # azureblob only
    bucket: str  # s3 or gs bucket, or azureblob container
    key: str  # object key, blob path, or absolute file path

    def __str__(self) -> str:
        if self.scheme == "file":
            return "file://" + self.key
        if self.scheme in ("s3", "gs"):
            return f"{self.scheme}://{self.bucket}/{self.key}"
        return f"azureblob://{self.account}/{self.bucket}/{self.key}"

    def child(self, *parts: str) -> "ResultUri":
        """The URI of a path below this one (used to lay out per-call result URIs)."""
        joined = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        if self.scheme == "file":
            joined = "/" + joined
        return ResultUri(self.scheme, self.account, self.bucket, joined)


def parse_result_uri(uri: str, *, prefix: bool = False) -> ResultUri:
    """Parse and validate a result URI; ValueError names what is missing or wrong.

    With ``prefix=True`` an empty key/path is allowed (a prefix under which results are laid out).
    """
    if not uri or not isinstance(uri, str):
        raise ValueError("result URI is missing")
    if "://" not in uri:
        raise ValueError(f"result URI {uri!r} has no scheme; {EXPECTED}")
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ValueError(f"result URI {uri!r} has unknown scheme {scheme!r}; {EXPECTED}")
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        raise ValueError(f"result URI {uri!r} must not have a query or fragment")
    path = unquote(parts.path)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file result URI {uri!r} must be file:///absolute/path (no host)")
        if not path.startswith("/") or (not prefix and path.rstrip("/") in ("",)):
            raise ValueError(f"file result URI {uri!r} needs an absolute path")
        return ResultUri("file", "", "", path.rstrip("/") if prefix else path)
    if scheme in ("s3", "gs"):
        if not parts.netloc:
            raise ValueError(f"{scheme} result URI {uri!r} needs a bucket")
        key = path.lstrip("/")
        if not key.rstrip("/") and not prefix:
            raise ValueError(f"{scheme} result URI {uri!r} needs a key after the bucket")
        return ResultUri(scheme, "", parts.netloc, key.rstrip("/") if prefix else key)
    # azureblob://account/container/path
    if not parts.netloc:
        raise ValueError(f"azureblob result URI {uri!r} needs a storage account")
    container, _, blob = path.lstrip("/").partition("/")
    if not container:
        raise ValueError(f"azureblob result URI {uri!r} needs a container after the account")
    if not blob.rstrip("/") and not prefix:
        raise ValueError(f"azureblob result URI {uri!r} needs a blob path after the container")
    return ResultUri("azureblob", parts.netloc, container, blob.rstrip("/") if prefix else blob)
