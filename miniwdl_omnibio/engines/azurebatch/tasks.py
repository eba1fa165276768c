"""omnibio_azurebatch, the task side: ids, task collections, and what a listed task's state means.

Nothing here talks to the service itself: ``TaskCollections`` is handed the function that sends
one ``addtaskcollection`` request, and ``task_status`` is a pure mapping of what a poll shows.
"""

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.batch import models as batch_models
from azure.core.exceptions import HttpResponseError
from WDL import Error

from ...attempt import TaskAttempt
from ...gathering import Gathering, Waiting
from ..base import QUEUED, RUNNING, Phase, Status
from .settings import ID_LENGTH, INVALID_ID_CHARACTERS

COLLECTION_MAX = 100  # tasks per addtaskcollection request (BatchTaskGroup.value: "at most 100")
# "The total serialized size of this collection must be less than 1MB" (BatchTaskGroup.value);
# whether 1 MB is 10^6 or 2^20 bytes is not said: stay well under both
COLLECTION_BYTES = 900_000
# a submission waits for others to share its addtaskcollection until none came for SUBMIT_LINGER
# seconds (at most SUBMIT_LINGER_MAX): a scatter's tasks, ready together, go in one request
SUBMIT_LINGER = 0.25
SUBMIT_LINGER_MAX = 2.0
THROTTLED = (429, 503)
TOO_LARGE = "RequestBodyTooLarge"


def batch_id(text: str, limit: int = ID_LENGTH) -> str:
    """A valid Batch id for ``text``. Ids are case-insensitive and at most 64 long: one with
    capitals, or too long, keeps its head plus a hash of the whole, so distinct texts stay
    distinct."""
    clean = INVALID_ID_CHARACTERS.sub("-", text).strip("-") or "x"
    if len(clean) <= limit and clean == clean.lower():
        return clean
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
    return f"{clean[: limit - 11]}-{digest}"


def enum_text(value: Any) -> str:
    """An SDK enum (or a plain string the SDK did not know) as a lower-case word: the service's
    spelling of enum values varies in case (``UserError``, ``usererror``)."""
    return str(getattr(value, "value", value) or "").lower()


def error_code(exn: BaseException) -> str | None:
    if isinstance(exn, HttpResponseError) and exn.error is not None:
        return getattr(exn.error, "code", None)
    return None


def describe_error(exn: BaseException) -> str:
    """One line for a service or transport error: status, Batch error code and message only.

    The service's error values (e.g. AuthenticationErrorDetail with the string it signed) are
    left out: they are long and not for a log line.
    """
    if isinstance(exn, HttpResponseError):
        text = str(exn.message or exn.reason or "")
        message = re.sub(r"^\(\w+\)\s*", "", text.splitlines()[0] if text else "")
        return f"{exn.status_code} {error_code(exn) or exn.reason}: {message}".strip().rstrip(":")
    text = str(exn).splitlines()[0] if str(exn) else type(exn).__name__
    # transport errors nest urllib3's story; the socket's own words are the useful part
    cause = re.search(
        r"(\[Errno -?\d+\] [^'\")]+|Read timed out|Name or service not known|timed out)", text
    )
    return f"{type(exn).__name__}: {cause.group(1) if cause else text[:300]}"


def serialized_size(task: batch_models.BatchTaskCreateOptions) -> int:
    """About the bytes the task takes in a request body."""
    return len(json.dumps(task.as_dict(), default=str).encode("utf-8"))


def split_collection(
    tasks: list[batch_models.BatchTaskCreateOptions],
) -> list[list[batch_models.BatchTaskCreateOptions]]:
    """Consecutive groups of at most COLLECTION_MAX tasks and COLLECTION_BYTES serialized."""
    groups: list[list[batch_models.BatchTaskCreateOptions]] = []
    size = 0
    for task in tasks:
        task_size = serialized_size(task)
        if not groups or len(groups[-1]) >= COLLECTION_MAX or size + task_size > COLLECTION_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(task)
        size += task_size
    return groups


