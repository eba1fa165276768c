"""omnibio_awsbatch: each task attempt is one AWS Batch job on a shared filesystem (EFS, FSx, NFS).

Frugal with API calls, so large scatters stay under Batch's rate limits: job definitions are
shared by content (image, volumes, user) and found again by name on later runs; everything that
changes per attempt travels in SubmitJob overrides; one poller asks DescribeJobs about up to 100
jobs per call. A normal task costs one SubmitJob plus its share of the polls.
"""

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ContextManager

import boto3
import botocore.config
import botocore.exceptions
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ..attempt import Mount, TaskAttempt
from ..config import Settings
from ..sharedfs import SharedFilesystem
from .base import QUEUED, RUNNING, Engine, Phase, Poller, Status

LOG_GROUP = "/aws/batch/job"
LOG_TAIL_LINES = 30
MIN_TIMEOUT = 60  # Batch refuses attemptDurationSeconds below 60
JOB_NAME_MAX = 128
MAX_TAGS = 50
# Batch caps a SubmitJob request at 30 KiB: environment values beyond this budget are written to
# a file on the shared filesystem that the job's wrapper sources
PAYLOAD_BUDGET = 20 * 1024
# DescribeJobs may not know a job for a moment after SubmitJob returns (eventual consistency)
UNKNOWN_GRACE_SECONDS = 120
QUEUED_STATES = ("SUBMITTED", "PENDING", "RUNNABLE")
ACTIVE_STATES = QUEUED_STATES + ("STARTING", "RUNNING")
HOST_LOSS = re.compile(r"Host EC2 .*terminated", re.IGNORECASE)
CANNOT_START = re.compile(
    r"Cannot\w*(Container|Inspect)\w*Error|CannotPullContainer", re.IGNORECASE
)
TIMED_OUT = re.compile(r"duration exceeded timeout|attemptDurationSeconds", re.IGNORECASE)
AUTH_ERROR_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "AuthFailure",
    "AccessDeniedException",
    "AccessDenied",
}
CONNECT_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)
# The job's command. Batch has no per-job working directory, so the wrapper enters it; it sources
# environment values that did not fit the SubmitJob payload; and when the task fails it copies the
# tail of the task's stderr (which goes to the shared filesystem) into the job's CloudWatch log.
# Arguments: workdir, stderr file, env file or "-", then the task's argv.
WRAPPER = (
    'cd "$1" || { echo "omnibio: cannot enter $1; is the shared filesystem mounted on this Batch host?" >&2; exit 97; }; '
    'if [ "$3" != - ]; then . "$3"; fi; '
    "stderr=$2; shift 3; "
    '"$@"; rc=$?; '
    f'if [ "$rc" -ne 0 ]; then tail -n {LOG_TAIL_LINES} "$stderr" >&2; fi; '
    'exit "$rc"'
)


def error_text(exn: BaseException) -> str:
    """One line from a botocore error (moto sometimes returns an XML body as the message)."""
    if isinstance(exn, botocore.exceptions.ClientError):
        error = exn.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if message.lstrip().startswith("<"):
            code = (re.findall(r"<Code>(.*?)</Code>", message) or [code])[0]
            message = (re.findall(r"<Message>(.*?)</Message>", message) or [message])[0]
        return f"{code}: {message}"[:300]
    return " ".join(str(exn).split())[:300]


def is_auth_error(exn: botocore.exceptions.ClientError) -> bool:
    code = error_text(exn).split(":", 1)[0]
    status = exn.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in AUTH_ERROR_CODES or status in (401, 403)


def _reasons(job: dict[str, Any]) -> str:
    """Every reason Batch gives for a job's end: the job's, its container's, its last attempt's."""
    attempts = job.get("attempts") or [{}]
    found: list[str] = []
    for text in (
        job.get("statusReason"),
        (job.get("container") or {}).get("reason"),
        attempts[-1].get("statusReason"),
        (attempts[-1].get("container") or {}).get("reason"),
    ):
        if text and text not in found:
            found.append(text)
    return "; ".join(found)


