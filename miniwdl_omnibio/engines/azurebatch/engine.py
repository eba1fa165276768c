"""omnibio_azurebatch: each task attempt is one Azure Batch container task.

The pool's nodes mount the shared filesystem (NFS, Azure Files, blobfuse) that holds the run
directory, so nothing is copied: each task's container binds it read-write at ``mount_path`` and
read-only at ``readonly_mount_path`` (docker ``-v`` in containerRunOptions). One Batch job holds
all tasks of a workflow run; it is created on the first submission and terminated at the end.
Each task's command writes its exit record (``jobscript``) into the task's directory on the
shared filesystem, so a poll first reads those files: an exit status 0 ends the attempt without
a call. Batch is asked, in one filtered, paged ``list_tasks`` for the whole run listing only the
tasks whose state changed since the previous listing, when a record holds another exit status or
an attempt is being cancelled, and every ``list_seconds`` for what a file cannot know (a task
that never started, a preempted or requeued task, the time limit). Concurrent submissions share
``addtaskcollection`` requests.
"""

import contextlib
import logging
import math
import os
import shlex
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
from ..base import QUEUED, RUNNING, Accepted, Engine, Phase, Status, Submitted
from ..jobscript import (
    ExitRecord,
    double_quoted,
    exit_record,
    read_exit_record,
    usage_details,
    with_record,
)
from ..jobscript import command as jobscript_command
from .pool import PoolSpec, credential, find_pool, has_gpu, pool_limits
from .settings import AzureBatchSettings
from .tasks import (
    ID_LENGTH,
    THROTTLED,
    Sighting,
    TaskCollections,
    batch_id,
    describe_error,
    error_code,
    sighting,
    task_status,
)

STATUS_FIELDS = ["id", "state", "stateTransitionTime", "executionInfo", "nodeInfo"]
# a poll lists the tasks whose stateTransitionTime is at most this long before the latest one it
# saw: the service's clock, not ours, and room for a transition that shows in lists late
CHANGE_MARGIN = timedelta(seconds=15)
QUOTA_CODE = "ActiveJobAndScheduleQuotaReached"
FILE_TAIL_BYTES = 4000


@dataclass(frozen=True)
class TaskRequest:
    """One attempt as Batch takes it: the task, and the run whose job it goes into."""

    workflow_run: str
    image: str
    task: batch_models.BatchTaskCreateOptions
    exit_record: str  # host path (jobscript.exit_record)


@dataclass
class _Seen:
    """What the previous poll showed of one task (engine memory, for the delta listing)."""

    status: Status = QUEUED
    sighting: Sighting | None = None


class LoopbackHttp(SansIOHTTPPolicy):
    """Lets an Entra ID token go to a plain-http endpoint; used for 127.0.0.1 (an emulator) only."""

    def on_request(self, request: PipelineRequest) -> None:
        request.context.options["enforce_https"] = False


