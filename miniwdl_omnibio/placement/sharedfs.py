"""A filesystem that miniwdl's host and the remote workers both mount (EFS, Azure Files, NFS).

Cloud engines run containers that see the run directory in place, so nothing is copied. The
launcher may mount the filesystem at another path than the workers (``host_mount_path`` vs
``mount_path``); inputs are reached through a second, read-only view of the same filesystem
(``readonly_mount_path``) so a task cannot change its inputs.
"""

import os
from dataclasses import dataclass
from typing import Protocol

from WDL import Error

from ..settings import ConfigError


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _rebase(path: str, old_root: str, new_root: str) -> str:
    rel = os.path.relpath(path, old_root)
    return new_root if rel == "." else os.path.join(new_root, rel)


class MountKeys(Protocol):
    """A section declaring the shared filesystem's keys (every engine but omnibio_docker)."""

    @property
    def mount_path(self) -> str: ...
    @property
    def host_mount_path(self) -> str: ...
    @property
    def readonly_mount_path(self) -> str: ...
    def fail(self, name: str, problem: str) -> ConfigError: ...


@dataclass(frozen=True)
class SharedFilesystem:
    host_root: str  # where miniwdl's host mounts it
    container_root: str  # where task containers see it read-write
    readonly_root: str | None  # where task containers see it read-only (None: no such view)

    @classmethod
    def from_settings(cls, settings: MountKeys) -> "SharedFilesystem":
        """Keys: mount_path (set), host_mount_path (default mount_path), readonly_mount_path."""
        container_root = settings.mount_path
        host_root = settings.host_mount_path or container_root
        readonly_root = settings.readonly_mount_path or None
        for key, value in (
            ("mount_path", container_root),
            ("host_mount_path", host_root),
            ("readonly_mount_path", readonly_root),
        ):
            if value is not None and (not value.startswith("/") or value.rstrip("/") == ""):
                raise settings.fail(key, f"{value!r} must be an absolute path below /")
        if readonly_root and (
            _under(readonly_root, container_root) or _under(container_root, readonly_root)
        ):
            raise settings.fail("readonly_mount_path", "must not overlap mount_path")
        return cls(
            host_root.rstrip("/"),
            container_root.rstrip("/"),
            readonly_root.rstrip("/") if readonly_root else None,
        )

    def check_host_path(self, host_path: str, what: str) -> None:
        if not _under(os.path.abspath(host_path), self.host_root):
            raise Error.InputError(
                f"{what} {host_path} is not on the shared filesystem mounted at {self.host_root}; "
                "workers cannot see it (put run directories and inputs under it)"
            )

    def to_container(self, host_path: str, read_only: bool = False) -> str:
        self.check_host_path(host_path, "path")
        root = self.readonly_root if (read_only and self.readonly_root) else self.container_root
        return _rebase(os.path.abspath(host_path), self.host_root, root)

    def to_host(self, container_path: str) -> str:
        for root in (self.container_root, self.readonly_root):
            if root and _under(container_path, root):
                return _rebase(container_path, root, self.host_root)
        raise ValueError(f"{container_path} is not on the shared filesystem")