Sender = Callable[[list[batch_models.BatchTaskCreateOptions]], list[Any]]


class TaskCollections:
    """Concurrent submissions share ``addtaskcollection`` requests.

    The first submitter waits for company (until none came for ``SUBMIT_LINGER``), then sends
    what has gathered (split by count and serialized size) while the others wait for their
    outcome: N attempts ready together reach Batch in ceil(N / 100) requests, plus the splits
    their size needs.
    """

    def __init__(self, send: Sender, logger: logging.Logger) -> None:
        self._send = send  # one addtaskcollection request -> its result values
        self._logger = logger
        self._gathering = Gathering(self._add_gathered, SUBMIT_LINGER, SUBMIT_LINGER_MAX)

    def add(self, task: batch_models.BatchTaskCreateOptions) -> None:
        """Returns once the service added the task; raises its one-line reason otherwise."""
        self._gathering.add(task)

    def _add_gathered(
        self, gathered: list[Waiting[batch_models.BatchTaskCreateOptions, None]]
    ) -> None:
        waiting = {w.item.id: w for w in gathered}
        for group in split_collection([w.item for w in gathered]):
            errors = self._add_group(group)
            for member in group:
                waiting[member.id].finish(error=errors.get(member.id))

    def _add_group(self, tasks: list[batch_models.BatchTaskCreateOptions]) -> dict[str, Exception]:
        """Add tasks in one request, halving it while the service finds the body too large and
        backing off while it throttles; {task id: error} for those not added. A task that already
        exists was added by an earlier try of the same request (the service may have acted on a
        request whose answer was lost): that is success."""
        delay = 1.0
        errors: dict[str, Exception] = {}
        for tries in range(1, 9):
            try:
                results = self._send(tasks)
            except HttpResponseError as exn:
                if error_code(exn) == TOO_LARGE and len(tasks) > 1:
                    half = len(tasks) // 2
                    self._logger.info(f"addtaskcollection of {len(tasks)} tasks too large; halving")
                    return {
                        **errors,
                        **self._add_group(tasks[:half]),
                        **self._add_group(tasks[half:]),
                    }
                if exn.status_code not in THROTTLED or tries == 8:
                    return {**errors, **{t.id: exn for t in tasks}}
                # POST is not retried by azure-core on a 429 without Retry-After: back off here
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            except Exception as exn:
                return {**errors, **{t.id: exn for t in tasks}}
            retry = []
            for result in results:
                status = enum_text(result.status)
                code = getattr(result.error, "code", None)
                if status == "servererror":
                    retry.append(result.task_id)
                elif status == "clienterror" and code != "TaskExists":
                    message = getattr(getattr(result.error, "message", None), "value", "") or ""
                    line = message.splitlines()[0] if message else ""
                    errors[result.task_id] = Error.RuntimeError(f"{code or 'ClientError'}: {line}")
            if not retry:
                return errors
            tasks = [t for t in tasks if t.id in retry]
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        return {
            **errors,
            **{t.id: Error.RuntimeError("server error adding the task") for t in tasks},
        }


# --- what a listed task's state means ---------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """Where and when a poll last showed the task started: a rerun of it shows another."""

    node_id: str | None
    start_time: datetime | None


def sighting(task: batch_models.BatchTask) -> Sighting | None:
    if enum_text(task.state) not in ("preparing", "running", "completed"):
        return None
    node = task.node_info.node_id if task.node_info else None
    start = task.execution_info.start_time if task.execution_info else None
    return Sighting(node, start)


