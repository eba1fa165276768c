"""Pure mapping of a TES v1.1 task, as a server shows it in any view (FULL for the logs), to
Status. Nothing here sends a request: unit-tested without a server."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..base import Phase, Status

STARTED_STATES = ("INITIALIZING", "RUNNING", "PAUSED", "CANCELING")
ACTIVE_STATES = ("UNKNOWN", "QUEUED", *STARTED_STATES)  # the task has not ended
# Listed every poll, one call each, in the order a task goes through them (a task moving on
# between two calls shows in a later one); a task of ours in none of them is fetched alone.
LISTED_STATES = ("QUEUED", "INITIALIZING", "RUNNING")
LOG_LINES = 5  # system log lines quoted in an error
STDERR_TAIL_CHARS = 2000


def state_of(task: Mapping[str, Any]) -> str:
    return str(task.get("state") or "UNKNOWN").upper()


def task_status(task: Mapping[str, Any], cancelled: bool) -> Status:
    """The Status of a TES task; ``cancelled``: this process asked the server to stop it."""
    state = state_of(task)
    if state in ACTIVE_STATES:
        return Status(Phase.RUNNING if state in STARTED_STATES else Phase.QUEUED, reason=state)
    logs = task.get("logs")
    log = logs[-1] if isinstance(logs, list) and logs and isinstance(logs[-1], dict) else {}
    executor_logs = [e for e in log.get("logs") or [] if isinstance(e, dict)]
    codes = [e["exit_code"] for e in executor_logs if isinstance(e.get("exit_code"), int)]
    exit_code = codes[-1] if codes else None
    system_logs = [
        " ".join(str(line).split()) for line in log.get("system_logs") or [] if str(line).strip()
    ]
    said = "; ".join(system_logs[-LOG_LINES:]) or "no system logs"
    where = f"TES task {task.get('id')} ({task.get('name') or 'unnamed'})"
    usage = executor_usage(executor_logs)
    if state == "COMPLETE":
        return Status(Phase.DONE, exit_code=exit_code or 0, reason=state, details=usage)
    if state == "EXECUTOR_ERROR" and exit_code is not None:
        details: dict[str, Any] = {"tes_task": task.get("id"), "tes_state": state, **usage}
        # TESK's executor log has no stderr: the pod's log (both streams) is its stdout
        # (TesServiceImpl.getTask, FULL view); the command writes nothing else there
        last = executor_logs[-1]
        stderr = str(last.get("stderr") or "") or str(last.get("stdout") or "")
        if stderr.strip():
            details["tes_stderr_tail"] = stderr[-STDERR_TAIL_CHARS:]
        if system_logs:
            details["tes_system_logs"] = system_logs[-LOG_LINES:]
        return Status(Phase.DONE, exit_code=exit_code, reason=state, details=details)
    if state == "EXECUTOR_ERROR":
        return Status(Phase.DONE, error=f"{where} ended in {state} without an exit code: {said}")
    if state == "PREEMPTED":
        return Status(Phase.DONE, interrupted=True, reason=f"{where} was PREEMPTED: {said}")
    if state == "CANCELED" and cancelled:
        return Status(Phase.DONE, error=f"{where} was canceled", reason=state)
    if state == "CANCELED":
        return Status(
            Phase.DONE, error=f"the TES server canceled {where}; this run did not: {said}"
        )
    return Status(Phase.DONE, error=f"{where} ended in {state}: {said}", reason=state)


def executor_usage(executor_logs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What TES tells of an attempt's usage: its executors' timings (tesExecutorLog start_time,
    end_time, RFC 3339), no memory or CPU figure; the trace says so."""
    seconds = 0.0
    try:
        for log in executor_logs:
            start = datetime.fromisoformat(str(log["start_time"]).replace("Z", "+00:00"))
            end = datetime.fromisoformat(str(log["end_time"]).replace("Z", "+00:00"))
            seconds += max(0.0, (end - start).total_seconds())
    except (KeyError, ValueError):
        executor_logs = []
    if not executor_logs:
        return {"usage": {"source": "TES: no executor timings"}}
    return {"usage": {"source": "TES executor timings only", "executor_seconds": seconds}}