def _exit_code(job: dict[str, Any]) -> int | None:
    for container in [job.get("container")] + [
        a.get("container") for a in reversed(job.get("attempts") or [])
    ]:
        if container and container.get("exitCode") is not None:
            return int(container["exitCode"])
    return None


def _log_stream(job: dict[str, Any]) -> str | None:
    for container in [job.get("container")] + [
        a.get("container") for a in reversed(job.get("attempts") or [])
    ]:
        if container and container.get("logStreamName"):
            return str(container["logStreamName"])
    return None


@dataclass
class JobRecord:
    """What this process remembers about a job it submitted."""

    name: str
    queue: str
    call: str
    image: str
    time_limit: int | None
    submitted: float  # time.monotonic()
    cancelled: bool = False


def needs_listed_exit_code(job: dict[str, Any]) -> bool:
    """A failed job whose outcome hangs on an exit code DescribeJobs did not give (moto omits it)."""
    if job["status"] != "FAILED" or _exit_code(job) is not None:
        return False
    reason = _reasons(job)
    return not any(p.search(reason) for p in (HOST_LOSS, CANNOT_START, TIMED_OUT))


def job_status(
    job: dict[str, Any], record: JobRecord, listed_exit_code: int | None = None
) -> Status:
    """Translate one DescribeJobs entry; ``listed_exit_code`` is ListJobs' word when it lacks one."""
    state = job["status"]
    if state in QUEUED_STATES:
        return QUEUED
    if state in ("STARTING", "RUNNING"):
        return RUNNING
    reason = _reasons(job)
    exit_code = _exit_code(job)
    if exit_code is None:
        exit_code = listed_exit_code
    details: dict[str, Any] = {"job_queue": record.queue, "job_name": record.name}
    stream = _log_stream(job)
    if stream:
        details.update(log_group=LOG_GROUP, log_stream=stream)
    if state == "SUCCEEDED":  # Batch succeeds a job exactly when its container exits 0
        return Status(Phase.DONE, exit_code=exit_code or 0, reason=reason, details=details)
    job_id = job["jobId"]
    if HOST_LOSS.search(reason):
        return Status(Phase.DONE, interrupted=True, reason=reason, details=details)
    if CANNOT_START.search(reason):
        what = "pull" if "pull" in reason.lower() else "start a container from"
        return Status(
            Phase.DONE,
            error=f"AWS Batch could not {what} image {record.image} for job {job_id}: {reason}",
            reason=reason,
            details=details,
        )
    if TIMED_OUT.search(reason):
        return Status(
            Phase.DONE,
            error=f"AWS Batch job {job_id} exceeded its time limit of {record.time_limit} s ({reason})",
            reason=reason,
            details=details,
        )
    oom = "OutOfMemoryError" in reason
    if exit_code is not None:
        return Status(Phase.DONE, exit_code=exit_code, oom=oom, reason=reason, details=details)
    if oom:
        return Status(Phase.DONE, exit_code=137, oom=True, reason=reason, details=details)
    ran = (job.get("stoppedAt") or 0) - (job.get("startedAt") or 0)
    if (
        record.time_limit
        and job.get("startedAt")
        and ran >= 1000 * (max(MIN_TIMEOUT, record.time_limit) - 1)
    ):
        return Status(
            Phase.DONE,
            error=f"AWS Batch job {job_id} exceeded its time limit of {record.time_limit} s",
            reason=reason,
            details=details,
        )
    return Status(
        Phase.DONE,
        error=(
            f"AWS Batch job {job_id} failed without running its command ({reason or 'Batch gave no reason'}); "
            f"check that image {record.image} exists and that the queue's hosts can pull it"
        ),
        reason=reason,
        details=details,
    )


