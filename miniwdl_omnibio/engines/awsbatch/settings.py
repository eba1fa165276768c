"""The [omnibio_awsbatch] section, read once at start, and where Batch hosts find the shared
filesystem."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from WDL import Error

from ...placement.sharedfs import SharedFilesystem
from ...settings import EngineSettings, flag, json_object, key, number, size

MAX_TAGS = 50  # SubmitJob tags: "maximum number of tags per resource is 50"


@dataclass(frozen=True)
class SharedVolume:
    """Where the Batch hosts find the shared filesystem: an EFS file system or a host directory."""

    efs_id: str
    efs_access_point: str
    host_path: str

    @classmethod
    def from_settings(cls, settings: "AwsBatchSettings") -> "SharedVolume":
        efs_id, access_point, host_path = (
            settings.efs_id,
            settings.efs_access_point,
            settings.host_path,
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


def _tags(value: str) -> dict[str, str]:
    tags = json_object(value)
    if any(str(k).lower().startswith("aws:") for k in tags) or len(tags) > MAX_TAGS - 5:
        raise ValueError(f"at most {MAX_TAGS - 5} tags, none starting with aws:")
    return {str(k): str(v) for k, v in tags.items()}


@dataclass(frozen=True)
class AwsBatchSettings(EngineSettings):
    """The [omnibio_awsbatch] section, read once at start."""

    section = "omnibio_awsbatch"

    region: str = key(
        "",
        "AWS region of the job queues; empty: boto3's default (`AWS_REGION`, "
        "`AWS_DEFAULT_REGION`, `~/.aws/config`). Credentials come only from boto3's standard "
        "chain; `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_BATCH` points it at another endpoint",
    )
    job_queue: str = key("", "the job queue (name or ARN) task attempts go to", required=True)
    fallback_queue: str = key(
        "",
        "the queue (e.g. on-demand behind a spot `job_queue`) for attempts that must not be "
        "interrupted: tasks without `runtime.preemptible`, and attempts after an interruption "
        '(see "Queues and spot"); empty: `job_queue` for everything',
    )
    efs_id: str = key(
        "",
        "the shared filesystem as the Batch hosts get it: an EFS file system id (`fs-...`), "
        "mounted for each job with transit encryption",
    )
    efs_access_point: str = key("", "an EFS access point id (`fsap-...`) to mount `efs_id` through")
    host_path: str = key(
        "",
        "instead of EFS: a directory every Batch host already mounts (FSx for Lustre, NFS), "
        "given to jobs as a Batch host volume",
    )
    mount_path: str = key(
        "", "where task containers see the shared filesystem, read-write", required=True
    )
    host_mount_path: str = key(
        "", "where this host (miniwdl) mounts the same filesystem; empty: `mount_path`"
    )
    readonly_mount_path: str = key(
        "/mnt/omnibio_inputs",
        "where task containers see it read-only, for their inputs; empty: inputs are writable",
    )
    job_role_arn: str = key(
        "", "IAM role the task containers get (job definition `jobRoleArn`); empty: none"
    )
    tags: Mapping[str, str] = key(
        "{}",
        "JSON object of extra tags on every job, propagated to its ECS task (at most 45; none "
        "starting with `aws:`)",
        _tags,
    )
    default_time_limit: int | None = EngineSettings.override(
        "default_time_limit",
        "0",
        "seconds an attempt may run when the task sets no `runtime.omnibio_time_limit`; `0`: no "
        "limit. Batch enforces at least 60",
    )
    default_memory: int = key(
        "2G", "memory for tasks that set no `runtime.memory` (Batch needs one)", size
    )
    max_cpu: int | None = EngineSettings.override(
        "max_cpu",
        "",
        "the most vCPUs one task may request (miniwdl clamps `runtime.cpu` to it); empty: "
        "learned at start from the queues' managed compute environments (`maxvCpus`, the "
        'largest instance type; see "Limits"), else 64',
    )
    max_memory: int | None = EngineSettings.override(
        "max_memory",
        "",
        "the most memory one task may request (miniwdl clamps `runtime.memory` to it); empty: "
        "learned at start as `max_cpu` is, else 256 GiB",
    )
    submit_rate: float = key(
        "10",
        "SubmitJob calls per second across all task threads (Batch allows 50 per account)",
        number,
        minimum=0.01,
    )
    array_jobs: bool = key(
        "true",
        "attempts ready together with the same queue, job definition, resources and time limit "
        'go to Batch as one array job (one SubmitJob for up to 10,000 attempts; see "Array '
        'jobs"); `false`: one job per attempt',
        flag,
    )
    array_linger: float = key(
        "0.2",
        "seconds a ready attempt waits for others to share its array job: until this long "
        "passes with none joining (at most ten times as long)",
        number,
        minimum=0,
        name="array_linger_seconds",
    )
    poll_seconds: float = EngineSettings.override(
        "poll_seconds",
        "5",
        "seconds between two looks at the jobs' exit records on the shared filesystem (each job "
        "writes its exit status there; one that did not exit 0 is then asked of Batch; see "
        '"Status")',
    )
    describe_seconds: float = key(
        "30",
        "seconds between DescribeJobs rounds about jobs whose exit records say nothing yet (a "
        "lost host, a container that cannot start, a job stuck RUNNABLE); each call covers 100 "
        "jobs",
        number,
        minimum=0.1,
    )
    filesystem: SharedFilesystem = field(init=False)
    volume: SharedVolume = field(init=False)

    def __post_init__(self) -> None:
        self.derive(
            filesystem=SharedFilesystem.from_settings(self), volume=SharedVolume.from_settings(self)
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
