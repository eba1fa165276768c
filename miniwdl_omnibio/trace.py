"""The run's trace: one row per task attempt, written to its run directory as each attempt ends.

``omnibio_trace.tsv`` gets a line at each end, so a run that crashes keeps every attempt that
ended; ``omnibio_trace.json`` holds the same rows with their types and is rewritten whole and
atomically, at most once per ``JSON_SECONDS`` and at exit. Many task threads end attempts at once
and sub-workflows share the top run directory: one ``TraceFile`` per directory, under a lock.
"""

import csv
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from WDL._util import NOTICE_LEVEL, write_atomic
from WDL._util import StructuredLogMessage as _
from WDL.runtime.error import Terminated

from .attempt import TaskAttempt
from .engines.base import Status

TSV, JSON = "omnibio_trace.tsv", "omnibio_trace.json"
JSON_SECONDS = 1.0  # the JSON copy lags the TSV by at most this while the run goes on
VERSION = 1

# the endings of an attempt, in the trace's words
OK, FAILED, OOM, TIME_LIMIT, INTERRUPTED, CANCELLED = (
    "ok",
    "failed",
    "oom",
    "time limit",
    "interrupted",
    "cancelled",
)
ENDINGS = (OK, FAILED, OOM, TIME_LIMIT, INTERRUPTED, CANCELLED)
NOT_MEASURED = "not measured"

# every column, in order, with its type in the JSON (the TSV writes null as an empty field)
FIELDS: dict[str, type] = {
    "call": str,  # call path below the run, e.g. call-sub/call-align-3
    "task": str,
    "attempt": int,
    "backend": str,  # the container backend, e.g. omnibio_docker
    "handle": str,  # the service's id of the attempt (container id, job id ...)
    "run_id": str,
    "submitted": str,  # UTC, ISO 8601
    "started": str,
    "ended": str,
    "queued_seconds": float,
    "running_seconds": float,
    "exit_code": int,
    "ending": str,  # one of ENDINGS
    "reason": str,  # the service's own words, or the error that ended the attempt
    "cpu": int,  # requested
    "memory": int,  # requested, bytes
    "peak_memory": int,  # measured, bytes
    "cpu_seconds": float,  # measured
    "usage": str,  # how usage was measured, or NOT_MEASURED
    "image": str,  # as the task names it
    "image_id": str,  # the image the service ran, where known
    "verified": bool,  # results.json verified the attempt; null: not checked
}