def rerun_reason(task: batch_models.BatchTask, before: Sighting | None) -> str | None:
    """Why the task is not the run this process saw start, or None.

    The spec counts in ``requeueCount`` the requeues a user asked for; preemption of a
    low-priority/spot node may requeue without counting (Microsoft's TES on Azure watches node
    state instead). So a rerun also shows as the task back in the queue after it started, or
    started again on another node or at another time.
    """
    info = task.execution_info
    requeues = (info.requeue_count or 0) if info else 0
    if requeues > 0:
        return f"Azure Batch requeued the task (requeueCount={requeues}), e.g. a preempted node"
    if before is None:
        return None
    if enum_text(task.state) == "active":
        return "Azure Batch put the started task back in its queue (its node was lost)"
    now = sighting(task)
    if now and before.node_id and now.node_id and now.node_id != before.node_id:
        return f"Azure Batch restarted the task on node {now.node_id} (it ran on {before.node_id})"
    if now and before.start_time and now.start_time and now.start_time != before.start_time:
        return "Azure Batch restarted the task (its startTime changed)"
    return None


def task_status(
    task: batch_models.BatchTask,
    before: Sighting | None,
    attempt: TaskAttempt,
    cancelled: bool,
    job_id: str,
) -> Status:
    """The Status of a listed task, given what the previous poll showed of it (``before``)."""
    state = enum_text(task.state)
    if state == "completed":  # a rerun that completed before any poll saw it is the result
        return completed_status(task, attempt, cancelled, job_id)
    rerun = rerun_reason(task, before)
    if rerun:  # over for this attempt; the tracker terminates the rerun on release
        return Status(Phase.DONE, interrupted=True, lingering=True, reason=rerun)
    return RUNNING if state in ("preparing", "running") else QUEUED


def completed_status(
    task: batch_models.BatchTask, attempt: TaskAttempt, cancelled: bool, job_id: str
) -> Status:
    info = task.execution_info
    node = task.node_info.node_id if task.node_info else None
    details = {"batch_job": job_id, "batch_task": task.id, **({"batch_node": node} if node else {})}
    failure = info.failure_info if info else None
    # the spec's exitCode: a task the service terminated (timeout) "may" show an OS-defined exit
    # code, so the time limit is judged before, and without, the exit code
    limit = attempt.resources.time_limit
    if info and not cancelled and reached_time_limit(info, failure, limit):
        return Status(
            Phase.DONE,
            exit_code=None if info.exit_code is None else int(info.exit_code),
            timed_out=True,
            reason="ended by Azure Batch at maxWallClockTime",
            details=details,
        )
    if info is None or info.exit_code is None:
        return Status(Phase.DONE, error=failure_text(job_id, task.id, attempt, failure))
    reason = f"{failure.code}: {failure.message}" if failure else ""
    return Status(Phase.DONE, exit_code=int(info.exit_code), reason=reason, details=details)


def reached_time_limit(
    info: batch_models.BatchTaskExecutionInfo,
    failure: batch_models.BatchTaskFailureInfo | None,
    limit: int | None,
) -> bool:
    """The task failed when its run time reached maxWallClockTime (or, without timestamps, was
    ended by the service). The docs do not name the failure code of a task ended at its limit."""
    if not limit or failure is None:
        return False
    if info.start_time and info.end_time:  # 1 s for the two timestamps' rounding
        return (info.end_time - info.start_time).total_seconds() >= limit - 1
    return failure.code == "TaskEnded"


def failure_text(
    job_id: str,
    task_id: str,
    attempt: TaskAttempt,
    failure: batch_models.BatchTaskFailureInfo | None,
) -> str:
    """One line for a task that never ran its command: image pull, container settings, ..."""
    if failure is None:
        return (
            f"Azure Batch task {job_id}/{task_id} completed without an exit code or failure "
            "information"
        )
    values = {d.name: d.value for d in (failure.details or []) if d.name}
    cause = f": {values['Message']}" if values.get("Message") else ""
    if (failure.code or "").startswith("ContainerInvalidImage") or "ContainerImage" in values:
        image = values.get("ContainerImage") or attempt.image
        return (
            f"Azure Batch could not start image {image} for task {task_id} "
            f"({failure.code}: {failure.message}){cause}"
        )
    return (
        f"Azure Batch could not run task {task_id} "
        f"({failure.category} {failure.code}: {failure.message}){cause}"
    )
