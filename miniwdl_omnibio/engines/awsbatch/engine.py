"""omnibio_awsbatch: each task attempt is one AWS Batch job on a shared filesystem (EFS, FSx, NFS).

Frugal with API calls, so large scatters stay under Batch's rate limits: job definitions are
shared by content, attempts ready together share one SubmitJob (an array job), and a job's exit
record spares the polls of a job that succeeds.
"""

import contextlib
import functools
import itertools
import json
import logging
import os
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ...attempt import TAG_TASK, TaskAttempt
from ...retrying import retry
from ..base import RUNNING, Accepted, Engine, Status, Submission, Submitted, sent_by_group
from ..jobscript import clear, read_exit_record, succeeded, with_record
from . import arrays
from . import limits as awsbatch_limits
from .settings import AwsBatchSettings, filesystem_hint
from .status import blocked, error_text, is_auth_error, job_status, unexplained
from .translate import LOG_TAIL_LINES, JobRequest, job_name, job_request

DESCRIBE_MAX = 100  # API_DescribeJobs: "A list of up to 100 job IDs"
# when max_cpu / max_memory are not set and the compute environments tell nothing (unmanaged)
FALLBACK_LIMITS = {"cpu": 64, "mem_bytes": 256 << 30}
RETRIES = botocore.config.Config(
    retries={"mode": "adaptive", "max_attempts": 10}, max_pool_connections=50
)
REASON = "cancelled by miniwdl (omnibio_awsbatch)"
CHILD_RETRY = 2.0  # seconds between two DescribeJobs for a child Batch does not list yet
CHILD_TRIES = 15  # DescribeJobs for a child not listed, at most (30 s)
ENDED = ("SUCCEEDED", "FAILED")
CONNECT_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)


class SubmitRate:
    """At most ``rate`` SubmitJob calls per second across all task threads, after a burst of one
    second's worth: a token bucket, kept as the time its next token is due (GCRA)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate
        self.burst = max(1.0, rate) * self.interval  # seconds of tokens the bucket holds
        self.due = 0.0
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Take a token; return how long to wait before using it."""
        with self._lock:
            now = time.monotonic()
            self.due = max(self.due, now) + self.interval
            return max(0.0, self.due - now - self.burst)


