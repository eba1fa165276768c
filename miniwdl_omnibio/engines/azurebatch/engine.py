"""omnibio_azurebatch: each task attempt is one Azure Batch container task, on a pool whose
nodes mount the shared filesystem (``placement.sharedfs``).

One Batch job holds a workflow run's tasks. Each task's command writes its exit record
(``jobscript``) into the task's directory, so a poll reads those files first: exit status 0 ends
the attempt without a call. Batch is asked, in one filtered ``list_tasks``, when a record holds
another exit status or an attempt is being cancelled, and every ``list_seconds`` for what a file
cannot know (a task that never started, a preempted or requeued task, the time limit).
"""

import contextlib
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.pipeline.transport import RequestsTransport
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ...attempt import TaskAttempt
from ...retrying import retry
from ..base import Accepted, Engine, Status, Submission, Submitted
from ..jobscript import clear, exit_record, read_exit_record
from .pool import credential, find_pool, pool_limits
from .settings import ID_LENGTH, AzureBatchSettings
from .status import added, asks_batch, changed_since, describe_error, error_code, fetched, refused
from .translate import Task, batch_id, batch_task, split_collection

STATUS_FIELDS = ["id", "state", "stateTransitionTime", "executionInfo", "nodeInfo"]
QUOTA_CODE = "ActiveJobAndScheduleQuotaReached"
QUOTA_PAUSE = 30.0  # seconds between two tries at creating the job while the quota is full
# azure-core retries neither a POST answered 429 without Retry-After nor, once its own retries
# are spent, a busy service: task creation and termination try again themselves
THROTTLED = (429, 503)
ADD_TRIES = 8
TERMINATE_TRIES = 5
FILE_TAIL_BYTES = 4000


class LoopbackHttp(SansIOHTTPPolicy):
    """Lets an Entra ID token go to a plain-http endpoint; used for 127.0.0.1 (an emulator) only."""

    def on_request(self, request: PipelineRequest) -> None:
        request.context.options["enforce_https"] = False


class ServerErrors(Exception):
    """addtaskcollection answered a server error for some of its tasks: they are sent again."""


def throttled(exn: Exception) -> bool:
    busy = isinstance(exn, HttpResponseError) and exn.status_code in THROTTLED
    return busy or isinstance(exn, ServerErrors)