def utc(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def ending(status: Status | None, raised: BaseException | None, exit_ok: bool) -> str:
    """How the attempt ended: the service's typed facts first, then what the lifecycle raised."""
    if isinstance(raised, Terminated) or (raised and not isinstance(raised, Exception)):
        return CANCELLED  # Ctrl-C, SIGTERM, fail_fast
    if status is not None:
        if status.interrupted:
            return INTERRUPTED
        if status.timed_out:
            return TIME_LIMIT
        if status.oom:
            return OOM
    return OK if raised is None and exit_ok else FAILED


def attempt_row(
    attempt: TaskAttempt,
    *,
    task: str,
    backend: str,
    handle: str | None,
    times: tuple[float, float | None, float | None],
    status: Status | None,
    end: str,
    reason: str | None,
    verified: bool | None,
) -> dict[str, Any]:
    """One row of the trace. ``times``: submitted, started, ended (seconds since the epoch)."""
    submitted, started, ended = times
    resources = attempt.resources
    # what the engine measured (jobscript's record: details["usage"]), where it did
    usage = (status.details.get("usage") if status else None) or {}
    return {
        "call": attempt.call,
        "task": task,
        "attempt": attempt.attempt,
        "backend": backend,
        "handle": handle,
        "run_id": attempt.run_id,
        "submitted": utc(submitted),
        "started": utc(started),
        "ended": utc(ended),
        "queued_seconds": _seconds((started if started is not None else ended), submitted),
        "running_seconds": _seconds(ended, started),
        "exit_code": status.exit_code if status else None,
        "ending": end,
        "reason": reason or (status.reason if status else None) or None,
        "cpu": resources.cpu,
        "memory": resources.memory_limit or resources.memory_reservation or None,
        "peak_memory": usage.get("memory_peak"),
        "cpu_seconds": usage.get("cpu_seconds"),
        "usage": usage.get("source", NOT_MEASURED),
        "image": attempt.image,
        "image_id": (status.details.get("image_id") if status else None) or None,
        "verified": verified,
    }


def _seconds(end: float | None, start: float | None) -> float | None:
    return None if end is None or start is None else round(max(0.0, end - start), 3)


def _tsv_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def _typed(name: str, text: str) -> Any:
    if text == "":
        return None
    kind = FIELDS[name]
    if kind is bool:
        return text == "true"
    return kind(text)


class TraceFile:
    """One run directory's trace, written by every task thread of this process."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._json_at = 0.0  # time.monotonic() of the last JSON write
        self._timer: threading.Timer | None = None

    def add(self, row: Mapping[str, Any]) -> None:
        with self._lock:
            first = not self.rows
            self.rows.append(dict(row))
            with open(os.path.join(self.run_dir, TSV), "w" if first else "a") as outfile:
                if first:
                    outfile.write("\t".join(FIELDS) + "\n")
                outfile.write("\t".join(_tsv_field(row.get(name)) for name in FIELDS) + "\n")
            wait = self._json_at + JSON_SECONDS - time.monotonic()
            if wait <= 0:
                self._write_json()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Bring the JSON up to the TSV (the timer, and at exit)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._write_json()

    def _write_json(self) -> None:
        self._timer = None
        self._json_at = time.monotonic()
        document = {
            "version": VERSION,
            "run": os.path.basename(self.run_dir.rstrip("/")),
            "fields": list(FIELDS),
            "attempts": self.rows,
        }
        write_atomic(json.dumps(document, indent=1), os.path.join(self.run_dir, JSON), end="\n")


class Traces:
    """Every run directory this process traces, and the endings so far (for progress lines)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, TraceFile] = {}
        self._endings: Counter[str] = Counter()

    def add(self, run_dir: str, row: Mapping[str, Any]) -> None:
        with self._lock:
            trace = self._files.setdefault(run_dir, TraceFile(run_dir))
            self._endings[row["ending"]] += 1
        trace.add(row)

    def endings(self) -> Counter[str]:
        with self._lock:
            return Counter(self._endings)

    def flush(self) -> list[str]:
        """Write every JSON copy up to date; returns the run directories traced."""
        with self._lock:
            files = list(self._files.values())
        for trace in files:
            trace.flush()
        return [trace.run_dir for trace in files]


def read_trace(run_dir: str) -> list[dict[str, Any]]:
    """The rows of a run's trace, typed as in the JSON. Read from the TSV: it is complete even
    when the run crashed before the JSON caught up."""
    path = os.path.join(run_dir, TSV)
    with open(path, newline="") as infile:
        reader = csv.DictReader(infile, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [{name: _typed(name, row.get(name) or "") for name in FIELDS} for row in reader]


class Progress:
    """Every ``seconds``, one log line: attempts queued, running, done of total, failed, retried."""

    def __init__(
        self,
        logger: logging.Logger,
        seconds: float,
        counts: Callable[[], Mapping[str, int]],
        endings: Callable[[], Counter[str]],
    ) -> None:
        self._logger = logger
        self._seconds = seconds
        self._counts = counts
        self._endings = endings

    def start(self) -> None:
        threading.Thread(target=self._loop, name="omnibio-progress", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self._seconds)
            self.log_once()

    def line(self) -> dict[str, int] | None:
        """The figures of one line; None before the first attempt is submitted."""
        counts, endings = self._counts(), self._endings()
        if not counts["submitted"]:
            return None
        done = sum(endings.values())
        return {
            "queued": counts["queued"],
            "running": counts["running"],
            "done": done,
            "total": counts["submitted"],
            "failed": endings[FAILED] + endings[OOM] + endings[TIME_LIMIT],
            "retried": counts["retried"],
        }

    def log_once(self) -> None:
        figures = self.line()
        if figures is not None:
            self._logger.log(NOTICE_LEVEL, _("omnibio progress", **figures))