class AwsBatchEngine(Engine[JobRequest]):
    section = "omnibio_awsbatch"
    settings: AwsBatchSettings
    runtime_keys = ("omnibio_queue",)
    enforces_time_limit = True  # attemptDurationSeconds; fetch() says timed_out
    cancel_gather_seconds = 1.5  # outlasts container.ROUND_SECONDS

    def __init__(
        self,
        session: boto3.session.Session,
        settings: AwsBatchSettings,
        learned: Mapping[str, int] | None = None,
    ) -> None:
        """``learned``: the limits the queues' compute environments allow (awsbatch_limits)."""
        self.settings = settings
        self.batch = session.client("batch", config=RETRIES)
        self.logs = session.client("logs", config=RETRIES)
        limits = {**FALLBACK_LIMITS, **(learned or {})}
        self.limits = {
            "cpu": settings.max_cpu or limits["cpu"],
            "mem_bytes": settings.max_memory or limits["mem_bytes"],
        }
        self.filesystem_hint = filesystem_hint(settings)
        self.sweep_seconds = settings.describe_seconds
        self.gather_seconds = settings.array_linger if settings.array_jobs else 0.0
        self.gather_max_seconds = arrays.LINGER_ROUNDS * self.gather_seconds
        self.rate = SubmitRate(settings.submit_rate)
        # one per process: this process's jobs are told apart by name in the Batch console
        self.name_prefix = f"omnibio-{uuid.uuid4().hex[:8]}-"
        self._known_queues = {q for q in (settings.job_queue, settings.fallback_queue) if q}
        self._definitions: dict[str, str] = {}
        # a lock per definition name: looked up (and registered) once, no other image waiting
        self._definition_locks: dict[str, threading.Lock] = {}
        self._arrays = itertools.count(1)

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
        found = check_queues(session, settings, {k: v for k, v in queues.items() if v})
        learned: dict[str, int] = {}
        if settings.max_cpu is None or settings.max_memory is None:
            batch, ec2 = (session.client(name, config=RETRIES) for name in ("batch", "ec2"))
            learned = awsbatch_limits.learn(batch, ec2, found, logger)
        engine = cls(session, settings, learned)
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_awsbatch",
                region=session.region_name,
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

    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> contextlib.AbstractContextManager[None]:
        """One attempt, one SubmitJob: wait here for its slot (Ctrl-C ends the wait). With array
        jobs submit_many paces its SubmitJob calls instead, far fewer than the attempts."""
        if not self.settings.array_jobs:
            deadline = time.monotonic() + self.rate.delay()
            while not terminating() and time.monotonic() < deadline:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return contextlib.nullcontext()

    def translate(self, attempt: TaskAttempt) -> JobRequest:
        return job_request(attempt, self.settings, self.name_prefix)

    # --- submission ------------------------------------------------------------------------

    def submit_many(
        self, submissions: Sequence[Submission[JobRequest]]
    ) -> list[Accepted | Exception]:
        """One SubmitJob per array the burst makes (arrays.array_groups), or per attempt without
        array jobs; the attempts of one SubmitJob share its refusal."""
        most = arrays.ARRAY_MAX if self.settings.array_jobs else 1
        groups = arrays.array_groups([each.request for each in submissions], most)
        results = sent_by_group(groups, lambda g: self._submit_group([submissions[p] for p in g]))
        return [results[position] for position in range(len(submissions))]

    def _submit_group(self, group: list[Submission[JobRequest]]) -> list[Accepted]:
        """An array job, or a plain job for a lone attempt, with no exit record left of an earlier
        submission; paced here with array jobs (without, reserve() paced each attempt)."""
        if self.settings.array_jobs:
            time.sleep(self.rate.delay())
        first, logger = group[0].request, group[0].logger
        clear(*(each.request.exit_record for each in group))
        if len(group) < arrays.ARRAY_MIN:
            job_id = self._submit(first, logger)
            for path in first.files:
                logger.info(
                    _("environment values passed in a file (SubmitJob request limit)", file=path)
                )
            logger.log(
                NOTICE_LEVEL,
                _(
                    "AWS Batch job",
                    id=job_id,
                    name=first.name,
                    queue=first.queue,
                    definition=first.definition.name,
                ),
            )
            return [Accepted(job_id)]
        task = first.tags.get(TAG_TASK, "task")
        name = job_name(self.name_prefix, f"{task}-array{next(self._arrays)}", len(group))
        members = [each.request for each in group]
        array, directory = arrays.plan_array(members, name, self.settings.filesystem.to_container)
        os.makedirs(directory, exist_ok=True)
        parent = self._submit(array, logger)
        handles = [f"{parent}:{index}" for index in range(len(group))]
        for index, each in enumerate(group):
            each.logger.log(
                NOTICE_LEVEL,
                _(
                    "AWS Batch array job child",
                    id=handles[index],
                    array=name,
                    size=len(group),
                    queue=first.queue,
                    script=os.path.join(directory, f"{index}.sh"),
                ),
            )
        return [Accepted(handle, group=parent) for handle in handles]

    def _submit(self, job: JobRequest, logger: logging.Logger) -> str:
        """One SubmitJob (a plain job or an array job): the queue checked, the job definition
        found, the job's files written."""
        self._check_queue(job.queue)
        definition = self._definition_arn(job, logger)
        for path, text in job.files.items():
            pathlib.Path(path).write_text(text, encoding="utf-8")
        try:
            return str(self.batch.submit_job(**job.arguments(definition))["jobId"])
        except botocore.exceptions.ClientError as exn:
            raise Error.RuntimeError(
                f"AWS Batch refused job {job.name} on queue {job.queue}: {error_text(exn)}"
            ) from None

    def _check_queue(self, queue: str) -> None:
        """A queue start did not check (runtime.omnibio_queue): once per process."""
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
                + str(self.batch.meta.region_name)
            )
        self._known_queues.add(queue)

    def _definition_arn(self, request: JobRequest, logger: logging.Logger) -> str:
        """The ARN of the request's job definition: looked up by name once per process,
        registered only when missing, never deregistered (later runs reuse it)."""
        name = request.definition.name
        with self._definition_locks.setdefault(name, threading.Lock()):
            if name in self._definitions:
                return self._definitions[name]
            try:
                found = self.batch.describe_job_definitions(
                    jobDefinitionName=name, status="ACTIVE"
                )["jobDefinitions"]
                if found:
                    arn = max(found, key=lambda d: int(d["revision"]))["jobDefinitionArn"]
                else:
                    arn = self.batch.register_job_definition(
                        jobDefinitionName=name,
                        type="container",
                        containerProperties=json.loads(request.definition.properties),
                    )["jobDefinitionArn"]
                    logger.log(
                        NOTICE_LEVEL,
                        _("AWS Batch job definition registered", name=name, image=request.image),
                    )
            except botocore.exceptions.ClientError as exn:
                raise Error.RuntimeError(
                    f"AWS Batch job definition {name} for image {request.image}: {error_text(exn)}"
                ) from None
            self._definitions[name] = str(arn)
            return self._definitions[name]

    # --- status ----------------------------------------------------------------------------

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """Each job's exit record (jobscript) says when it starts and ends: an exit status 0 ends
        the attempt without a call; any other is asked of Batch, whose verdict the record adds to
        (with_record). ``full`` (every describe_seconds), Batch is asked about the plain jobs
        whose records say nothing yet (a lost host, a container that never started, a job stuck
        RUNNABLE) and about each array: its silent children only when Batch counts more of them
        finished than wrote their exit status; why they wait where Batch puts it (status.blocked).
        A job not asked about keeps its status."""
        by_id = {r.handle: r for r in records}
        children: dict[str, list[str]] = {}  # array parent -> its children's handles
        for record in records:
            if record.group is not None:
                children.setdefault(record.group, []).append(record.handle)
        # Batch's counts before the records: a child it counts as finished wrote its record before
        parents = {j["jobId"]: j for j in self._describe(list(children))} if full else {}
        written = {r.handle: read_exit_record(r.request.exit_record) for r in records}
        statuses: dict[str, Status] = {}
        ask: list[str] = []
        for handle, (started, ended) in written.items():
            if ended and ended.exit_code == 0:
                statuses[handle] = succeeded(ended)
            elif ended is not None or (full and by_id[handle].group is None):
                ask.append(handle)
            if started and ended is None:
                statuses[handle] = RUNNING
        held: list[Mapping[str, Any]] = []  # array children not started, as Batch says they wait
        for parent, handles in children.items() if full else ():
            found = parents.get(parent)
            quiet = [h for h in handles if written[h][1] is None]
            if quiet and unexplained(found, len(quiet)):
                ask += quiet
            unstarted = [h for h in quiet if not written[h][0]]
            if unstarted and found:
                listed = functools.partial(self._runnable_children, parent)
                held += blocked(found, listed, unstarted)
        answers = {
            j["jobId"]: with_record(
                job_status(j, by_id[j["jobId"]].attempt.image, self.filesystem_hint),
                written[j["jobId"]][1],
            )
            for j in [*self._describe(ask), *held]
            if j["jobId"] in by_id
        }
        # a job asked about and not listed is left to the tracker's grace period
        unchanged = {h: r.status for h, r in by_id.items() if h not in ask}
        return {**unchanged, **statuses, **answers}

    def _runnable_children(self, parent: str) -> list[Mapping[str, Any]]:
        """ListJobs of an array's RUNNABLE children, every page (10,000 children: 10 pages)."""
        paginator = self.batch.get_paginator("list_jobs")
        pages = paginator.paginate(arrayJobId=parent, jobStatus="RUNNABLE")
        return [job for page in pages for job in page.get("jobSummaryList", [])]

    def _describe(self, ids: list[str]) -> list[dict[str, Any]]:
        """DescribeJobs for any number of ids ("A list of up to 100 job IDs" per call)."""
        jobs: list[dict[str, Any]] = []
        for start in range(0, len(ids), DESCRIBE_MAX):
            jobs += self.batch.describe_jobs(jobs=ids[start : start + DESCRIBE_MAX])["jobs"]
        return jobs

    def failure_details(self, record: Submitted, status: Status) -> dict[str, Any]:
        """The tail of the job's CloudWatch log (the wrapper copies the task's stderr tail)."""
        stream = status.details.get("log_stream")
        if not stream:
            return {}
        try:
            events = self.logs.get_log_events(
                logGroupName=status.details["log_group"],
                logStreamName=stream,
                limit=LOG_TAIL_LINES,
                startFromHead=False,
            )["events"]
        except Exception as exn:
            return {"log_tail_error": error_text(exn)}
        return {"log_tail": [str(e.get("message", "")) for e in events]}

    # --- cancelling ------------------------------------------------------------------------

    def cancel_many(
        self, records: Sequence[Submitted], whole_groups: frozenset[str], logger: logging.Logger
    ) -> None:
        """As few TerminateJob calls as Batch allows: an array in ``whole_groups`` by its parent's
        id, which Batch applies to its children (API_CancelJob: "When you try to cancel an array
        parent job in PENDING, AWS Batch attempts to cancel all child jobs"; Nextflow terminates
        an array by its parent's id, AwsBatchTaskHandler.killTask, normaliseJobId); any other
        child by its own id (_terminate_children); a plain job by its id."""
        by_array: dict[str, list[Submitted]] = {}
        for record in records:
            if record.group is not None:
                by_array.setdefault(record.group, []).append(record)
            else:
                self._terminate(record.handle, [record])
        for parent in whole_groups & by_array.keys():
            self._terminate(parent, by_array.pop(parent))
        self._terminate_children(by_array, logger)

    def _terminate_children(
        self, by_array: dict[str, list[Submitted]], logger: logging.Logger
    ) -> None:
        """Each child by its own id (``<parent>:<index>``) once DescribeJobs lists it, none whose
        parent has ended. Batch may not list a job right after it accepted it
        (Netflix/metaflow#543: DescribeJobs answered nothing for a job just submitted), and
        TerminateJob of an id it does not know either fails (API_TerminateJob: ClientException
        for "an identifier that's not valid") or, as moto does, does nothing; so a child not
        listed is asked about again every CHILD_RETRY seconds, at most CHILD_TRIES times."""
        waiting = {c.handle: (c, parent) for parent, cs in by_array.items() for c in cs}

        def one_round() -> None:
            parents = sorted({parent for _child, parent in waiting.values()})
            listed = {j["jobId"]: j for j in self._describe([*waiting, *parents])}
            for handle, (child, parent_id) in list(waiting.items()):
                job, parent = listed.get(handle), listed.get(parent_id, {})
                if job is None and parent.get("status") not in ENDED:
                    continue  # not listed yet
                if job is not None and job.get("status") not in ENDED:
                    self._terminate(handle, [child])
                del waiting[handle]
            if waiting:
                raise NotListed(sorted(waiting))

        def verdict(exn: Exception) -> float:
            if not isinstance(exn, NotListed):
                logger.warning(_("AWS Batch DescribeJobs failed", error=error_text(exn)))
            return CHILD_RETRY

        with contextlib.suppress(Exception):
            retry(one_round, verdict, CHILD_TRIES)
        for handle, (child, _parent) in waiting.items():
            child.logger.warning(
                _(
                    "AWS Batch does not list the array child; it was not terminated",
                    id=handle,
                    asked=CHILD_TRIES,
                )
            )

    def _terminate(self, job_id: str, records: list[Submitted]) -> None:
        """One TerminateJob; each attempt it stops says so in its task's log."""
        try:
            self.batch.terminate_job(jobId=job_id, reason=REASON)
        except Exception as exn:
            error = error_text(exn)
            for record in records:
                record.logger.warning(
                    _("AWS Batch TerminateJob failed", id=record.handle, job=job_id, error=error)
                )
            return
        for record in records:
            record.logger.info(_("AWS Batch job terminated", id=record.handle, by=job_id))


