"""omnibio_azurebatch, what the service says: an added task, an error, a listed task's state, an
exit record, each as one line or a Status. Pure: nothing here talks to the service."""

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from azure.batch.models import BatchTask, BatchTaskCreateResult, BatchTaskExecutionInfo
from azure.core.exceptions import AzureError, HttpResponseError
from WDL import Error

from ..base import QUEUED, RUNNING, Accepted, Phase, Status, Submitted
from ..jobscript import ExitRecord, succeeded, with_record

# a listing reaches back this far before the oldest creation it must cover: an add result's
# lastModified (the service's clock) may follow the moment the task entered its first state
CHANGE_MARGIN = timedelta(seconds=15)


def enum_text(value: Any) -> str:
    """An SDK enum (or a plain string the SDK did not know) as a lower-case word: the service's
    spelling of enum values varies in case (``UserError``, ``usererror``)."""
    return str(getattr(value, "value", value) or "").lower()


def error_code(exn: BaseException) -> str | None:
    return getattr(exn.error, "code", None) if isinstance(exn, HttpResponseError) else None


def describe_error(exn: BaseException) -> str:
    """One line for a service or transport error: status, error code and message; the service's
    error values (AuthenticationErrorDetail with the string it signed ...) are too long for it."""
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


def refused(task_id: str, exn: BaseException) -> Error.RuntimeError:
    reason = describe_error(exn) if isinstance(exn, AzureError) else str(exn)
    return Error.RuntimeError(f"Azure Batch did not accept task {task_id}: {reason}")


def added(result: BatchTaskCreateResult) -> Accepted | Exception | None:
    """addtaskcollection's answer for one task: Accepted (its memo the task's creation, in the
    service's clock); the refusal; or None for a server error, worth another try. TaskExists is
    success: an earlier try of the same request was acted on, though its answer was lost."""
    status, code = enum_text(result.status), getattr(result.error, "code", None)
    if status == "servererror":
        return None
    if status == "clienterror" and code != "TaskExists":
        message = getattr(getattr(result.error, "message", None), "value", "") or ""
        line = message.splitlines()[0] if message else ""
        return refused(result.task_id, Exception(f"{code or 'ClientError'}: {line}"))
    return Accepted(result.task_id, result.last_modified if status == "success" else None)


def changed_since(created: list[datetime | None]) -> str | None:
    """The filter of a listing that holds every task created at these times: a task entered
    its present state at or after its creation. None (the whole job) if one time is unknown."""
    if None in created:
        return None
    oldest = min(t for t in created if t) - CHANGE_MARGIN
    # an OData datetime literal: UTC, ISO 8601, Z
    literal = oldest.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return f"stateTransitionTime ge datetime'{literal}'"


def asks_batch(record: Submitted, ended: ExitRecord | None, full: bool) -> bool:
    """Whether fetch asks Batch about the attempt (when: engine.py's module docstring)."""
    return not (ended and ended.exit_code == 0) and (full or record.cancelled or bool(ended))


def fetched(
    record: Submitted, started: bool, ended: ExitRecord | None, task: BatchTask | None, job_id: str
) -> Status:
    """The attempt's Status from its exit record (started, ended) and, if listed, its task."""
    if ended and ended.exit_code == 0:
        return succeeded(ended, batch_job=job_id, batch_task=record.handle)
    if task is not None:
        return with_record(task_status(task, record, job_id), ended)
    return RUNNING if started and record.status.phase is Phase.QUEUED else record.status


def sighting(task: BatchTask) -> dict[str, str | None]:
    """Where and when a listing showed the task started, or {}: its running Status carries it
    (in the tracker's record), so the next listing can tell a rerun of it."""
    if enum_text(task.state) not in ("preparing", "running", "completed"):
        return {}
    start = task.execution_info.start_time if task.execution_info else None
    return {
        "batch_node": task.node_info.node_id if task.node_info else None,
        "batch_started": start.isoformat() if start else None,
    }


