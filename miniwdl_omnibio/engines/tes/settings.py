"""The [omnibio_tes] section, read and checked once at start, and the credentials it names."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from WDL import Error

from ...placement.sharedfs import SharedFilesystem
from ...settings import REQUIRED, EngineSettings, flag, integer, json_object, key, number, size
from .client import Credentials

MAX_PAGE_SIZE = 2047  # the spec: page_size must be less than 2048


def _url(value: str) -> str:
    url = value.rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parsed.username or parsed.password:
        raise ValueError("must not contain credentials; use user + password_env, or token_env")
    return url


def _page_size(value: str) -> int:
    page_size = integer(value)
    if page_size > MAX_PAGE_SIZE:
        raise ValueError(f"{page_size} is too large; TES servers accept at most 2047")
    return page_size


def _backend_parameters(value: str) -> dict[str, str]:
    return string_map(json_object(value), "[omnibio_tes] backend_parameters")


@dataclass(frozen=True)
class TesSettings(EngineSettings):
    """[omnibio_tes], read once at start."""

    section = "omnibio_tes"

    url: str = key(
        "",
        "the TES server, e.g. `https://tes.example.org`; the API is found below it at "
        "`/ga4gh/tes/v1`, `/v1` or the URL itself, whichever answers service-info first. "
        "Credentials in the URL are refused: use `user` + `password_env`, or `token_env`",
        _url,
        required=True,
    )
    user: str = key("", "HTTP basic auth: the user name (its password is in `password_env`)")
    password_env: str = key(
        "", "HTTP basic auth: name of the environment variable holding the password of `user`"
    )
    token_env: str = key(
        "",
        "name of the environment variable holding a bearer token (OAuth2/JWT); not with `user`",
    )
    request_timeout: int = key(
        "30", "seconds one HTTP request to the server may take", integer, minimum=1
    )
    max_retries: int = key(
        "8",
        "tries after a throttled (429), busy (5xx) or unanswered request to the TES server "
        "(pausing as its `Retry-After` says, else 1 s, doubling) or to the staging store; a "
        "failed create is sent again only when a list by its run id tag shows the server did "
        "not create it",
        integer,
        minimum=0,
    )
    staging_uri: str = key(
        "",
        "staging mode (the default): where task files move between this host and the workers, "
        "`s3://bucket/prefix` (AWS, or an S3-compatible endpoint through `AWS_ENDPOINT_URL_S3`) "
        "or an Azure Blob URL `https://<account>.blob.core.windows.net/<container>/<prefix>`. "
        "The TES server must be able to read and write it",
        lambda value: value.rstrip("/"),
    )
    keep_staged: bool = key(
        "false", "keep the staged objects of a finished run (default: removed at exit)", flag
    )
    mount_path: str = key(
        "",
        "shared-filesystem mode (opt-in, instead of `staging_uri`): where the server's workers "
        "mount the filesystem holding the run directories, read-write (e.g. a Funnel worker "
        "volume); task working directories and results stay there, in place",
    )
    host_mount_path: str = key(
        "", "where this host mounts the same filesystem; empty: `mount_path`"
    )
    readonly_mount_path: str = key(
        "",
        "where the workers also mount it read-only, for task inputs; empty: inputs are read "
        "through `mount_path`",
    )
    probe_image: str = key(
        "ubuntu:22.04",
        "shared-filesystem mode: the image of the task that proves at start that the workers "
        "see `mount_path`",
    )
    probe_timeout: float = key(
        "600",
        "shared-filesystem mode: seconds the probe task may take, queueing included",
        number,
        minimum=1,
    )
    poll_seconds: float = EngineSettings.override(
        "poll_seconds",
        "3",
        "seconds between two status polls (one list per waiting or running state per poll)",
    )
    page_size: int = key(
        "256", "tasks per page when listing (TES: below 2048)", _page_size, minimum=1
    )
    default_time_limit: int | None = EngineSettings.override(
        "default_time_limit",
        "0",
        "seconds a task may run when it sets no `runtime.omnibio_time_limit`; `0`: no limit. TES "
        "1.1 has no time limit field, so the plugin cancels the task when it is exceeded",
    )
    backend_parameters: Mapping[str, str] = key(
        "{}",
        "JSON object of `resources.backend_parameters` for every task; runtime "
        "`omnibio_backend_parameters` overrides it key by key (keys compare case-insensitively)",
        _backend_parameters,
    )
    backend_parameters_strict: bool = key(
        "false",
        "fail (`true`) or warn (`false`) when a backend parameter is not one the server's "
        "service-info lists; also sent to the server as `resources.backend_parameters_strict`",
        flag,
    )
    max_cpu: int = EngineSettings.override(
        "max_cpu",
        "64",
        "the most CPUs one task may request (miniwdl clamps `runtime.cpu` to it)",
        parse=integer,
    )
    max_memory: int = EngineSettings.override(
        "max_memory",
        "256G",
        "the most memory one task may request (miniwdl clamps `runtime.memory` to it)",
        parse=size,
    )
    credentials: Credentials = field(init=False)
    filesystem: SharedFilesystem | None = field(init=False)  # shared-filesystem mode when set

    def __post_init__(self) -> None:
        shared = bool(self.mount_path)
        if self.staging_uri and shared:
            raise self.fail(
                "staging_uri",
                "is set together with mount_path; choose staging (staging_uri) or a shared "
                "filesystem (mount_path)",
            )
        if not (self.staging_uri or shared):
            raise self.fail(
                "staging_uri",
                "is required: the object store (s3://bucket/prefix or an Azure Blob URL) "
                "through which task files move, unless mount_path names a shared filesystem",
            )
        if shared and not self.probe_image:
            raise self.fail("probe_image", REQUIRED)
        self.derive(
            credentials=credentials(self),
            filesystem=SharedFilesystem.from_settings(self) if shared else None,
        )


def credentials(settings: TesSettings) -> Credentials:
    """Basic auth (user + the password in $password_env) or a bearer token in $token_env."""
    user = settings.user or None
    password_env, token_env = settings.password_env, settings.token_env
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
    name, variable = ("password_env", password_env) if user else ("token_env", token_env)
    secret = os.environ.get(variable)
    if not secret:
        raise settings.fail(name, f"names the environment variable {variable}, which is not set")
    hint = f"[omnibio_tes] {'user and ' if user else ''}{name} (the secret in ${variable})"
    return Credentials(user, secret, hint)


def string_map(value: Any, what: str) -> dict[str, str]:
    """backend_parameters as TES wants them: string values (true/false for booleans)."""
    if not isinstance(value, dict):
        raise Error.RuntimeError(f"{what} must be an object of names to values, not {value!r}")
    out: dict[str, str] = {}
    for name, item in value.items():
        out[str(name)] = ("true" if item else "false") if isinstance(item, bool) else str(item)
    return out
