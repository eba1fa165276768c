"""omnibio_awsbatch: each task attempt is one AWS Batch job on a shared filesystem (EFS, FSx, NFS).

Frugal with API calls, so large scatters stay under Batch's rate limits: job definitions are
shared by content (image, volumes, user) and found again by name on later runs; everything that
changes per attempt travels in SubmitJob overrides; the shared tracker asks DescribeJobs about up
to 100 jobs per call. A normal task costs one SubmitJob plus its share of the polls.
"""

import contextlib
import itertools
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ...attempt import TAG_TASK, Mount, TaskAttempt
from ...gathering import settle
from ...settings import Settings
from ..base import RUNNING, Accepted, Engine, Phase, Status, Submitted
from ..jobscript import (
    ExitRecord,
    double_quoted,
    exit_record,
    read_exit_record,
    usage_details,
    with_record,
)
from . import limits as awsbatch_limits
from .arrays import ARRAY_MIN, Coalescer, Member, Pending, plan_array
from .cancel import Terminator
from .settings import AwsBatchSettings, filesystem_hint
from .status import (
    LOG_GROUP,
    MIN_TIMEOUT,
    NEVER_PLACED,
    error_text,
    is_auth_error,
    job_status,
    reasons,
)
from .translate import (
    LOG_TAIL_LINES,
    JobDefinition,
    JobRequest,
    clean_tag,
    fit_request,
    job_command,
    job_name,
)

DESCRIBE_MAX = 100  # API_DescribeJobs: "A list of up to 100 job IDs"
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


