"""omnibio_awsbatch: each task attempt is one AWS Batch job on a shared filesystem (EFS, FSx, NFS).

Frugal with API calls, so large scatters stay under Batch's rate limits: job definitions are
shared by content (image, volumes, user) and found again by name on later runs; everything that
changes per attempt travels in SubmitJob overrides; the shared tracker asks DescribeJobs about up
to 100 jobs per call. A normal task costs one SubmitJob plus its share of the polls.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

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
from . import awsbatch_limits
from .awsbatch_jobs import LOG_GROUP, MIN_TIMEOUT, error_text, is_auth_error, job_status
from .base import Engine, Status, Submitted

LOG_TAIL_LINES = 30
JOB_NAME_MAX = 128
MAX_TAGS = 50
# Batch service quotas: "Maximum job payload size (for SubmitJob API operations): 30 KiB". The
# whole serialized request counts; the job definition's ARN replaces its name at submission.
REQUEST_LIMIT = 30 * 1024
REQUEST_BUDGET = REQUEST_LIMIT - 1024
# when max_cpu / max_memory are not set and the compute environments tell nothing (unmanaged)
FALLBACK_LIMITS = {"cpu": 64, "mem_bytes": 256 << 30}
RETRIES = botocore.config.Config(
    retries={"mode": "adaptive", "max_attempts": 10}, max_pool_connections=50
)
CONNECT_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)
# The job's command. Batch has no per-job working directory, so the wrapper enters it; it sources
# environment values that did not fit the SubmitJob request; and when the task fails it copies the
# tail of the task's stderr (which goes to the shared filesystem) into the job's CloudWatch log.
# Arguments: workdir, stderr file, env file or "-", then the task's argv.
WRAPPER = (
    'cd "$1" || { echo "omnibio: cannot enter $1; is the shared filesystem mounted on this '
    'Batch host?" >&2; exit 97; }; '
    'if [ "$3" != - ]; then . "$3"; fi; '
    "stderr=$2; shift 3; "
    '"$@"; rc=$?; '
    f'if [ "$rc" -ne 0 ]; then tail -n {LOG_TAIL_LINES} "$stderr" >&2; fi; '
    'exit "$rc"'
)


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
    submit_rate: float
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
            submit_rate=settings.number("submit_rate", minimum=0.01),
            filesystem=filesystem,
            volume=volume,
        )


@dataclass(frozen=True)
class JobDefinition:
    """A job definition named by a hash of its content, shared by every attempt that needs it."""

    name: str
    properties: str  # containerProperties, canonical JSON

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> "JobDefinition":
        text = json.dumps(properties, sort_keys=True)
        return cls("omnibio-" + hashlib.sha256(text.encode()).hexdigest()[:32], text)


@dataclass(frozen=True)
class JobRequest:
    """One SubmitJob, plus what must exist before it is sent."""

    call: str
    image: str
    queue: str
    queue_from_runtime: bool  # runtime.omnibio_queue: checked once at submission
    definition: JobDefinition
    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    resources: tuple[tuple[str, str], ...]  # (VCPU|MEMORY|GPU, value)
    timeout: int | None  # attemptDurationSeconds
    tags: Mapping[str, str]
    files: Mapping[str, str] = field(default_factory=dict)  # host path -> text, before submitting

    def arguments(self, definition: str) -> dict[str, Any]:
        """SubmitJob's keywords, with ``definition`` (the job definition's ARN or name)."""
        arguments: dict[str, Any] = dict(
            jobName=self.name,
            jobQueue=self.queue,
            jobDefinition=definition,
            containerOverrides={
                "command": list(self.command),
                "environment": [{"name": k, "value": v} for k, v in self.environment.items()],
                "resourceRequirements": [{"type": t, "value": v} for t, v in self.resources],
            },
            retryStrategy={"attempts": 1},  # miniwdl retries (maxRetries, preemptible)
            propagateTags=True,
            tags=dict(self.tags),
        )
        if self.timeout:
            arguments["timeout"] = {"attemptDurationSeconds": self.timeout}
        return arguments

    def size(self) -> int:
        """Bytes of the serialized request, as botocore sends it (JSON, ASCII-escaped)."""
        return len(json.dumps(self.arguments(self.definition.name)))


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


def filesystem_hint(settings: AwsBatchSettings) -> str:
    """What to check when a job cannot set up the shared filesystem: the volume and its keys."""
    where = f"the shared filesystem {settings.volume.describe()}"
    if settings.volume.host_path:
        return f"{where} (every Batch host must mount it; [omnibio_awsbatch] host_path, mount_path)"
    return (
        f"{where} (its mount targets and NFS, TCP 2049, from the compute environment's security "
        "group; [omnibio_awsbatch] efs_id, efs_access_point, mount_path)"
    )


def job_name(prefix: str, call: str, attempt: int) -> str:
    """<prefix><call path>-<attempt>, within Batch's 128 letters, digits, hyphens, underscores."""
    body = re.sub(r"[^A-Za-z0-9_-]+", "-", call).strip("-") or "task"
    suffix = f"-{attempt}"
    room = JOB_NAME_MAX - len(prefix) - len(suffix)
    if len(body) > room:  # keep the distinctive end (call-align-3) and a hash of the whole path
        digest = hashlib.sha256(call.encode()).hexdigest()[:8]
        body = digest + "-" + body[-(room - len(digest) - 1) :]
    return prefix + body + suffix


