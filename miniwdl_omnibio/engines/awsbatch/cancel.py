"""Stopping jobs in as few TerminateJob calls as Batch allows.

``cancel`` returns at once; the handles cancelled close together (Ctrl-C, SIGTERM and fail_fast
reach every task thread within a round) go out together (gathering.Cancellations):

- an array whose open children (submitted, not yet released) are all cancelled: one TerminateJob
  of its parent. Batch applies a cancellation of an array parent to its children (API_CancelJob:
  "When you try to cancel an array parent job in PENDING, AWS Batch attempts to cancel all child
  jobs"), and Nextflow terminates an array by its parent's id (AwsBatchTaskHandler.killTask,
  normaliseJobId);
- any other child: by its own id (``<parent>:<index>``), once DescribeJobs lists it. Batch may
  not list a job right after it accepted it (Netflix/metaflow#543: DescribeJobs answered nothing
  for a job just submitted), and TerminateJob of an id it does not know either fails
  (API_TerminateJob: ClientException for "an identifier that's not valid") or, as moto does,
  does nothing; so a child not listed is asked about again every CHILD_RETRY seconds until it is
  listed or its parent has ended, at most CHILD_TRIES times;
- a plain job: by its id.
"""

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from WDL._util import StructuredLogMessage as _

from ...gathering import Cancellations
from .status import error_text

REASON = "cancelled by miniwdl (omnibio_awsbatch)"
CANCEL_LINGER = 1.5  # seconds without a new cancellation (outlasts container.ROUND_SECONDS)
CANCEL_MAX = 10.0  # ... and at most this long after the first
CHILD_RETRY = 2.0  # seconds between two DescribeJobs for a child Batch does not list yet
CHILD_TRIES = 15  # DescribeJobs for a child not listed, at most (30 s)
ENDED = ("SUCCEEDED", "FAILED")


def parent_of(handle: str) -> str | None:
    """The array parent of a child's handle (``<parent>:<index>``); None for a plain job."""
    return handle.split(":")[0] if ":" in handle else None


class Terminator:
    """TerminateJob for the handles cancel() gathers; see the module docstring."""

    def __init__(
        self,
        batch: Any,
        describe: Callable[[list[str]], list[dict[str, Any]]],
        logger: logging.Logger,
        linger: float = CANCEL_LINGER,
        child_retry: float = CHILD_RETRY,
        child_tries: int = CHILD_TRIES,
    ) -> None:
        self.batch = batch
        self._describe = describe
        self._logger = logger
        self._child_retry = child_retry
        self._child_tries = child_tries
        self._lock = threading.Lock()
        self._open: dict[str, set[str]] = {}  # array parent -> children not yet released
        self._ended: set[str] = set()  # array parents terminated: their children with them
        self._loggers: dict[str, logging.Logger] = {}  # cancelled, not yet sent
        self._gathered = Cancellations(self._send, linger, max(linger, CANCEL_MAX))

    def track(self, parent: str, children: Sequence[str]) -> None:
        with self._lock:
            self._open[parent] = set(children)

    def release(self, handle: str) -> None:
        """The attempt is over: its child no longer keeps its array's parent alive."""
        parent = parent_of(handle)
        with self._lock:
            if parent in self._open:
                self._open[parent].discard(handle)

    def cancel(self, handle: str, logger: logging.Logger) -> None:
        with self._lock:
            self._loggers[handle] = logger
        self._gathered.add(handle)

    def flush(self) -> None:
        """At shutdown: send what is still gathering, and wait for it."""
        self._gathered.flush()

    # --- sending ---------------------------------------------------------------------------

    def _send(self, handles: list[str]) -> None:
        plain: list[str] = []
        children: dict[str, list[str]] = {}
        for handle in dict.fromkeys(handles):
            parent = parent_of(handle)
            if parent is None:
                plain.append(handle)
            else:
                children.setdefault(parent, []).append(handle)
        with self._lock:
            loggers = {h: self._loggers.pop(h, self._logger) for h in handles}
            children = {p: c for p, c in children.items() if p not in self._ended}
            whole = [p for p, c in children.items() if not self._open.get(p, set()) - set(c)]
            for parent in whole:
                self._open.pop(parent, None)
                self._ended.add(parent)
            singles = [h for p, c in children.items() if p not in whole for h in c]
        for parent in whole:
            self._terminate(parent, [(h, loggers[h]) for h in children[parent]])
        for handle in plain:
            self._terminate(handle, [(handle, loggers[handle])])
        if singles:
            self._terminate_children({h: loggers[h] for h in singles})

    def _terminate_children(self, loggers: dict[str, logging.Logger]) -> None:
        """Each child once Batch lists it; none whose parent has ended; CHILD_TRIES at most."""
        waiting = list(loggers)
        for tries in range(1, self._child_tries + 1):
            parents = sorted({str(parent_of(h)) for h in waiting})
            try:
                listed = {j["jobId"]: j for j in self._describe(waiting + parents)}
            except Exception as exn:
                listed = {}
                self._logger.warning(_("AWS Batch DescribeJobs failed", error=error_text(exn)))
            later = []
            for handle in waiting:
                job = listed.get(handle)
                parent = listed.get(str(parent_of(handle)), {})
                if job is not None:
                    if job.get("status") not in ENDED:
                        self._terminate(handle, [(handle, loggers[handle])])
                elif parent.get("status") not in ENDED:
                    later.append(handle)
            waiting = later
            if not waiting or tries == self._child_tries:
                break
            time.sleep(self._child_retry)
        for handle in waiting:
            loggers[handle].warning(
                _(
                    "AWS Batch does not list the array child; it was not terminated",
                    id=handle,
                    asked=self._child_tries,
                )
            )

    def _terminate(self, job_id: str, handles: list[tuple[str, logging.Logger]]) -> None:
        """One TerminateJob; each handle it stops says so in its task's log."""
        try:
            self.batch.terminate_job(jobId=job_id, reason=REASON)
        except Exception as exn:
            for handle, logger in handles:
                logger.warning(
                    _("AWS Batch TerminateJob failed", id=handle, job=job_id, error=error_text(exn))
                )
            return
        for handle, logger in handles:
            logger.info(_("AWS Batch job terminated", id=handle, by=job_id))