def rerun_reason(task: BatchTask, before: Mapping[str, Any]) -> str | None:
    """Why the task is not the run a listing showed start (``before``, its sighting), or None.
    The spec counts in ``requeueCount`` the requeues a user asked for; preemption of a
    low-priority/spot node may requeue without counting (Microsoft's TES on Azure watches node
    state instead). So a rerun also shows as the task back in the queue after it started, or
    started again on another node or at another time."""
    requeues = task.execution_info.requeue_count if task.execution_info else 0
    if requeues:
        return f"Azure Batch requeued the task (requeueCount={requeues}), e.g. a preempted node"
    if "batch_node" not in before:
        return None
    if enum_text(task.state) == "active":
        return "Azure Batch put the started task back in its queue (its node was lost)"
    now = sighting(task)
    node, was = now.get("batch_node"), before["batch_node"]
    if node and was and node != was:
        return f"Azure Batch restarted the task on node {node} (it ran on {was})"
    start, was = now.get("batch_started"), before["batch_started"]
    if start and was and start != was:
        return "Azure Batch restarted the task (its startTime changed)"
    return None


def task_status(task: BatchTask, record: Submitted, job_id: str) -> Status:
    """The Status of a listed task, given the attempt's record (with its previous Status)."""
    state = enum_text(task.state)
    if state == "completed":  # a rerun that completed before any poll saw it is the result
        return completed_status(task, record, job_id)
    rerun = rerun_reason(task, record.status.details)
    if rerun:  # over for this attempt; the tracker terminates the rerun on release
        return Status(Phase.DONE, interrupted=True, lingering=True, reason=rerun)
    if state in ("preparing", "running"):
        return Status(Phase.RUNNING, details=sighting(task))
    return QUEUED


def completed_status(task: BatchTask, record: Submitted, job_id: str) -> Status:
    info = task.execution_info
    failure = info.failure_info if info else None
    exit_code = None if info is None or info.exit_code is None else int(info.exit_code)
    node = task.node_info.node_id if task.node_info else None
    details = {"batch_job": job_id, "batch_task": task.id, **({"batch_node": node} if node else {})}
    # the spec's exitCode: a task the service terminated (timeout) "may" show an OS-defined exit
    # code, so the time limit is judged before, and without, the exit code
    limit = record.attempt.resources.time_limit
    if info and failure and limit and not record.cancelled and reached_time_limit(info, limit):
        why = "ended by Azure Batch at maxWallClockTime"
        return Status(Phase.DONE, exit_code=exit_code, timed_out=True, reason=why, details=details)
    if exit_code is None:
        return Status(Phase.DONE, error=failure_text(task, record.attempt.image, job_id))
    reason = f"{failure.code}: {failure.message}" if failure else ""
    return Status(Phase.DONE, exit_code=exit_code, reason=reason, details=details)


def reached_time_limit(info: BatchTaskExecutionInfo, limit: int) -> bool:
    """The failed task's run time reached maxWallClockTime (or, without timestamps, the service
    ended it). The docs do not name the failure code of a task ended at its limit."""
    if info.start_time and info.end_time:  # 1 s for the two timestamps' rounding
        return (info.end_time - info.start_time).total_seconds() >= limit - 1
    return info.failure_info is not None and info.failure_info.code == "TaskEnded"


def failure_text(task: BatchTask, image: str, job_id: str) -> str:
    """One line for a task that never ran its command: image pull, container settings, ..."""
    failure = task.execution_info.failure_info if task.execution_info else None
    if failure is None:
        return (
            f"Azure Batch task {job_id}/{task.id} completed without an exit code or failure "
            "information"
        )
    values = {d.name: d.value for d in (failure.details or []) if d.name}
    cause = f": {values['Message']}" if values.get("Message") else ""
    if (failure.code or "").startswith("ContainerInvalidImage") or "ContainerImage" in values:
        return (
            f"Azure Batch could not start image {values.get('ContainerImage') or image} for task "
            f"{task.id} ({failure.code}: {failure.message}){cause}"
        )
    return (
        f"Azure Batch could not run task {task.id} "
        f"({failure.category} {failure.code}: {failure.message}){cause}"
    )