class AwsBatchEngine(Engine[JobRequest]):
    section = "omnibio_awsbatch"
    runtime_keys = ("omnibio_queue",)
    memory_is_limit = True  # MEMORY is the container's hard limit (API_ResourceRequirement)
    enforces_time_limit = True  # attemptDurationSeconds; fetch() says timed_out

    def __init__(
        self,
        session: boto3.session.Session,
        settings: AwsBatchSettings,
        learned: Mapping[str, int] | None = None,
        logger: logging.Logger | None = None,
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
        self._arrays = itertools.count(1)
        self._describe_at = 0.0  # time.monotonic() of the next fetch that asks Batch about all
        self.coalescer = (
            Coalescer(settings.array_linger, self._send) if settings.array_jobs else None
        )
        self.terminator = Terminator(
            self.batch, self._describe, logger or logging.getLogger("omnibio_awsbatch")
        )

    # --- start -----------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "AwsBatchEngine":
        settings = AwsBatchSettings.load(cfg)
        session = boto3.session.Session(region_name=settings.region or None)
        if not session.region_name:
            raise settings.fail(
                "region",
                "is not set and boto3 found no default region (AWS_REGION, AWS_DEFAULT_REGION, "
                "~/.aws/config)",
            )
        queues = {"job_queue": settings.job_queue, "fallback_queue": settings.fallback_queue}
        found = cls._check_queues(session, settings, {k: v for k, v in queues.items() if v})
        learned: dict[str, int] = {}
        if settings.max_cpu is None or settings.max_memory is None:
            learned = awsbatch_limits.learn(
                session.client("batch", config=RETRIES),
                session.client("ec2", config=RETRIES),
                found,
                logger,
            )
        engine = cls(session, settings, learned, logger)
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
        """One attempt, one SubmitJob: wait here for its slot (Ctrl-C ends the wait). With array
        jobs the coalescer paces its SubmitJob calls instead, far fewer than the attempts."""
        if self.coalescer:
            return contextlib.nullcontext()
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
        exited = exit_record(attempt.host_dir, attempt.attempt)
        host_file = os.path.join(attempt.host_dir, f"awsbatch_env.{attempt.attempt}.sh")
        stdout = fs.to_container(attempt.stdout_path)  # miniwdl makes it before submitting
        # User guide, "AWS Batch job environment variables": AWS_BATCH_CE_NAME, "the name of the
        # compute environment where your job is placed"
        missing = (
            f"{double_quoted(stdout)} is not visible on this host (compute environment "
            f"$AWS_BATCH_CE_NAME); check {double_quoted(self.filesystem_hint)}"
        )

        def command(env_file: str | None) -> tuple[str, ...]:
            return job_command(
                attempt.argv,
                attempt.workdir,
                fs.to_container(attempt.stderr_path),
                fs.to_container(exited),
                stdout,
                missing,
                env_file,
            )

        request = JobRequest(
            call=attempt.call,
            image=attempt.image,
            host_dir=attempt.host_dir,
            queue=queue,
            queue_from_runtime=from_runtime,
            definition=self.job_definition(attempt),
            name=job_name(self.name_prefix, attempt.call, attempt.attempt),
            command=command(None),
            environment=env,
            resources=tuple(requirements),
            timeout=max(MIN_TIMEOUT, resources.time_limit) if resources.time_limit else None,
            tags={
                clean_tag(k, 128): clean_tag(v, 256)
                for k, v in {**self.settings.tags, **attempt.tags}.items()
            },
            exit_record=exited,
        )
        return fit_request(request, host_file, command(fs.to_container(host_file)))

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

    def submit(self, request: JobRequest, logger: logging.Logger) -> Accepted:
        if self.coalescer:
            return Accepted(self.coalescer.submit(request, logger))
        return Accepted(self._submit_job(request, logger))

    def _send(self, group: list[Pending]) -> None:
        """The coalescer's call: one SubmitJob for the group; each member gets its handle, or
        all get the refusal."""
        settle(group, lambda: self._submit_group([pending.item for pending in group]))

    def _submit_group(self, members: list[Member]) -> list[str]:
        """One array job, or a plain job for a lone attempt; paced by submit_rate."""
        time.sleep(self.rate.delay())
        if len(members) < ARRAY_MIN:
            return [self._submit_job(members[0].request, members[0].logger)]
        return self._submit_array(members)

    def _submit_job(self, request: JobRequest, logger: logging.Logger) -> str:
        definition = self._prepare(request, logger)
        self._write(request.files, logger)
        self._clear_exit_records([request])
        job_id = self._submit(request.arguments(definition), request.queue, request.name)
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

    def _submit_array(self, group: list[Member]) -> list[str]:
        first = group[0].request
        task = first.tags.get(TAG_TASK, "task")
        name = job_name(self.name_prefix, f"{task}-array{next(self._arrays)}", len(group))
        plan = plan_array([m.request for m in group], name, self.settings.filesystem.to_container)
        definition = self._prepare(first, group[0].logger)
        os.makedirs(plan.directory, exist_ok=True)
        self._write(plan.files, None)
        self._clear_exit_records(plan.members)
        parent = self._submit(plan.arguments(definition), first.queue, name)
        handles = [f"{parent}:{index}" for index in range(len(group))]
        self.terminator.track(parent, handles)
        for index, member in enumerate(group):
            member.logger.log(
                NOTICE_LEVEL,
                _(
                    "AWS Batch array job child",
                    id=handles[index],
                    array=name,
                    size=len(group),
                    queue=first.queue,
                    script=os.path.join(plan.directory, f"{index}.sh"),
                ),
            )
        return handles

    def _prepare(self, request: JobRequest, logger: logging.Logger) -> str:
        """What must exist before the request is sent: its queue checked, its job definition's
        ARN."""
        if request.queue_from_runtime:
            self._check_runtime_queue(request.queue)
        return self._definition_arn(request, logger)

    @staticmethod
    def _write(files: Mapping[str, str], logger: logging.Logger | None) -> None:
        for path, text in files.items():
            with open(path, "w", encoding="utf-8") as outfile:
                outfile.write(text)
            if logger:
                logger.info(
                    _("environment values passed in a file (SubmitJob request limit)", file=path)
                )

    @staticmethod
    def _clear_exit_records(requests: Sequence[JobRequest]) -> None:
        """An exit record left by an earlier launcher in this directory must not end the job."""
        for request in requests:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(request.exit_record)

    def _submit(self, arguments: dict[str, Any], queue: str, name: str) -> str:
        try:
            return str(self.batch.submit_job(**arguments)["jobId"])
        except botocore.exceptions.ClientError as exn:
            raise Error.RuntimeError(
                f"AWS Batch refused job {name} on queue {queue}: {error_text(exn)}"
            ) from None

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

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """Each job's exit record (jobscript) on the shared filesystem says when it starts and
        ends: an exit status 0 ends the attempt without a call; any other is asked of Batch (OOM,
        the reason, the log stream), and the record adds its cgroup's oom_kill and the measured
        usage to Batch's verdict. Every describe_seconds Batch is asked about the jobs whose
        records say nothing yet (a lost host, a container that never started, a job stuck
        RUNNABLE): plain jobs 100 a call; arrays 100 a call, and an array's children only when
        Batch counts more of them finished than wrote their exit status. Why an array waits is
        read where Batch puts it (_blocked): the parent, and the RUNNABLE children ListJobs
        gives. A job not asked about keeps its status."""
        by_id = {r.handle: r for r in records}
        now = time.monotonic()
        sweep = now >= self._describe_at
        if sweep:
            self._describe_at = now + self.settings.describe_seconds
        arrays: dict[str, list[Submitted]] = {}
        for record in records:
            if ":" in record.handle:
                arrays.setdefault(record.handle.split(":")[0], []).append(record)
        # Batch's counts before the records: a child it counts as finished wrote its record before
        parents = {j["jobId"]: j for j in self._describe(list(arrays))} if sweep else {}
        written = {
            r.handle: read_exit_record(exit_record(r.attempt.host_dir, r.attempt.attempt))
            for r in records
        }
        statuses: dict[str, Status] = {}
        ask: list[str] = []
        for handle, (started, ended) in written.items():
            if ended and ended.exit_code == 0:
                statuses[handle] = succeeded(ended)
            elif ended is not None:
                ask.append(handle)
            elif started and by_id[handle].status.phase is Phase.QUEUED:
                statuses[handle] = RUNNING
        waiting: dict[str, list[str]] = {}  # array parent -> children not started
        if sweep:
            silent = {h for h, (_started, ended) in written.items() if ended is None}
            ask += [h for h in silent if ":" not in h]
            for parent, children in arrays.items():
                quiet = [c.handle for c in children if c.handle in silent]
                array = (parents.get(parent) or {}).get("arrayProperties")
                if quiet and self._unexplained(array, len(quiet)):
                    ask += quiet
                unstarted = [h for h in quiet if not written[h][0]]
                if unstarted and parent in parents:
                    waiting[parent] = unstarted
        answers = {
            h: with_record(status, written[h][1])
            for h, status in self._statuses(ask, by_id).items()
        }
        for parent, unstarted in waiting.items():
            answers.update(self._blocked(parents[parent], unstarted, by_id))
        # a job asked about and not listed is left to the tracker's grace period
        unchanged = {h: r.status for h, r in by_id.items() if h not in ask}
        return {**unchanged, **statuses, **answers}

    def _blocked(
        self, parent: Mapping[str, Any], children: list[str], by_id: Mapping[str, Submitted]
    ) -> dict[str, Status]:
        """The waiting children of an array, from the reason Batch gives the array. "Jobs stuck in
        a RUNNABLE status": the job "at the head and blocking the queue" carries it, which may
        be the parent or any one child; every child asks the same of the queue, so one's reason
        is all's. ListJobs (RUNNABLE children, 1000 a page) only while Batch counts some."""
        reason = reasons(parent)
        summary = (parent.get("arrayProperties") or {}).get("statusSummary")
        listed: list[Mapping[str, Any]] = []
        if not NEVER_PLACED.search(reason) and (summary is None or summary.get("RUNNABLE")):
            listed = self._runnable_children(str(parent["jobId"]))
            reason = next(
                (r for r in map(reasons, listed) if NEVER_PLACED.search(r)), reasons(parent)
            )
        statuses: dict[str, Status] = {}
        queue = {"jobQueue": parent.get("jobQueue", "")}
        for job in listed:
            if job["jobId"] in children:
                statuses[job["jobId"]] = self._status({**job, **queue}, by_id)
        if NEVER_PLACED.search(reason):
            for handle in children:
                job = {"jobId": handle, "status": "RUNNABLE", "statusReason": reason, **queue}
                statuses[handle] = self._status(job, by_id)
        return statuses

    def _runnable_children(self, parent: str) -> list[Mapping[str, Any]]:
        """ListJobs of an array's RUNNABLE children, every page (10,000 children: 10 pages)."""
        found: list[Mapping[str, Any]] = []
        arguments = {"arrayJobId": parent, "jobStatus": "RUNNABLE"}
        while True:
            page = self.batch.list_jobs(**arguments)
            found += page.get("jobSummaryList", [])
            if not page.get("nextToken"):
                return found
            arguments["nextToken"] = page["nextToken"]

    @staticmethod
    def _unexplained(array: Mapping[str, Any] | None, waiting: int) -> bool:
        """Batch counts more children of the array finished than the launcher knows of (those
        no longer outstanding, and those that wrote their exit status)."""
        if not array or "size" not in array:
            return True
        summary = array.get("statusSummary") or {}
        finished = int(summary.get("SUCCEEDED", 0)) + int(summary.get("FAILED", 0))
        return finished > int(array["size"]) - waiting

    def _statuses(self, ids: list[str], by_id: Mapping[str, Submitted]) -> dict[str, Status]:
        return {
            j["jobId"]: self._status(j, by_id) for j in self._describe(ids) if j["jobId"] in by_id
        }

    def _status(self, job: Mapping[str, Any], by_id: Mapping[str, Submitted]) -> Status:
        return job_status(job, by_id[job["jobId"]].attempt.image, self.filesystem_hint)

    def _describe(self, ids: list[str]) -> list[dict[str, Any]]:
        """DescribeJobs for any number of ids ("A list of up to 100 job IDs" per call)."""
        jobs: list[dict[str, Any]] = []
        for start in range(0, len(ids), DESCRIBE_MAX):
            jobs += self.batch.describe_jobs(jobs=ids[start : start + DESCRIBE_MAX])["jobs"]
        return jobs

    def cancel(self, record: Submitted, logger: logging.Logger) -> None:
        """Gathered: a whole array goes in one TerminateJob of its parent (awsbatch_cancel)."""
        handle = record.handle
        self.terminator.cancel(handle, logger)

    def release(self, record: Submitted, logger: logging.Logger) -> None:
        handle = record.handle
        self.terminator.release(handle)

    def shutdown(self, logger: logging.Logger) -> None:
        """Send the cancellations still gathering."""
        self.terminator.flush()

    def failure_details(self, record: Submitted, status: Status) -> dict[str, Any]:
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


def succeeded(record: ExitRecord) -> Status:
    """A job whose exit record says exit status 0: done, Batch not asked."""
    return Status(Phase.DONE, exit_code=0, reason="exit status 0", details=usage_details(record))