class AzureBatchEngine(Engine[TaskRequest]):
    section = "omnibio_azurebatch"
    enforces_time_limit = True  # maxWallClockTime

    def __init__(
        self,
        client: BatchClient,
        settings: AzureBatchSettings,
        account: str,
        pool: batch_models.BatchPool,
        limits: dict[str, int],
        logger: logging.Logger,
    ) -> None:
        self.client = client
        self.settings = settings
        self.account = account
        self.pool = pool
        self.filesystem = settings.filesystem
        self.limits = limits
        self.slots = int(pool.task_slots_per_node or 1)
        self.poll_seconds = settings.poll_seconds
        self.default_time_limit = settings.default_time_limit
        self.job_id: str | None = None
        self._job_lock = threading.Lock()
        self._since: datetime | None = None  # service time of the latest transition listed
        self._list_at = 0.0  # time.monotonic() of the next fetch that lists whatever the files say
        self._seen: dict[str, _Seen] = {}
        self._seen_lock = threading.Lock()
        self._collections = TaskCollections(self._send_collection, logger)

    # --- start -----------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "AzureBatchEngine":
        settings = AzureBatchSettings.load(cfg)
        pool_spec = PoolSpec(settings)
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
        pool = find_pool(client, settings, pool_spec, logger)
        limits = pool_limits(settings, pool)
        engine = cls(client, settings, account, pool, limits, logger)
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_azurebatch",
                account_url=settings.account_url,
                auth=settings.auth,
                pool=settings.pool_id,
                vm_size=pool.vm_size,
                task_slots_per_node=engine.slots,
                nodes=f"{pool.current_dedicated_nodes or 0} dedicated + "
                f"{pool.current_low_priority_nodes or 0} low-priority",
                **limits,
            ),
        )
        return engine

    def resource_limits(self) -> dict[str, int]:
        return self.limits

    # --- translation -----------------------------------------------------------------------

    def translate(self, attempt: TaskAttempt) -> TaskRequest:
        if attempt.resources.gpu and not has_gpu(self.pool.vm_size or ""):
            raise Error.RuntimeError(
                f"runtime.gpu: Azure Batch pool {self.pool.id} has vmSize {self.pool.vm_size}, "
                "which has no GPU; use a pool of a GPU size (NC, ND, NV ...)"
            )
        call = attempt.call.replace("/", "-")
        time_limit = attempt.resources.time_limit
        task = batch_models.BatchTaskCreateOptions(
            id=batch_id(f"{call}-{attempt.attempt}"),
            display_name=attempt.run_id[:1024],
            # a container task's command line is the container's command (no shell): argv quoted
            command_line=shlex.join(self.command(attempt)),
            container_settings=batch_models.BatchTaskContainerSettings(
                image_name=attempt.image,
                container_run_options=self.run_options(attempt),
                working_directory="containerImageDefault",
            ),
            environment_settings=[
                batch_models.EnvironmentSetting(name=k, value=v) for k, v in attempt.env.items()
            ],
            constraints=batch_models.BatchTaskConstraints(
                max_wall_clock_time=timedelta(seconds=time_limit) if time_limit else None,
                max_task_retry_count=0,
            ),
            required_slots=self.required_slots(attempt),
            user_identity=self.user_identity(),
        )
        return TaskRequest(
            attempt.workflow_run,
            attempt.image,
            task,
            exit_record(attempt.host_dir, attempt.attempt),
        )

    def user_identity(self) -> batch_models.UserIdentity | None:
        """Batch maps the task's user into a Linux container and a non-admin auto-user may lack
        access (batch-docker-container-workloads): root in the container needs the pool-scope
        auto-user with admin elevation, as Microsoft's TES on Azure sets it."""
        if not self.settings.auto_user_admin:
            return None
        return batch_models.UserIdentity(
            auto_user=batch_models.AutoUserSpecification(scope="pool", elevation_level="admin")
        )

    def required_slots(self, attempt: TaskAttempt) -> int | None:
        """Slots in proportion to the node's CPUs, on pools that run several tasks per node."""
        if self.slots <= 1:
            return None
        per_slot = self.limits["cpu"] / self.slots
        return max(1, min(self.slots, math.ceil(attempt.resources.cpu / per_slot)))

    def run_options(self, attempt: TaskAttempt) -> str:
        """containerRunOptions: no image ENTRYPOINT, limits, the shared filesystem's two views,
        working directory. The docs say a command line overrides the image's ENTRYPOINT, users
        report it becomes the COMMAND after it: clearing the ENTRYPOINT works either way. No
        --gpus: Batch enables the GPUs of a GPU pool's nodes for container tasks itself."""
        resources = attempt.resources
        options = ["--entrypoint=", "--cpus", str(resources.cpu)]
        # runtime.memory is a hard limit here (tasks share nodes), as on other batch services
        memory = resources.memory_limit or resources.memory_reservation
        if memory:
            options += ["--memory", str(memory)]
        if resources.memory_reservation and resources.memory_reservation < memory:
            options += ["--memory-reservation", str(resources.memory_reservation)]
        for mount in attempt.mounts:
            source = self.node_path(mount.host_path)
            options += [
                "-v",
                f"{source}:{mount.container_path}" + (":ro" if mount.read_only else ""),
            ]
        options += ["--workdir", attempt.workdir]
        if attempt.user:
            options += ["--user", attempt.user]
        if attempt.privileged:
            options.append("--privileged")
        for name, value in attempt.tags.items():
            options += ["--label", f"{name}={value}"]
        return shlex.join(options + list(self.settings.extra_run_options))

    def node_path(self, host_path: str) -> str:
        """Where a pool node sees a path of this host's shared filesystem mount."""
        relative = os.path.relpath(host_path, self.settings.filesystem.host_root)
        root = self.settings.node_root
        return root if relative == "." else os.path.join(root, relative)

    def command(self, attempt: TaskAttempt) -> list[str]:
        """attempt.argv in the job script, which writes the attempt's exit record.

        On a node without the shared filesystem, docker creates the bind source empty and the
        command's own error would land in an invisible stderr file; the script's check says so
        in Batch's stderr.txt, which failure_details fetches.
        """
        to_container = self.settings.filesystem.to_container
        record = to_container(exit_record(attempt.host_dir, attempt.attempt))
        stdout = to_container(attempt.stdout_path)  # miniwdl makes it before submitting
        missing = (
            f"{double_quoted(stdout)} is not visible on Azure Batch node "
            "$AZ_BATCH_NODE_ID; the pool must mount the shared filesystem at "
            f"{double_quoted(self.settings.node_root)} ([omnibio_azurebatch] node_mount_path, "
            "see the README)"
        )
        return jobscript_command(attempt.argv, record, stdout, missing)

    # --- the run's job ---------------------------------------------------------------------

    def ensure_job(self, workflow_run: str, logger: logging.Logger) -> str:
        """The run's Batch job, made on first use; waits (bounded) while the job quota is full."""
        with self._job_lock:
            if self.job_id:
                return self.job_id
            job_id = f"{batch_id(workflow_run, ID_LENGTH - 9)}-{uuid.uuid4().hex[:8]}"
            options = batch_models.BatchJobCreateOptions(
                id=job_id,
                display_name=workflow_run[:1024],
                pool_info=batch_models.BatchPoolInfo(pool_id=self.pool.id),
                constraints=batch_models.BatchJobConstraints(max_task_retry_count=0),
                metadata=[
                    batch_models.BatchMetadataItem(name="omnibio.run", value=workflow_run[:512])
                ],
            )
            waited, delay = 0.0, 5.0
            while True:
                try:
                    headers = self.client.create_job(options, cls=lambda _r, _d, h: h)
                    break
                except HttpResponseError as exn:
                    if error_code(exn) != QUOTA_CODE:
                        raise Error.RuntimeError(
                            f"Azure Batch could not create job {job_id}: {describe_error(exn)}"
                        ) from None
                    if waited >= self.settings.quota_wait:
                        raise Error.RuntimeError(
                            f"Azure Batch account {self.account} is at its active job quota "
                            f"({QUOTA_CODE}) for {int(waited)} s; terminate or delete finished "
                            "jobs, or request a higher quota"
                        ) from None
                    logger.warning(
                        _("Azure Batch active job quota reached; waiting", seconds=delay)
                    )
                    time.sleep(delay)
                    waited += delay
                    delay = min(delay * 2, 60.0)
            # the job's creation in the service's clock: no task of it changed state before
            created = headers.get("Last-Modified") if isinstance(headers, dict) else None
            self._since = created if isinstance(created, datetime) else None
            self.job_id = job_id
            logger.log(NOTICE_LEVEL, _("Azure Batch job", job=job_id, pool=self.pool.id))
            return job_id

    # --- the attempt -----------------------------------------------------------------------

    def submit(self, request: TaskRequest, logger: logging.Logger) -> Accepted:
        job_id = self.ensure_job(request.workflow_run, logger)
        task = request.task
        with self._seen_lock:
            self._seen[task.id] = _Seen()
        # a record left by an earlier launcher in this directory must not end the task
        with contextlib.suppress(FileNotFoundError):
            os.unlink(request.exit_record)
        try:
            self._collections.add(task)
        except Exception as exn:
            with self._seen_lock:
                self._seen.pop(task.id, None)
            reason = describe_error(exn) if isinstance(exn, AzureError) else str(exn)
            raise Error.RuntimeError(
                f"Azure Batch did not accept task {task.id}: {reason}"
            ) from None
        logger.info(
            _(
                "Azure Batch task",
                job=job_id,
                task=task.id,
                image=request.image,
                required_slots=task.required_slots,
            )
        )
        return Accepted(str(task.id))

    def _send_collection(self, tasks: list[batch_models.BatchTaskCreateOptions]) -> list[Any]:
        assert self.job_id
        group = batch_models.BatchTaskGroup(task_values=tasks)
        return self.client.create_task_collection(self.job_id, group).result_values or []

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """Each task's exit record first: exit status 0 ends the attempt without a call. One
        paged listing of the run's tasks that changed since the previous listing when a record
        holds another exit status or an attempt is being cancelled, and every list_seconds
        whatever the records say (a task that never started, a rerun, the time limit); a task
        not listed is as the previous listing showed it, or running once its record exists."""
        job_id = self.job_id
        if not job_id:
            return {}
        written = {
            r.handle: read_exit_record(exit_record(r.attempt.host_dir, r.attempt.attempt))
            for r in records
        }
        now = time.monotonic()
        sweep = now >= self._list_at
        if sweep:
            self._list_at = now + self.settings.list_seconds
        ask = sweep or any(
            r.cancelled or (code is not None and code.exit_code != 0)
            for r, (_started, code) in zip(records, written.values(), strict=True)
        )
        changed = self._list_changed(job_id) if ask else {}
        statuses: dict[str, Status] = {}
        with self._seen_lock:
            for record in records:
                seen = self._seen.get(record.handle)
                if seen is None:
                    continue
                started, ended = written[record.handle]
                if ended is not None and ended.exit_code == 0:
                    statuses[record.handle] = succeeded(job_id, record.handle, ended)
                    continue
                task = changed.get(record.handle)
                if task is not None:
                    seen.status = task_status(
                        task, seen.sighting, record.attempt, record.cancelled, job_id
                    )
                    seen.sighting = sighting(task) or seen.sighting
                elif started and seen.status.phase is Phase.QUEUED:
                    seen.status = RUNNING
                statuses[record.handle] = with_record(seen.status, ended)
        return statuses

    def _list_changed(self, job_id: str) -> dict[str, batch_models.BatchTask]:
        since = self._since
        change_filter = (
            f"stateTransitionTime ge datetime'{odata_time(since - CHANGE_MARGIN)}'"
            if since
            else None
        )
        tasks = list(self.client.list_tasks(job_id, filter=change_filter, select=STATUS_FIELDS))
        times = [t.state_transition_time for t in tasks if t.state_transition_time]
        if times and (since is None or max(times) > since):
            self._since = max(times)
        return {t.id: t for t in tasks}

    # --- after the attempt -----------------------------------------------------------------

    def failure_details(self, record: Submitted, status: Status) -> dict[str, Any]:
        """The tails of the task's stdout.txt / stderr.txt on its node (the container's own)."""
        handle = record.handle
        details: dict[str, Any] = {}
        for name in ("stdout.txt", "stderr.txt"):
            tail = self._file_tail(handle, name)
            if tail:
                details[f"batch_{name.replace('.txt', '')}_tail"] = tail
        return details

    def _file_tail(self, handle: str, name: str) -> str:
        assert self.job_id
        try:
            properties = self.client.get_task_file_properties(self.job_id, handle, name)
            size = properties.content_length or 0
            if not size:
                return ""
            start = max(0, size - FILE_TAIL_BYTES)
            data = b"".join(
                self.client.download_task_file(
                    self.job_id, handle, name, ocp_range=f"bytes={start}-{size - 1}"
                )
            )
        except AzureError:
            return ""
        return data.decode("utf-8", errors="replace")

    def cancel(self, record: Submitted, logger: logging.Logger) -> None:
        handle = record.handle
        if not self.job_id:
            return
        for tries in range(1, 6):
            try:
                self.client.terminate_task(self.job_id, handle)
            except HttpResponseError as exn:
                if exn.status_code in THROTTLED and tries < 5:
                    time.sleep(tries)  # POST: a 429 without Retry-After is not retried for us
                    continue
                if error_code(exn) not in ("TaskCompleted", "TaskNotFound"):
                    logger.warning(
                        _("could not terminate Azure Batch task", task=handle, error=str(exn))
                    )
                return
            except AzureError as exn:
                logger.warning(
                    _("could not terminate Azure Batch task", task=handle, error=str(exn))
                )
                return
            logger.info(_("Azure Batch task terminated", job=self.job_id, task=handle))
            return

    def release(self, record: Submitted, logger: logging.Logger) -> None:
        handle = record.handle
        with self._seen_lock:
            self._seen.pop(handle, None)

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


def succeeded(job_id: str, handle: str, record: ExitRecord) -> Status:
    """A task whose exit record says exit status 0: done, Batch not asked."""
    details = {"batch_job": job_id, "batch_task": handle, **usage_details(record)}
    return Status(Phase.DONE, exit_code=0, reason="exit status 0", details=details)


def odata_time(moment: datetime) -> str:
    """An OData datetime literal's text: UTC, ISO 8601, Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