def _clean_tag(text: str, limit: int) -> str:
    return re.sub(r"[^\w .:/=+\-@]", "_", str(text))[:limit]


def fit_request(request: JobRequest, host_file: str, container_file: str) -> JobRequest:
    """The request within REQUEST_BUDGET: the largest environment values move to an env file on
    the shared filesystem (``host_file``, which the job sources as ``container_file``)."""
    if request.size() <= REQUEST_BUDGET:
        return request
    kept = dict(request.environment)
    moved: dict[str, str] = {}
    command = request.command[:6] + (container_file,) + request.command[7:]
    while kept and replace(request, command=command, environment=kept).size() > REQUEST_BUDGET:
        name = max(kept, key=lambda k: len(json.dumps(kept[k])))
        moved[name] = kept.pop(name)
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in moved.items())
    return replace(request, command=command, environment=kept, files={host_file: text})


class AwsBatchEngine(Engine[JobRequest]):
    section = "omnibio_awsbatch"
    runtime_keys = ("omnibio_queue",)
    memory_is_limit = True  # MEMORY is the container's hard limit (API_ResourceRequirement)
    enforces_time_limit = True  # attemptDurationSeconds; fetch() says timed_out
    fetch_batch = 100  # DescribeJobs takes "A list of up to 100 job IDs"

    def __init__(
        self,
        session: boto3.session.Session,
        settings: AwsBatchSettings,
        learned: Mapping[str, int] | None = None,
    ) -> None:
        """``learned``: the limits the queues' compute environments allow (awsbatch_limits)."""
        self.settings = settings
        self.filesystem = settings.filesystem
        self.region = session.region_name
        self.batch = session.client("batch", config=RETRIES)
        self.logs = session.client("logs", config=RETRIES)
        limits = {**FALLBACK_LIMITS, **(learned or {})}
        self.limits = {
            "cpu": settings.max_cpu or limits["cpu"],
            "mem_bytes": settings.max_memory or limits["mem_bytes"],
        }
        self.filesystem_hint = filesystem_hint(settings)
        self.default_time_limit = settings.default_time_limit
        self.poll_seconds = settings.poll_seconds
        self.rate = SubmitRate(settings.submit_rate)
        # one per process: this process's jobs are told apart by name in the Batch console
        self.name_prefix = f"omnibio-{uuid.uuid4().hex[:8]}-"
        self._known_queues = {q for q in (settings.job_queue, settings.fallback_queue) if q}
        self._definitions: dict[str, str] = {}
        self._definitions_lock = threading.Lock()

    # --- start -----------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "AwsBatchEngine":
        config = Settings(cfg, cls.section)
        settings = AwsBatchSettings.load(config)
        session = boto3.session.Session(region_name=settings.region or None)
        if not session.region_name:
            raise config.fail(
                "region",
                "is not set and boto3 found no default region (AWS_REGION, AWS_DEFAULT_REGION, "
                "~/.aws/config)",
            )
        queues = {"job_queue": settings.job_queue, "fallback_queue": settings.fallback_queue}
        found = cls._check_queues(session, config, {k: v for k, v in queues.items() if v})
        learned: dict[str, int] = {}
        if settings.max_cpu is None or settings.max_memory is None:
            learned = awsbatch_limits.learn(
                session.client("batch", config=RETRIES),
                session.client("ec2", config=RETRIES),
                found,
                logger,
            )
        engine = cls(session, settings, learned)
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_awsbatch",
                region=engine.region,
                endpoint=engine.batch.meta.endpoint_url,
                job_queue=settings.job_queue,
                fallback_queue=settings.fallback_queue or None,
                volume=settings.volume.describe(),
                mount_path=settings.filesystem.container_root,
                readonly_mount_path=settings.filesystem.readonly_root,
                max_cpu=engine.limits["cpu"],
                max_memory=engine.limits["mem_bytes"],
                limits_from="config" if not learned else "compute environments",
            ),
        )
        return engine

    @classmethod
    def _check_queues(
        cls, session: boto3.session.Session, settings: Settings, queues: dict[str, str]
    ) -> list[dict[str, Any]]:
        """One DescribeJobQueues call proves the endpoint, the credentials and the queues;
        returns the queues as Batch describes them."""
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
                "omnibio_awsbatch found no AWS credentials in boto3's chain (environment, "
                "~/.aws, container or instance role)"
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
                f"omnibio_awsbatch cannot reach AWS Batch at {endpoint} ({where}): "
                + error_text(exn)
            ) from None
        except botocore.exceptions.ClientError as exn:
            if is_auth_error(exn):
                method = getattr(session.get_credentials(), "method", "unknown source")
                raise Error.RuntimeError(
                    f"AWS Batch at {endpoint} rejected the credentials boto3 found ({method}): "
                    + error_text(exn)
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
                    f"AWS Batch has no job queue {name!r} in region {session.region_name} "
                    f"({endpoint})",
                )
            if queue.get("state") != "ENABLED" or queue.get("status") == "INVALID":
                raise settings.fail(
                    key,
                    f"job queue {name!r} is {queue.get('state')}/{queue.get('status')}: "
                    + queue.get("statusReason", ""),
                )
        return [by_name[name] for name in queues.values()]

    def resource_limits(self) -> dict[str, int]:
        return self.limits

    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> AbstractContextManager[None]:
        return self._paced(terminating)

    @contextlib.contextmanager
    def _paced(self, terminating: Callable[[], bool]) -> Iterator[None]:
        """Wait for a SubmitJob slot (submit_rate), giving up early when the run is terminating."""
        deadline = time.monotonic() + self.rate.delay()
        while not terminating() and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        yield

    # --- translation -----------------------------------------------------------------------

    def translate(self, attempt: TaskAttempt) -> JobRequest:
        fs = self.settings.filesystem
        resources = attempt.resources
        memory = resources.memory_limit or self.settings.default_memory
        requirements = [("VCPU", str(max(1, resources.cpu)))]
        requirements.append(("MEMORY", str(max(4, math.ceil(memory / (1 << 20))))))  # MiB
        if resources.gpu:
            requirements.append(("GPU", str(resources.gpu)))
        queue, from_runtime = self.queue_for(attempt)
        env = {k: str(v) for k, v in sorted(attempt.env.items()) if not k.startswith("AWS_BATCH")}
        stderr = fs.to_container(attempt.stderr_path)
        request = JobRequest(
            call=attempt.call,
            image=attempt.image,
            queue=queue,
            queue_from_runtime=from_runtime,
            definition=self.job_definition(attempt),
            name=job_name(self.name_prefix, attempt.call, attempt.attempt),
            command=("/bin/sh", "-c", WRAPPER, "omnibio", attempt.workdir, stderr, "-")
            + attempt.argv,
            environment=env,
            resources=tuple(requirements),
            timeout=max(MIN_TIMEOUT, resources.time_limit) if resources.time_limit else None,
            tags={
                _clean_tag(k, 128): _clean_tag(v, 256)
                for k, v in {**self.settings.tags, **attempt.tags}.items()
            },
        )
        host_file = os.path.join(attempt.host_dir, f"awsbatch_env.{attempt.attempt}.sh")
        return fit_request(request, host_file, fs.to_container(host_file))

    def queue_for(self, attempt: TaskAttempt) -> tuple[str, bool]:
        """runtime.omnibio_queue, else job_queue while miniwdl may still retry an interruption
        (fewer interruptions so far than runtime.preemptible), else fallback_queue."""
        chosen = attempt.runtime.get("omnibio_queue")
        if chosen:
            return str(chosen), True
        settings = self.settings
        if not settings.fallback_queue:
            return settings.job_queue, False
        if attempt.interruptions < attempt.resources.max_interruptions:
            return settings.job_queue, False
        return settings.fallback_queue, False

    def job_definition(self, attempt: TaskAttempt) -> JobDefinition:
        """The job definition for the attempt's image, volumes and user (no per-attempt values)."""
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
        if self.settings.job_role_arn:
            properties["jobRoleArn"] = self.settings.job_role_arn
        return JobDefinition.of(properties)

    def volumes(
        self, mounts: tuple[Mount, ...]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Batch volumes and mount points for the attempt's views of the shared filesystem."""
        fs = self.settings.filesystem
        volumes: list[dict[str, Any]] = []
        points: list[dict[str, Any]] = []
        names: dict[str, str] = {}
        for mount in mounts:
            relative = os.path.relpath(mount.host_path, fs.host_root)
            if relative.startswith(".."):
                raise Error.RuntimeError(
                    f"omnibio_awsbatch: {mount.host_path} is not on the shared filesystem "
                    + fs.host_root
                )
            if relative not in names:
                names[relative] = f"omnibio-fs{len(names) or ''}"
                volumes.append({"name": names[relative], **self.settings.volume.source(relative)})
            points.append(
                {
                    "sourceVolume": names[relative],
                    "containerPath": mount.container_path,
                    "readOnly": mount.read_only,
                }
            )
        return volumes, points

    # --- submission ------------------------------------------------------------------------

    def submit(self, request: JobRequest, logger: logging.Logger) -> str:
        if request.queue_from_runtime:
            self._check_runtime_queue(request.queue)
        definition = self._definition_arn(request, logger)
        for path, text in request.files.items():
            with open(path, "w", encoding="utf-8") as outfile:
                outfile.write(text)
            logger.info(
                _("environment values passed in a file (SubmitJob request limit)", file=path)
            )
        try:
            job_id = str(self.batch.submit_job(**request.arguments(definition))["jobId"])
        except botocore.exceptions.ClientError as exn:
            raise Error.RuntimeError(
                f"AWS Batch refused job {request.name} on queue {request.queue}: " + error_text(exn)
            ) from None
        logger.log(
            NOTICE_LEVEL,
            _(
                "AWS Batch job",
                id=job_id,
                name=request.name,
                queue=request.queue,
                definition=request.definition.name,
            ),
        )
        return job_id

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
                f"runtime.omnibio_queue {queue!r}: AWS Batch has no such job queue in "
                + str(self.region)
            )
        self._known_queues.add(queue)

    def _definition_arn(self, request: JobRequest, logger: logging.Logger) -> str:
        """The ARN of the request's job definition: looked up by name once per process,
        registered only when missing, never deregistered (later runs reuse it)."""
        definition = request.definition
        with self._definitions_lock:
            if definition.name in self._definitions:
                return self._definitions[definition.name]
            try:
                found = self.batch.describe_job_definitions(
                    jobDefinitionName=definition.name, status="ACTIVE"
                )["jobDefinitions"]
                if found:
                    arn = max(found, key=lambda d: int(d["revision"]))["jobDefinitionArn"]
                else:
                    arn = self.batch.register_job_definition(
                        jobDefinitionName=definition.name,
                        type="container",
                        containerProperties=json.loads(definition.properties),
                    )["jobDefinitionArn"]
                    logger.log(
                        NOTICE_LEVEL,
                        _(
                            "AWS Batch job definition registered",
                            name=definition.name,
                            image=request.image,
                        ),
                    )
            except botocore.exceptions.ClientError as exn:
                raise Error.RuntimeError(
                    f"AWS Batch job definition {definition.name} for image {request.image}: "
                    + error_text(exn)
                ) from None
            self._definitions[definition.name] = str(arn)
            return self._definitions[definition.name]

    # --- status ----------------------------------------------------------------------------

    def fetch(self, records: Sequence[Submitted]) -> dict[str, Status]:
        by_id = {r.handle: r for r in records}
        jobs = self.batch.describe_jobs(jobs=list(by_id))["jobs"]
        return {
            j["jobId"]: job_status(j, by_id[j["jobId"]].attempt.image, self.filesystem_hint)
            for j in jobs
            if j["jobId"] in by_id
        }

    def cancel(self, handle: str, logger: logging.Logger) -> None:
        try:
            self.batch.terminate_job(jobId=handle, reason="cancelled by miniwdl (omnibio_awsbatch)")
            logger.info(_("AWS Batch job terminated", id=handle))
        except Exception as exn:
            logger.warning(_("AWS Batch TerminateJob failed", id=handle, error=error_text(exn)))

    def failure_details(self, handle: str, attempt: TaskAttempt, status: Status) -> dict[str, Any]:
        """The tail of the job's CloudWatch log (the wrapper copies the task's stderr tail)."""
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
