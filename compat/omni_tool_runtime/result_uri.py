"""``parse_result_uri`` giving upstream's shape: scheme, account_or_bucket, container, path."""

from dataclasses import dataclass
from urllib.parse import urlsplit

from miniwdl_omnibio.runtime import uri


@dataclass(frozen=True)
class ParsedResultURI:
    scheme: str
    account_or_bucket: str
    container: str | None  # azureblob only
    path: str  # object key, blob path, or absolute file path


def parse_result_uri(result_uri: str) -> ParsedResultURI:
    """ValueError says "missing scheme", "Unsupported" scheme, or what the URI lacks."""
    scheme = urlsplit(result_uri).scheme if "://" in (result_uri or "") else ""
    if not scheme:
        raise ValueError(f"Invalid RESULT_URI {result_uri!r} (missing scheme)")
    if scheme not in uri.SCHEMES:
        raise ValueError(f"Unsupported RESULT_URI scheme {scheme!r} in {result_uri!r}")
    parsed = uri.parse_result_uri(result_uri)
    if parsed.scheme == "azureblob":
        return ParsedResultURI("azureblob", parsed.account, parsed.bucket, parsed.key)
    return ParsedResultURI(parsed.scheme, parsed.bucket, None, parsed.key)