def check_queues(
    session: boto3.session.Session, settings: AwsBatchSettings, queues: dict[str, str]
) -> list[dict[str, Any]]:
    """One DescribeJobQueues call proves the endpoint, the credentials and the queues;
    returns the queues as Batch describes them."""
    retries = {"mode": "standard", "max_attempts": 2}
    config = botocore.config.Config(retries=retries, connect_timeout=5, read_timeout=30)
    probe = session.client("batch", config=config)
    endpoint = probe.meta.endpoint_url
    try:
        found = probe.describe_job_queues(jobQueues=sorted(set(queues.values())))["jobQueues"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exn:
        raise Error.RuntimeError(probe_failure(exn, session, endpoint)) from None
    by_name = {q[key]: q for q in found for key in ("jobQueueName", "jobQueueArn")}
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
                f"job queue {name!r} is {queue.get('state')}/{queue.get('status')}: "
                + queue.get("statusReason", ""),
            )
    return [by_name[name] for name in queues.values()]


def probe_failure(exn: Exception, session: boto3.session.Session, endpoint: str) -> str:
    """One line naming why the DescribeJobQueues at start failed."""
    if isinstance(exn, botocore.exceptions.NoCredentialsError):
        return (
            "omnibio_awsbatch found no AWS credentials in boto3's chain (environment, ~/.aws, "
            "container or instance role)"
        )
    if isinstance(exn, CONNECT_ERRORS):
        override = [v for v in ("AWS_ENDPOINT_URL_BATCH", "AWS_ENDPOINT_URL") if os.environ.get(v)]
        where = f"region {session.region_name}, see omnibio_awsbatch region"
        if override:
            where = f"set by {override[0]}"
        return f"omnibio_awsbatch cannot reach AWS Batch at {endpoint} ({where}): {error_text(exn)}"
    if isinstance(exn, botocore.exceptions.ClientError) and is_auth_error(exn):
        method = getattr(session.get_credentials(), "method", "unknown source")
        rejected = f"rejected the credentials boto3 found ({method})"
        return f"AWS Batch at {endpoint} {rejected}: {error_text(exn)}"
    if isinstance(exn, botocore.exceptions.ClientError):
        return f"omnibio_awsbatch: DescribeJobQueues at {endpoint} failed: {error_text(exn)}"
    return f"omnibio_awsbatch cannot use AWS Batch at {endpoint}: {error_text(exn)}"


class NotListed(Exception):
    """Array children Batch does not list (yet): asked about again."""