class SubmitRate:
    """A token bucket shared by all task threads: at most ``rate`` SubmitJob calls per second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Take a token; return how long to wait before using it."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - 1
            self.stamp = now
            return -self.tokens / self.rate if self.tokens < 0 else 0.0


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
                "set exactly one of efs_id (an EFS file system) or host_path (a directory on every Batch host)",
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
                    f"omnibio_awsbatch cannot mount {relative} below EFS access point {self.efs_access_point}"
                )
            efs["authorizationConfig"] = {"accessPointId": self.efs_access_point}
        else:
            efs["rootDirectory"] = "/" if relative == "." else "/" + relative
        return {"efsVolumeConfiguration": efs}

    def describe(self) -> str:
        if self.host_path:
            return f"host:{self.host_path}"
        return f"efs:{self.efs_id}" + (f"/{self.efs_access_point}" if self.efs_access_point else "")


def job_name(prefix: str, call: str, attempt: int) -> str:
    """<prefix><call path>-<attempt>, within Batch's 128 letters, digits, hyphens and underscores."""
    body = re.sub(r"[^A-Za-z0-9_-]+", "-", call).strip("-") or "task"
    suffix = f"-{attempt}"
    room = JOB_NAME_MAX - len(prefix) - len(suffix)
    if len(body) > room:  # keep the distinctive end (call-align-3) and a hash of the whole path
        digest = hashlib.sha256(call.encode()).hexdigest()[:8]
        body = digest + "-" + body[-(room - len(digest) - 1) :]
    return prefix + body + suffix


def _clean_tag(text: str, limit: int) -> str:
    return re.sub(r"[^\w .:/=+\-@]", "_", str(text))[:limit]


