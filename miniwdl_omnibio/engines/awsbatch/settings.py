"""The [omnibio_awsbatch] section, read once at start, and where Batch hosts find the shared
filesystem."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from WDL import Error

from ...config import Settings
from ...placement.sharedfs import SharedFilesystem

MAX_TAGS = 50  # SubmitJob tags: "maximum number of tags per resource is 50"


@dataclass(frozen=True)
class SharedVolume:
    """Where the Batch hosts find the shared filesystem: an EFS file system or a host directory."""

    efs_id: str
    efs_access_point: str
    host_path: str

    @classmethod
    def from_settings(cls, settings: Settings) -> "SharedVolume":
        efs_id, access_point, host_path = (
            settings.text("efs_id"),
            settings.text("efs_access_point"),
            settings.text("host_path"),
        )
        if bool(efs_id) == bool(host_path):
            raise settings.fail(
                "efs_id",
                "set exactly one of efs_id (an EFS file system) or host_path (a directory on "
                "every Batch host)",
            )
        if access_point and not efs_id:
            raise settings.fail("efs_access_point", "needs efs_id")
        if host_path and not host_path.startswith("/"):
            raise settings.fail("host_path", f"{host_path!r} must be an absolute path")
        return cls(efs_id, access_point, (host_path.rstrip("/") or "/") if host_path else "")

    def source(self, relative: str) -> dict[str, Any]:
        """The volume for ``relative`` (a directory below the filesystem's root, or ".")."""
        if self.host_path:
            return {
                "host": {"sourcePath": os.path.normpath(os.path.join(self.host_path, relative))}
            }
        efs: dict[str, Any] = {"fileSystemId": self.efs_id, "transitEncryption": "ENABLED"}
        if self.efs_access_point:
            if relative != ".":
                raise Error.RuntimeError(
                    f"omnibio_awsbatch cannot mount {relative} below EFS access point "
                    f"{self.efs_access_point}"
                )
            efs["authorizationConfig"] = {"accessPointId": self.efs_access_point}
        else:
            efs["rootDirectory"] = "/" if relative == "." else "/" + relative
        return {"efsVolumeConfiguration": efs}

    def describe(self) -> str:
        if self.host_path:
            return f"host:{self.host_path}"
        return f"efs:{self.efs_id}" + (f"/{self.efs_access_point}" if self.efs_access_point else "")


@dataclass(frozen=True)
class AwsBatchSettings:
    """The [omnibio_awsbatch] section, read once at start."""

    region: str
    job_queue: str
    fallback_queue: str
    job_role_arn: str
    tags: Mapping[str, str]
    default_memory: int
    max_cpu: int | None  # None: learned from the queues' compute environments
    max_memory: int | None
    default_time_limit: int | None
    poll_seconds: float
    describe_seconds: float
    submit_rate: float
    array_jobs: bool
    array_linger: float  # seconds a submission waits for others to share its array job
    filesystem: SharedFilesystem
    volume: SharedVolume

    @classmethod
    def load(cls, settings: Settings) -> "AwsBatchSettings":
        job_queue = settings.text("job_queue", required=True)
        filesystem = SharedFilesystem.from_settings(settings)
        volume = SharedVolume.from_settings(settings)
        tags = settings.json_object("tags")
        if any(str(k).lower().startswith("aws:") for k in tags) or len(tags) > MAX_TAGS - 5:
            raise settings.fail("tags", f"at most {MAX_TAGS - 5} tags, none starting with aws:")
        return cls(
            region=settings.text("region"),
            job_queue=job_queue,
            fallback_queue=settings.text("fallback_queue"),
            job_role_arn=settings.text("job_role_arn"),
            tags={str(k): str(v) for k, v in tags.items()},
            default_memory=settings.size("default_memory"),
            max_cpu=settings.integer("max_cpu", minimum=1) if settings.text("max_cpu") else None,
            max_memory=settings.size("max_memory") if settings.text("max_memory") else None,
            default_time_limit=settings.integer("default_time_limit", minimum=0) or None,
            poll_seconds=settings.number("poll_seconds", minimum=0.1),
            describe_seconds=settings.number("describe_seconds", minimum=0.1),
            submit_rate=settings.number("submit_rate", minimum=0.01),
            array_jobs=settings.flag("array_jobs"),
            array_linger=settings.number("array_linger_seconds", minimum=0),
            filesystem=filesystem,
            volume=volume,
        )


def filesystem_hint(settings: AwsBatchSettings) -> str:
    """What to check when a job cannot set up the shared filesystem: the volume and its keys."""
    where = f"the shared filesystem {settings.volume.describe()}"
    if settings.volume.host_path:
        return f"{where} (every Batch host must mount it; [omnibio_awsbatch] host_path, mount_path)"
    return (
        f"{where} (its mount targets and NFS, TCP 2049, from the compute environment's security "
        "group; [omnibio_awsbatch] efs_id, efs_access_point, mount_path)"
    )
