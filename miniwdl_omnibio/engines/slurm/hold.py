"""Submissions sbatch refused because the user's queue is full, sent again as jobs end.

A QOS or an association may cap the jobs a user (an account, every user of a QOS) has pending
and running: MaxSubmitJobsPerUser, MaxSubmitJobs, GrpSubmitJobs (resource_limits.shtml), each
array element counting as a job. sbatch then refuses the job (slurm_status.SUBMIT_LIMITS): that
is back-pressure, not a failure. The refused attempts get a handle of their own (``held-N``),
report QUEUED, and go to Slurm in order as jobs end: after each attempt is released, and every
HOLD_RETRY seconds (the jobs of the user's other runs end too). New submissions queue behind them.
"""

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _

from .cluster import SlurmProblem, first_error_line
from .status import submit_refusal
from .translate import SlurmRequest

HOLD_RETRY = 30.0  # seconds between tries while nothing of this run ends


class SubmitLimit(SlurmProblem):
    """sbatch refused the job for a submit limit: ``limit`` names it ("" when Slurm did not)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


def sbatch_refusal(stderr: str) -> SlurmProblem:
    """sbatch's refusal as one line with every error it printed (the limit Slurm names comes on
    a line before "Batch job submission failed"); SubmitLimit for a full queue."""
    said = [line.split("error:", 1)[1].strip() for line in stderr.splitlines() if "error:" in line]
    message = f"omnibio_slurm: sbatch failed: {'; '.join(said) or first_error_line(stderr)}"[:400]
    limit = submit_refusal(stderr)
    return SubmitLimit(message, limit) if limit is not None else SlurmProblem(message)


@dataclass
class Held:
    """One refused attempt: its request, and its Slurm handle once sent."""

    handle: str
    request: SlurmRequest
    slurm: str = ""
    sent_at: float = 0.0
    error: str = ""  # sbatch refused it for another reason once it was its turn
    cancelled: bool = False


Send = Callable[[list[SlurmRequest]], list[str]]


class HeldSubmissions:
    def __init__(
        self,
        sbatch: Send,
        outstanding: Callable[[], int],
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        """``sbatch`` sends equal-option requests as one job or array and returns their handles,
        raising SubmitLimit for a full queue; ``outstanding()``: jobs of this run Slurm holds."""
        self._sbatch = sbatch
        self._outstanding = outstanding
        self._logger = logger
        self._clock = clock
        self._background = background
        self._cond = threading.Condition()
        self._entries: dict[str, Held] = {}  # every held handle until released
        self._queue: list[Held] = []  # those not sent yet, in order
        self._numbers = itertools.count(1)
        self._ended = 0  # attempts released since the last try
        self._limit = ""
        self._thread: threading.Thread | None = None
        self._stopped = False

    # --- submit ----------------------------------------------------------------------------

    def submit(self, requests: Sequence[SlurmRequest]) -> list[str]:
        """Handles for the requests: Slurm's for those sbatch took, ``held-N`` for the rest."""
        with self._cond:
            waiting = bool(self._queue)
        if waiting:  # behind those already held: keep the order, spare a refused sbatch
            return self._hold(list(requests))
        handles, rest, error = self._place(list(requests), len(requests))
        if error and not handles:
            raise error  # nothing went to Slurm: the submission fails with Slurm's words
        held = self._hold(rest, str(error) if error else "")
        return handles + held

    def _place(
        self, requests: list[SlurmRequest], size: int
    ) -> tuple[list[str], list[SlurmRequest], SlurmProblem | None]:
        """sbatch in order, at most ``size`` requests a job, halving the size each time Slurm
        refuses a chunk for a submit limit, until a chunk of one is refused. The handles of the
        requests sent, those left, and the refusal that stopped it if it was no submit limit."""
        handles: list[str] = []
        start = 0
        while start < len(requests):
            chunk = requests[start : start + max(1, size)]
            try:
                handles += self._sbatch(chunk)
            except SubmitLimit as exn:
                # guess: a refusal naming no limit is a full queue only while jobs of ours can end
                if len(chunk) == 1 and not exn.limit and not self._outstanding():
                    return handles, requests[start:], exn
                self._limit = exn.limit or self._limit
                if len(chunk) == 1:
                    break
                size = len(chunk) // 2
                continue
            except SlurmProblem as exn:
                return handles, requests[start:], exn
            start += len(chunk)
        return handles, requests[start:], None

    def _hold(self, requests: list[SlurmRequest], error: str = "") -> list[str]:
        if not requests:
            return []
        with self._cond:
            first = not self._queue
            if first:
                self._ended = 0  # releases before the queue filled opened no room since
            entries = [
                Held(f"held-{next(self._numbers)}", request, error=error) for request in requests
            ]
            for entry in entries:
                self._entries[entry.handle] = entry
                if not error:
                    self._queue.append(entry)
            held = len(self._queue)
            if self._queue and self._background and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="slurm-held", daemon=True)
                self._thread.start()
        if first and held:
            self._logger.log(
                NOTICE_LEVEL,
                _(
                    "omnibio_slurm: Slurm's submit limit is reached; holding submissions "
                    "until jobs end",
                    limit=self._limit or "(sbatch named none)",
                    held=held,
                ),
            )
        return [entry.handle for entry in entries]

    # --- sending held ones -----------------------------------------------------------------

    def resend(self, size: int) -> int:
        """One try: the held requests in order, ``size`` at most per sbatch at first (the number
        of jobs that ended: that much room). Returns how many went to Slurm."""
        with self._cond:
            queue = list(self._queue)
        sent, emptied = 0, False
        while queue:
            options = queue[0].request.options
            size_of_group = next(
                (i for i, e in enumerate(queue) if e.request.options != options), len(queue)
            )
            group = queue[:size_of_group]
            handles, rest, error = self._place([e.request for e in group], size)
            now = self._clock()
            with self._cond:
                for entry, handle in zip(group, handles, strict=False):
                    entry.slurm, entry.sent_at = handle, now
                    self._logger.info(
                        _("Slurm job", id=handle, held=entry.handle, run=entry.request.run_id)
                    )
                if error:  # this one's turn came, and Slurm refused it for another reason
                    group[len(handles)].error = str(error)
                    handles.append("")
                done = {id(e) for e in group[: len(handles)]}
                self._queue = [e for e in self._queue if id(e) not in done]
                sent += sum(1 for h in handles if h)
                emptied = not self._queue
            if rest and not error:
                break  # the queue is full again
            queue = queue[len(handles) :]
        if sent:
            self._logger.info(_("sbatch: held submissions sent", sent=sent, held=len(self._queue)))
            if emptied:
                self._logger.log(NOTICE_LEVEL, _("omnibio_slurm: no submission is held now"))
        return sent

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._ended or self._stopped or not self._queue, timeout=HOLD_RETRY
                )
                if self._stopped or not self._queue:
                    self._thread = None
                    return
                ended, self._ended = self._ended, 0
            try:
                self.resend(max(1, ended))
            except Exception as exn:  # a Slurm that does not answer: try again later
                self._logger.warning(
                    _("omnibio_slurm: sending held submissions failed", error=str(exn)[:300])
                )

    # --- the engine's questions ------------------------------------------------------------

    def get(self, handle: str) -> Held | None:
        with self._cond:
            return self._entries.get(handle)

    def slurm_handle(self, handle: str) -> str:
        """Slurm's handle for ``handle``: itself unless held; "" while held (or never sent)."""
        with self._cond:
            entry = self._entries.get(handle)
        return handle if entry is None else entry.slurm

    def limit(self) -> str:
        return self._limit

    def cancel(self, handle: str) -> bool:
        """Drop a held request that was not sent; False if it is no such request."""
        with self._cond:
            entry = self._entries.get(handle)
            if entry is None or entry.slurm:
                return False
            entry.cancelled = True
            self._queue = [e for e in self._queue if e is not entry]
            return True

    def release(self, handle: str) -> None:
        """The attempt is over: its job no longer counts, so room may have opened."""
        with self._cond:
            self._entries.pop(handle, None)
            self._ended += 1
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue = []
            self._cond.notify_all()