class AwsBatchEngine(Engine):
    section = "omnibio_awsbatch"
    runtime_keys = ("omnibio_queue",)

    def __init__(
        self,
        session: boto3.session.Session,
        settings: Settings,
        filesystem: SharedFilesystem,
        volume: SharedVolume,
        queues: set[str],
        logger: logging.Logger,
    ) -> None:
        self.filesystem = filesystem
        self.volume = volume
        self.region = session.region_name
        retries = botocore.config.Config(
            retries={"mode": "adaptive", "max_attempts": 10}, max_pool_connections=50
        )
        self.batch = session.client("batch", config=retries)
        self.logs = session.client("logs", config=retries)
        self.job_queue = settings.text("job_queue")
        self.fallback_queue = settings.text("fallback_queue")
        self.job_role_arn = settings.text("job_role_arn")
        self.user_tags = {str(k): str(v) for k, v in settings.json_object("tags").items()}
        self.default_memory = settings.size("default_memory")
        self.limits = {
            "cpu": settings.integer("max_cpu", minimum=1),
            "mem_bytes": settings.size("max_memory"),
        }
        self.default_time_limit = settings.integer("default_time_limit", minimum=0) or None
        poll = settings.number("poll_seconds", minimum=0.1)
        self.poll_seconds = min(poll, 1.0)  # the lifecycle's round: Ctrl-C and stderr stay prompt
        self.rate = SubmitRate(settings.number("submit_rate", minimum=0.01))
        self.name_prefix = (
            f"omnibio-{uuid.uuid4().hex[:8]}-"  # one per process: ListJobs finds ours
        )
        self._lock = threading.Lock()
        self._known_queues = set(queues)
        self._definitions: dict[str, str] = {}
        self._definitions_lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self.poller = Poller("omnibio-awsbatch-poller", self._fetch, poll, logger, batch=100)

    # --- start -----------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "AwsBatchEngine":
        settings = Settings(cfg, cls.section)
        job_queue = settings.text("job_queue", required=True)
        filesystem = SharedFilesystem.from_settings(settings)
        volume = SharedVolume.from_settings(settings)
        tags = settings.json_object("tags")
        if any(str(k).lower().startswith("aws:") for k in tags) or len(tags) > MAX_TAGS - 5:
            raise settings.fail("tags", f"at most {MAX_TAGS - 5} tags, none starting with aws:")
        session = boto3.session.Session(region_name=settings.text("region") or None)
        if not session.region_name:
            raise settings.fail(
                "region",
                "is not set and boto3 found no default region (AWS_REGION, AWS_DEFAULT_REGION, ~/.aws/config)",
            )
        queues = {"job_queue": job_queue, "fallback_queue": settings.text("fallback_queue")}
        cls._check_queues(session, settings, {k: v for k, v in queues.items() if v})
        engine = cls(session, settings, filesystem, volume, set(queues.values()), logger)
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_awsbatch",
                region=engine.region,
                endpoint=engine.batch.meta.endpoint_url,
                job_queue=engine.job_queue,
                fallback_queue=engine.fallback_queue or None,
                volume=volume.describe(),
                mount_path=filesystem.container_root,
                readonly_mount_path=filesystem.readonly_root,
            ),
        )
        return engine

    @classmethod
    def _check_queues(
        cls, session: boto3.session.Session, settings: Settings, queues: dict[str, str]
    ) -> None:
        """One DescribeJobQueues call proves the endpoint, the credentials and the queues."""
        probe = session.client(
            "batch",
            config=botocore.config.Config(
                retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=30
            ),
        )
        endpoint = probe.meta.endpoint_url
        try:
            found = probe.describe_job_queues(jobQueues=sorted(set(queues.values())))["jobQueues"]
        except botocore.exceptions.NoCredentialsError:
            raise Error.RuntimeError(
                "omnibio_awsbatch found no AWS credentials in boto3's chain (environment, ~/.aws, container or instance role)"
            ) from None
        except CONNECT_ERRORS as exn:
            override = next(
                (v for v in ("AWS_ENDPOINT_URL_BATCH", "AWS_ENDPOINT_URL") if os.environ.get(v)),
                None,
            )
            where = (
                f"set by {override}"
                if override
                else f"region {session.region_name}, see {settings.section} region"
            )
            raise Error.RuntimeError(
                f"omnibio_awsbatch cannot reach AWS Batch at {endpoint} ({where}): {error_text(exn)}"
            ) from None
        except botocore.exceptions.ClientError as exn:
            if is_auth_error(exn):
                method = getattr(session.get_credentials(), "method", "unknown source")
                raise Error.RuntimeError(
                    f"AWS Batch at {endpoint} rejected the credentials boto3 found ({method}): {error_text(exn)}"
                ) from None
            raise Error.RuntimeError(
                f"omnibio_awsbatch: DescribeJobQueues at {endpoint} failed: {error_text(exn)}"
            ) from None
        except botocore.exceptions.BotoCoreError as exn:
            raise Error.RuntimeError(
                f"omnibio_awsbatch cannot use AWS Batch at {endpoint}: {error_text(exn)}"
            ) from None
        by_name = {q["jobQueueName"]: q for q in found}
        by_name.update({q["jobQueueArn"]: q for q in found})
        for key, name in queues.items():
            queue = by_name.get(name)
            if queue is None:
                raise settings.fail(
                    key,
                    f"AWS Batch has no job queue {name!r} in region {session.region_name} ({endpoint})",
                )
            if queue.get("state") != "ENABLED" or queue.get("status") == "INVALID":
                raise settings.fail(
                    key,
                    f"job queue {name!r} is {queue.get('state')}/{queue.get('status')}: {queue.get('statusReason', '')}",
                )

    def resource_limits(self) -> dict[str, int]:
        return self.limits

    # --- one attempt -----------------------------------------------------------------------

    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> ContextManager[None]:
        return self._paced(terminating)

    @contextlib.contextmanager
    def _paced(self, terminating: Callable[[], bool]) -> Iterator[None]:
        """Wait for a SubmitJob slot (submit_rate), giving up early when the run is terminating."""
        deadline = time.monotonic() + self.rate.delay()
        while not terminating() and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        yield

    def submit(self, attempt: TaskAttempt, logger: logging.Logger) -> str:
        queue = self.queue_for(attempt)
        definition = self.job_definition(attempt, logger)
        name = job_name(self.name_prefix, attempt.call, attempt.attempt)
        request: dict[str, Any] = dict(
            jobName=name,
            jobQueue=queue,
            jobDefinition=definition,
            containerOverrides=self.overrides(attempt, logger),
            retryStrategy={"attempts": 1},  # miniwdl retries (maxRetries, preemptible)
            propagateTags=True,
            tags=self.job_tags(attempt),
        )
        if attempt.resources.time_limit:
            request["timeout"] = {
                "attemptDurationSeconds": max(MIN_TIMEOUT, attempt.resources.time_limit)
            }
        try:
            job_id = str(self.batch.submit_job(**request)["jobId"])
        except botocore.exceptions.ClientError as exn:
            raise Error.RuntimeError(
                f"AWS Batch refused job {name} on queue {queue}: {error_text(exn)}"
            ) from None
        with self._lock:
            self._jobs[job_id] = JobRecord(
                name,
                queue,
                attempt.call,
                attempt.image,
                attempt.resources.time_limit,
                time.monotonic(),
            )
        self.poller.watch(job_id)
        logger.log(
            NOTICE_LEVEL,
            _(
                "AWS Batch job",
                id=job_id,
                name=name,
                queue=queue,
                definition=definition.rsplit("/", 1)[-1],
            ),
        )
        return job_id

    def queue_for(self, attempt: TaskAttempt) -> str:
        """runtime.omnibio_queue, else job_queue while miniwdl may still retry an interruption
        (fewer interruptions so far than runtime.preemptible), else fallback_queue."""
        chosen = attempt.runtime.get("omnibio_queue")
        if chosen:
            self._check_runtime_queue(str(chosen))
            return str(chosen)
        if not self.fallback_queue:
            return self.job_queue
        if attempt.interruptions < attempt.resources.max_interruptions:
            return self.job_queue
        return self.fallback_queue

    def _check_runtime_queue(self, queue: str) -> None:
        if queue in self._known_queues:
            return
        try:
            found = self.batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
        except botocore.exceptions.ClientError as exn:
            raise Error.RuntimeError(
                f"runtime.omnibio_queue {queue!r}: DescribeJobQueues failed: {error_text(exn)}"
            ) from None
        if not any(queue in (q["jobQueueName"], q["jobQueueArn"]) for q in found):
            raise Error.InputError(
                f"runtime.omnibio_queue {queue!r}: AWS Batch has no such job queue in {self.region}"
            )
        self._known_queues.add(queue)

    def job_tags(self, attempt: TaskAttempt) -> dict[str, str]:
        tags = {**self.user_tags, **attempt.tags}
        return {_clean_tag(k, 128): _clean_tag(v, 256) for k, v in tags.items()}

    def job_definition(self, attempt: TaskAttempt, logger: logging.Logger) -> str:
        """The ARN of the job definition for the attempt's image, volumes and user.

        Named by a hash of its content, so every run (and every process) that needs the same
        content uses the same definition: looked up by name once per process, registered only
        when missing, never deregistered.
        """
        volumes, mount_points = self.volumes(attempt.mounts)
        properties: dict[str, Any] = {
            "image": attempt.image,
            # placeholders: every job overrides vCPU and memory
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "1024"},
            ],
            "volumes": volumes,
            "mountPoints": mount_points,
            "privileged": attempt.privileged,
        }
        if attempt.user:
            properties["user"] = attempt.user
        if self.job_role_arn:
            properties["jobRoleArn"] = self.job_role_arn
        digest = hashlib.sha256(json.dumps(properties, sort_keys=True).encode()).hexdigest()[:32]
        name = f"omnibio-{digest}"
        with self._definitions_lock:
            if name not in self._definitions:
                try:
                    found = self.batch.describe_job_definitions(
                        jobDefinitionName=name, status="ACTIVE"
                    )["jobDefinitions"]
                    if found:
                        arn = max(found, key=lambda d: int(d["revision"]))["jobDefinitionArn"]
                    else:
                        arn = self.batch.register_job_definition(
                            jobDefinitionName=name, type="container", containerProperties=properties
                        )["jobDefinitionArn"]
                        logger.log(
                            NOTICE_LEVEL,
                            _(
                                "AWS Batch job definition registered",
                                name=name,
                                image=attempt.image,
                            ),
                        )
                except botocore.exceptions.ClientError as exn:
                    raise Error.RuntimeError(
                        f"AWS Batch job definition {name} for image {attempt.image}: {error_text(exn)}"
                    ) from None
                self._definitions[name] = str(arn)
            return self._definitions[name]

    def volumes(
        self, mounts: tuple[Mount, ...]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Batch volumes and mount points for the attempt's views of the shared filesystem."""
        assert self.filesystem
        volumes: list[dict[str, Any]] = []
        points: list[dict[str, Any]] = []
        names: dict[str, str] = {}
        for mount in mounts:
            relative = os.path.relpath(mount.host_path, self.filesystem.host_root)
            if relative.startswith(".."):
                raise Error.RuntimeError(
                    f"omnibio_awsbatch: {mount.host_path} is not on the shared filesystem {self.filesystem.host_root}"
                )
            if relative not in names:
                names[relative] = f"omnibio-fs{len(names) or ''}"
                volumes.append({"name": names[relative], **self.volume.source(relative)})
            points.append(
                {
                    "sourceVolume": names[relative],
                    "containerPath": mount.container_path,
                    "readOnly": mount.read_only,
                }
            )
        return volumes, points

    def overrides(self, attempt: TaskAttempt, logger: logging.Logger) -> dict[str, Any]:
        """Command, environment and resources of this attempt (the job definition has none)."""
        assert self.filesystem
        env = {k: str(v) for k, v in attempt.env.items() if not k.startswith("AWS_BATCH")}
        spilled = self._spill(env)
        env_file = "-"
        if spilled:
            path = os.path.join(attempt.host_dir, f"awsbatch_env.{attempt.attempt}.sh")
            with open(path, "w", encoding="utf-8") as outfile:
                outfile.writelines(
                    f"export {name}={shlex.quote(value)}\n" for name, value in spilled.items()
                )
            env_file = self.filesystem.to_container(path)
            logger.info(
                _(
                    "environment values passed in a file (SubmitJob payload limit)",
                    names=sorted(spilled),
                    file=env_file,
                )
            )
        resources = attempt.resources
        memory = resources.memory_limit or resources.memory_reservation or self.default_memory
        requirements = [
            {"type": "VCPU", "value": str(max(1, resources.cpu))},
            {"type": "MEMORY", "value": str(max(4, math.ceil(memory / (1 << 20))))},
        ]
        if resources.gpu:
            requirements.append({"type": "GPU", "value": str(resources.gpu)})
        stderr = self.filesystem.to_container(attempt.stderr_path)
        return {
            "command": [
                "/bin/sh",
                "-c",
                WRAPPER,
                "omnibio",
                attempt.workdir,
                stderr,
                env_file,
                *attempt.argv,
            ],
            "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
            "resourceRequirements": requirements,
        }

    @staticmethod
    def _spill(env: dict[str, str]) -> dict[str, str]:
        """Remove the largest values from ``env`` until it fits the payload budget; return them."""
        spilled: dict[str, str] = {}
        size = sum(len(k) + len(v.encode()) + 32 for k, v in env.items())
        while size > PAYLOAD_BUDGET and env:
            name = max(env, key=lambda k: len(env[k]))
            spilled[name] = env.pop(name)
            size -= len(name) + len(spilled[name].encode()) + 32
        return spilled

    def wait(self, handle: str, timeout: float) -> Status:
        return self.poller.wait(handle, timeout)

    def cancel(self, handle: str, logger: logging.Logger) -> None:
        with self._lock:
            record = self._jobs.get(handle)
            if record is None or record.cancelled:
                return
            record.cancelled = True
        try:
            self.batch.terminate_job(jobId=handle, reason="cancelled by miniwdl (omnibio_awsbatch)")
            logger.info(_("AWS Batch job terminated", id=handle))
        except Exception as exn:
            logger.warning(_("AWS Batch TerminateJob failed", id=handle, error=error_text(exn)))

    def _status(self, handle: str) -> Status | None:
        """The poller's latest word on a job (None once released)."""
        try:
            return self.poller.wait(handle, 0)
        except KeyError:
            return None

    def release(self, handle: str, logger: logging.Logger) -> None:
        status = self._status(handle) or QUEUED
        if status.phase is not Phase.DONE:
            self.cancel(handle, logger)  # the lifecycle gave up on it: leave nothing running
        with self._lock:
            self._jobs.pop(handle, None)
        self.poller.forget(handle)

    def failure_details(self, handle: str, attempt: TaskAttempt, status: Status) -> dict[str, Any]:
        """The tail of the job's CloudWatch log (the wrapper copies the task's stderr tail there)."""
        stream = status.details.get("log_stream")
        if not stream:
            return {}
        try:
            events = self.logs.get_log_events(
                logGroupName=LOG_GROUP,
                logStreamName=stream,
                limit=LOG_TAIL_LINES,
                startFromHead=False,
            )["events"]
        except Exception as exn:
            return {"log_tail_error": error_text(exn)}
        return {"log_tail": [str(e.get("message", "")) for e in events]}

    def shutdown(self, logger: logging.Logger) -> None:
        """Terminate every job this process submitted that has not finished."""
        with self._lock:
            live = [h for h, r in self._jobs.items() if not r.cancelled]
        for handle in live:
            status = self._status(handle)
            if status is None or status.phase is not Phase.DONE:
                self.cancel(handle, logger)

    # --- the poller's call -----------------------------------------------------------------

    def _fetch(self, handles: list[str]) -> dict[str, Status]:
        jobs = self.batch.describe_jobs(jobs=handles)["jobs"]
        with self._lock:
            records = {h: self._jobs[h] for h in handles if h in self._jobs}
        lacking = [j for j in jobs if j["jobId"] in records and needs_listed_exit_code(j)]
        listed = self._listed_exit_codes(lacking, records) if lacking else {}
        statuses = {
            j["jobId"]: job_status(j, records[j["jobId"]], listed.get(j["jobId"]))
            for j in jobs
            if j["jobId"] in records
        }
        now = time.monotonic()
        for handle, record in records.items():
            if handle not in statuses and now - record.submitted > UNKNOWN_GRACE_SECONDS:
                statuses[handle] = Status(
                    Phase.DONE,
                    error=f"AWS Batch does not know job {handle} ({record.name}) any more",
                )
        return statuses

    def _listed_exit_codes(
        self, jobs: list[dict[str, Any]], records: dict[str, JobRecord]
    ) -> dict[str, int]:
        """Exit codes from ListJobs for failed jobs whose DescribeJobs entry has none (moto).

        One filtered ListJobs per queue: by the job's name, or by this process's name prefix.
        """
        wanted: dict[str, list[str]] = {}
        for job in jobs:
            record = records[job["jobId"]]
            wanted.setdefault(record.queue, []).append(record.name)
        codes: dict[str, int] = {}
        ids = {j["jobId"] for j in jobs}
        for queue, names in wanted.items():
            value = names[0] if len(names) == 1 else self.name_prefix + "*"
            pages = self.batch.get_paginator("list_jobs").paginate(
                jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [value]}]
            )
            try:
                for page in pages:
                    for summary in page.get("jobSummaryList", []):
                        code = (summary.get("container") or {}).get("exitCode")
                        if summary.get("jobId") in ids and code is not None:
                            codes[summary["jobId"]] = int(code)
            except botocore.exceptions.ClientError as exn:
                if not is_auth_error(exn):
                    raise  # throttling, 5xx: the poller backs off and asks again
                # without batch:ListJobs the jobs end without an exit code (an error, not a hang)
        return codes
