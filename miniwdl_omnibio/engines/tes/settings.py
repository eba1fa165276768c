"""The [omnibio_tes] section, read and checked once at start, and the credentials it names."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from WDL import Error
from WDL.runtime import config as miniwdl_config

from ...config import Settings
from ...placement.sharedfs import SharedFilesystem
from .client import Credentials

MAX_PAGE_SIZE = 2047  # the spec: page_size must be less than 2048


@dataclass(frozen=True)
class TesSettings:
    url: str
    credentials: Credentials
    request_timeout: int
    max_retries: int
    poll_seconds: float
    page_size: int
    default_time_limit: int | None
    backend_parameters: Mapping[str, str]
    backend_parameters_strict: bool
    max_cpu: int
    max_memory: int
    staging_uri: str  # staging mode when set ...
    keep_staged: bool
    filesystem: SharedFilesystem | None  # ... shared-filesystem mode when set
    probe_image: str
    probe_timeout: float

    @classmethod
    def load(cls, cfg: miniwdl_config.Loader) -> "TesSettings":
        settings = Settings(cfg, "omnibio_tes")
        url = settings.text("url", required=True).rstrip("/")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise settings.fail("url", f"{url!r} is not an http:// or https:// URL")
        if parsed.username or parsed.password:
            raise settings.fail(
                "url", "must not contain credentials; use user + password_env, or token_env"
            )
        page_size = settings.integer("page_size", minimum=1)
        if page_size > MAX_PAGE_SIZE:
            raise settings.fail(
                "page_size", f"{page_size} is too large; TES servers accept at most 2047"
            )
        staging_uri = settings.text("staging_uri")
        shared = bool(settings.text("mount_path"))
        if staging_uri and shared:
            raise settings.fail(
                "staging_uri",
                "is set together with mount_path; choose staging (staging_uri) or a shared "
                "filesystem (mount_path)",
            )
        if not (staging_uri or shared):
            raise settings.fail(
                "staging_uri",
                "is required: the object store (s3://bucket/prefix or an Azure Blob URL) "
                "through which task files move, unless mount_path names a shared filesystem",
            )
        return cls(
            url=url,
            credentials=credentials(settings),
            request_timeout=settings.integer("request_timeout", minimum=1),
            max_retries=settings.integer("max_retries", minimum=0),
            poll_seconds=settings.number("poll_seconds", minimum=0.1),
            page_size=page_size,
            default_time_limit=settings.integer("default_time_limit", minimum=0) or None,
            backend_parameters=string_map(
                settings.json_object("backend_parameters"), "[omnibio_tes] backend_parameters"
            ),
            backend_parameters_strict=settings.flag("backend_parameters_strict"),
            max_cpu=settings.integer("max_cpu", minimum=1),
            max_memory=settings.size("max_memory"),
            staging_uri=staging_uri.rstrip("/"),
            keep_staged=settings.flag("keep_staged"),
            filesystem=SharedFilesystem.from_settings(settings) if shared else None,
            probe_image=settings.text("probe_image", required=shared),
            probe_timeout=settings.number("probe_timeout", minimum=1),
        )


def credentials(settings: Settings) -> Credentials:
    """Basic auth (user + the password in $password_env) or a bearer token in $token_env."""
    user = settings.text("user") or None
    password_env, token_env = settings.text("password_env"), settings.text("token_env")
    if user and token_env:
        raise settings.fail(
            "token_env", "is set together with user; use either basic auth or a bearer token"
        )
    if password_env and not user:
        raise settings.fail("user", "is required with password_env (basic auth)")
    if user and not password_env:
        raise settings.fail(
            "password_env",
            "must name the environment variable holding the password of [omnibio_tes] user",
        )
    if not (user or token_env):
        return Credentials(None, None, "[omnibio_tes] token_env, or user and password_env")
    key, variable = ("password_env", password_env) if user else ("token_env", token_env)
    secret = os.environ.get(variable)
    if not secret:
        raise settings.fail(key, f"names the environment variable {variable}, which is not set")
    hint = f"[omnibio_tes] {'user and ' if user else ''}{key} (the secret in ${variable})"
    return Credentials(user, secret, hint)


def string_map(value: Any, what: str) -> dict[str, str]:
    """backend_parameters as TES wants them: string values (true/false for booleans)."""
    if not isinstance(value, dict):
        raise Error.RuntimeError(f"{what} must be an object of names to values, not {value!r}")
    out: dict[str, str] = {}
    for key, item in value.items():
        out[str(key)] = ("true" if item else "false") if isinstance(item, bool) else str(item)
    return out