@dataclass(eq=False)  # one engine per process, compared by identity
class AzureBatchEngine(Engine[Task]):
    section = "omnibio_azurebatch"
    enforces_time_limit = True  # maxWallClockTime
    gather_seconds = 0.25

    client: BatchClient
    settings: AzureBatchSettings
    account: str
    pool: batch_models.BatchPool
    limits: dict[str, int]
    logger: logging.Logger
    job_id: str = ""  # made with the first burst: a record's handle always has one

    def __post_init__(self) -> None:
        self.sweep_seconds = self.settings.list_seconds

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "AzureBatchEngine":
        settings = AzureBatchSettings.load(cfg)
        # the SDK's request logging would put a line per REST call into the run's log
        logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger("azure").level))
        account, key = credential(settings)
        session = requests.Session()
        for scheme in ("http://", "https://"):
            session.mount(scheme, requests.adapters.HTTPAdapter(pool_maxsize=32))
        client = BatchClient(
            settings.account_url,
            key,
            transport=RequestsTransport(
                session=session, session_owner=False, connection_timeout=15, read_timeout=120
            ),
            retry_total=settings.max_retries,
            retry_status=settings.max_retries,
            retry_connect=3,
            retry_backoff_factor=1.0,
            retry_backoff_max=60,
            per_call_policies=[LoopbackHttp()] if settings.loopback_token else [],
        )
        pool = find_pool(client, settings, logger)
        limits = pool_limits(settings, pool)
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_azurebatch",
                account_url=settings.account_url,
                auth=settings.auth,
                pool=settings.pool_id,
                vm_size=pool.vm_size,
                task_slots_per_node=pool.task_slots_per_node or 1,
                nodes=f"{pool.current_dedicated_nodes or 0} dedicated + "
                f"{pool.current_low_priority_nodes or 0} low-priority",
                **limits,
            ),
        )
        return cls(client, settings, account, pool, limits, logger)

    def translate(self, attempt: TaskAttempt) -> Task:
        return batch_task(attempt, self.settings, self.pool, self.limits["cpu"])

    def ensure_job(self, workflow_run: str, logger: logging.Logger) -> str:
        """The run's Batch job, made on first use (no lock: the tracker sends one burst at a time);
        waits (bounded) while the job quota is full."""
        if self.job_id:
            return self.job_id
        job_id = f"{batch_id(workflow_run, ID_LENGTH - 9)}-{uuid.uuid4().hex[:8]}"
        # the run's job: every attempt of the run is one of its tasks; Batch retries none
        options = batch_models.BatchJobCreateOptions(
            id=job_id,
            display_name=workflow_run[:1024],
            pool_info=batch_models.BatchPoolInfo(pool_id=self.pool.id),
            constraints=batch_models.BatchJobConstraints(max_task_retry_count=0),
            metadata=[batch_models.BatchMetadataItem(name="omnibio.run", value=workflow_run[:512])],
        )

        def quota(exn: Exception) -> float | bool:
            if error_code(exn) != QUOTA_CODE:
                return False
            logger.warning(_("Azure Batch active job quota reached", retry_in=QUOTA_PAUSE))
            return QUOTA_PAUSE

        tries = 1 + math.ceil(self.settings.quota_wait / QUOTA_PAUSE)
        try:
            retry(lambda: self.client.create_job(options), quota, tries, cap=QUOTA_PAUSE)
        except HttpResponseError as exn:
            problem = f"could not create job {job_id}: {describe_error(exn)}"
            if error_code(exn) == QUOTA_CODE:
                problem = (
                    f"account {self.account} is at its active job quota ({QUOTA_CODE}) for "
                    f"{int(self.settings.quota_wait)} s; terminate or delete finished jobs, or "
                    "request a higher quota"
                )
            raise Error.RuntimeError(f"Azure Batch {problem}") from None
        self.job_id = job_id
        logger.log(NOTICE_LEVEL, _("Azure Batch job", job=job_id, pool=self.pool.id))
        return job_id

    def submit_many(self, submissions: Sequence[Submission[Task]]) -> list[Accepted | Exception]:
        """The burst in addtaskcollection requests of at most 100 tasks and 900 KB each."""
        job_id = self.ensure_job(submissions[0].attempt.workflow_run, submissions[0].logger)
        clear(*(exit_record(each.attempt.host_dir, each.attempt.attempt) for each in submissions))
        outcomes: dict[str, Accepted | Exception] = {}
        for group in split_collection([each.request for each in submissions]):
            outcomes.update(self._add(job_id, group))
        for each in submissions:
            if isinstance(outcomes[each.request.id], Accepted):
                each.logger.info(
                    _(
                        "Azure Batch task",
                        job=job_id,
                        task=each.request.id,
                        image=each.attempt.image,
                        required_slots=each.request.required_slots,
                    )
                )
        return [outcomes[each.request.id] for each in submissions]

    def _add(self, job_id: str, tasks: list[Task]) -> dict[str, Accepted | Exception]:
        """One addtaskcollection request, halved while the service finds the body too large;
        tried again while the service throttles, with the tasks it answered a server error for."""
        outcomes: dict[str, Accepted | Exception] = {}
        left = list(tasks)

        def send() -> None:
            group = batch_models.BatchTaskGroup(task_values=left)
            for result in self.client.create_task_collection(job_id, group).result_values or []:
                if (outcome := added(result)) is not None:
                    outcomes[result.task_id] = outcome
            left[:] = [task for task in left if task.id not in outcomes]
            if left:
                raise ServerErrors("server error adding the task")

        try:
            retry(send, throttled, ADD_TRIES)
        except Exception as exn:
            if error_code(exn) != "RequestBodyTooLarge" or len(left) <= 1:
                return {**outcomes, **{task.id: refused(task.id, exn) for task in left}}
            self.logger.info(f"addtaskcollection of {len(left)} tasks too large; halving")
            half = len(left) // 2
            for part in (left[:half], left[half:]):
                outcomes.update(self._add(job_id, part))
        return outcomes

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """The exit records, then one paged listing (``changed_since``) of the tasks asked about."""
        written = {
            r.handle: read_exit_record(exit_record(r.attempt.host_dir, r.attempt.attempt))
            for r in records
        }
        asked = [r for r in records if asks_batch(r, written[r.handle][1], full)]
        listed: dict[str, batch_models.BatchTask] = {}
        if asked:
            changed = changed_since([r.memo for r in asked])
            tasks = self.client.list_tasks(self.job_id, filter=changed, select=STATUS_FIELDS)
            listed = {task.id: task for task in tasks}
        return {
            r.handle: fetched(r, *written[r.handle], listed.get(r.handle), self.job_id)
            for r in records
        }

    def failure_details(self, record: Submitted, status: Status) -> dict[str, Any]:
        """The tails of the task's stdout.txt / stderr.txt on its node (the container's own)."""
        details: dict[str, Any] = {}
        for stream in ("stdout", "stderr"):
            file = (self.job_id, record.handle, f"{stream}.txt")
            with contextlib.suppress(AzureError):
                size = self.client.get_task_file_properties(*file).content_length or 0
                if size:
                    tail = f"bytes={max(0, size - FILE_TAIL_BYTES)}-{size - 1}"
                    data = b"".join(self.client.download_task_file(*file, ocp_range=tail))
                    details[f"batch_{stream}_tail"] = data.decode("utf-8", errors="replace")
        return details

    def cancel(self, record: Submitted, logger: logging.Logger) -> None:
        job_id, task = self.job_id, record.handle
        try:
            retry(lambda: self.client.terminate_task(job_id, task), throttled, TERMINATE_TRIES)
        except AzureError as exn:
            if error_code(exn) not in ("TaskCompleted", "TaskNotFound"):
                logger.warning(_("could not terminate Azure Batch task", task=task, error=str(exn)))
            return
        logger.info(_("Azure Batch task terminated", job=job_id, task=task))

    def shutdown(self, logger: logging.Logger) -> None:
        """Terminate the run's job: it ends whatever of it may still run."""
        if not self.job_id:
            return
        with contextlib.suppress(Exception):  # at exit: report nothing but the log line below
            # options are required in azure-batch 15.1 (its request fails without a body) and
            # BatchJobTerminateOptions is not exported: the REST body as a dict
            reason: Any = {"terminateReason": "omnibio run ended"}
            poller = self.client.begin_terminate_job(self.job_id, reason, polling_interval=1)
            poller.result(timeout=30)
        logger.info(_("Azure Batch job terminated", job=self.job_id))
