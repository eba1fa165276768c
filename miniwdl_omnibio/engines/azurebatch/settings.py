"""The [omnibio_azurebatch] section, read once at start."""

import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...config import Settings
from ...placement.sharedfs import SharedFilesystem
from .tasks import ID_LENGTH, INVALID_ID_CHARACTERS

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class AzureBatchSettings:
    """[omnibio_azurebatch], read once at start."""

    account_url: str
    host: str
    pool_id: str
    filesystem: SharedFilesystem
    node_root: str  # where pool nodes mount the shared filesystem
    default_time_limit: int | None
    poll_seconds: float
    list_seconds: float
    max_retries: int
    quota_wait: float
    extra_run_options: tuple[str, ...]
    auto_user_admin: bool
    loopback_token: bool  # an Entra token may go to a plain-http endpoint on this machine

    @classmethod
    def load(cls, settings: Settings) -> "AzureBatchSettings":
        account_url = settings.text("account_url", required=True).rstrip("/")
        parts = urlsplit(account_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise settings.fail(
                "account_url",
                f"{account_url!r} is not a URL such as "
                "https://myaccount.westeurope.batch.azure.com",
            )
        filesystem = SharedFilesystem.from_settings(settings)
        node_root = (settings.text("node_mount_path") or filesystem.container_root).rstrip("/")
        if not node_root.startswith("/"):
            raise settings.fail("node_mount_path", f"{node_root!r} must be an absolute path")
        pool_id = settings.text("pool_id", required=True)
        if INVALID_ID_CHARACTERS.search(pool_id) or len(pool_id) > ID_LENGTH:
            raise settings.fail(
                "pool_id",
                f"{pool_id!r} is not a Batch pool id (letters, digits, - and _, at most 64)",
            )
        return cls(
            account_url=account_url,
            host=parts.hostname,
            pool_id=pool_id,
            filesystem=filesystem,
            node_root=node_root,
            default_time_limit=settings.integer("default_time_limit", minimum=0) or None,
            poll_seconds=settings.number("poll_seconds", minimum=0.2),
            list_seconds=settings.number("list_seconds", minimum=0.2),
            max_retries=settings.integer("max_retries", minimum=0),
            quota_wait=settings.number("quota_wait_seconds", minimum=0),
            extra_run_options=tuple(shlex.split(settings.text("container_run_options"))),
            auto_user_admin=settings.flag("auto_user_admin"),
            loopback_token=settings.text("auth") == "entra" and parts.hostname in LOOPBACK_HOSTS,
        )
