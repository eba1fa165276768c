"""Pure pieces of omnibio_tes: the parts of a TES task an attempt decides, and the Status a TES
task's state and logs mean. No I/O here: unit-tested without a server."""

import posixpath
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import tes
from WDL import Error

from ...attempt import Mount, TaskAttempt
from ...placement.sharedfs import SharedFilesystem
from ...runtime.store import ObjectStore
from ..base import Phase, Status
from .staging import MINIWDL_INPUTS, StagePlan

STARTED_STATES = ("INITIALIZING", "RUNNING", "PAUSED", "CANCELING")
LOG_LINES = 5  # system log lines quoted in an error
STDERR_TAIL_CHARS = 2000
# The end of stderr the executor also writes to its own stderr, so a server's executor log
# carries it even where outputs of a failed task are not uploaded (TESK's taskmaster stops
# before its output filer when an executor fails).
STDERR_ECHO_BYTES = 65536


def merge_parameters(base: Mapping[str, str], override: Mapping[str, str]) -> dict[str, str]:
    """backend_parameters keys are case-insensitive (the spec; TES on Azure rejects two keys
    that differ only by case): a key of ``override`` replaces ``base``'s key of any case."""
    merged = dict(base)
    for key, value in override.items():
        for old in [k for k in merged if k.lower() == key.lower()]:
            del merged[old]
        merged[key] = value
    return merged


def gigabytes(size: int | None) -> float | None:
    """TES sizes are in GB; rounding up to the MB never grants less than asked."""
    if not size:
        return None
    return -(-size // 1_000_000) / 1000


def check_shared_mounts(mounts: Sequence[Mount], fs: SharedFilesystem) -> None:
    """On a shared filesystem every mount must be one the workers provide themselves: the
    filesystem at mount_path, and its read-only view at readonly_mount_path."""
    for mount in mounts:
        worker_path = fs.to_container(mount.host_path, read_only=mount.read_only)
        if mount.container_path != worker_path:
            raise Error.RuntimeError(
                f"omnibio_tes cannot mount {mount.host_path} at {mount.container_path}: TES "
                f"workers see the shared filesystem only at [omnibio_tes] mount_path "
                f"({fs.container_root}) and readonly_mount_path ({fs.readonly_root or 'unset'})"
            )


def staged_command(attempt: TaskAttempt, plan: StagePlan) -> list[str]:
    """The attempt's command, with around it: make each output's directory (poiesis fails a
    task whose output directory does not exist; Funnel makes them), then, whatever the command
    exits with, drop the input copies below the working directory (it is an output; the host
    has the inputs) and repeat the end of stderr on the executor's stderr."""
    stderr = next(o.container_path for o in plan.outputs if o.host_path == attempt.stderr_path)
    directories = sorted(
        {
            o.container_path if o.directory else posixpath.dirname(o.container_path)
            for o in plan.outputs
        }
    )
    inputs = shlex.quote(f"{attempt.workdir}/{MINIWDL_INPUTS}")
    script = (
        f"mkdir -p {shlex.join(directories)} 2>/dev/null; "
        f"({shlex.join(attempt.argv)}); rc=$?; rm -rf {inputs} 2>/dev/null; "
        f"tail -c {STDERR_ECHO_BYTES} {shlex.quote(stderr)} >&2 2>/dev/null; exit $rc"
    )
    return ["/bin/sh", "-c", script]


def making_directories(command: Sequence[str], paths: Sequence[str]) -> list[str]:
    """A staged command (``/bin/sh -c script``) that first makes ``paths``."""
    shell, flag, script = command
    return [shell, flag, f"mkdir -p {shlex.join(paths)} 2>/dev/null; {script}"]


def staged_outputs(plan: StagePlan, store: ObjectStore) -> list[tes.Output]:
    return [
        tes.Output(
            url=store.url(output.key),
            path=output.container_path,
            type="DIRECTORY" if output.directory else "FILE",
            name=output.key.rsplit("/", 1)[-1],
        )
        for output in plan.outputs
    ]


def task_status(task: Mapping[str, Any], cancelled: bool) -> Status:
    """The Status of a TES task as the server shows it (any view; FULL for the logs)."""
    state = str(task.get("state") or "UNKNOWN").upper()
    if state in ("UNKNOWN", "QUEUED"):
        return Status(Phase.QUEUED, reason=state)
    if state in STARTED_STATES:
        return Status(Phase.RUNNING, reason=state)
    logs = task.get("logs")
    log = logs[-1] if isinstance(logs, list) and logs and isinstance(logs[-1], dict) else {}
    executor_logs = [e for e in log.get("logs") or [] if isinstance(e, dict)]
    exit_code = next(
        (e["exit_code"] for e in reversed(executor_logs) if isinstance(e.get("exit_code"), int)),
        None,
    )
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
        return Status(
            Phase.DONE, error=f"{where} ended in EXECUTOR_ERROR without an exit code: {said}"
        )
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
    for log in executor_logs:
        try:
            start = datetime.fromisoformat(str(log["start_time"]).replace("Z", "+00:00"))
            end = datetime.fromisoformat(str(log["end_time"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return {"usage": {"source": "TES: no executor timings"}}
        seconds += max(0.0, (end - start).total_seconds())
    if not executor_logs:
        return {"usage": {"source": "TES: no executor timings"}}
    return {"usage": {"source": "TES executor timings only", "executor_seconds": seconds}}


def supported_backend_parameters(info: Mapping[str, Any]) -> list[str]:
    """service-info's tesResources_backend_parameters, whatever the case of its name."""
    for key, value in info.items():
        if key.replace("_", "").lower() == "tesresourcesbackendparameters":
            return [str(v) for v in value] if isinstance(value, list) else []
    return []
