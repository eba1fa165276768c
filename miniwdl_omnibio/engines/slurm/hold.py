"""Submissions sbatch refused because the user's queue is full, sent again as jobs end.

A QOS or an association may cap the jobs a user (an account, every user of a QOS) has pending
and running: MaxSubmitJobsPerUser, MaxSubmitJobs, GrpSubmitJobs (resource_limits.shtml), each
array element counting as a job. sbatch then refuses the job (status.SUBMIT_LIMITS): that is
back-pressure, not a failure. The refused attempts get a handle of their own (``held-N``) and
their ``Held`` as the record's memo, report QUEUED, and go to Slurm in order, one job at a time
until Slurm refuses one again: at once, then each time attempts end and every HOLD_RETRY seconds
(the jobs of the user's other runs end too). New submissions queue behind them.
"""

import itertools
import logging
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _

from ...retrying import retry
from ..base import Accepted, Submitted
from .cluster import SlurmProblem, first_error_line
from .translate import SlurmRequest

HOLD_RETRY = 30.0  # seconds between tries while nothing of this run ends
# sbatch refused because the queue of the user (association, account, QOS) is full: slurmctld's
# _job_create (src/slurmctld/job_mgr.c) answers ESLURM_ACCOUNTING_POLICY with the reason as the
# message, which sbatch prints as "sbatch: error: <reason>" (_unpack_return_code2_msg,
# src/common/slurm_protocol_pack.c) before "Batch job submission failed: <strerror>". These are
# the reasons acct_policy_validate() gives for the submit counts (src/slurmctld/acct_policy.c),
# which count each element of an array.
SUBMIT_LIMITS = frozenset(
    {
        "QOSMaxSubmitJobPerUserLimit",  # MaxSubmitJobsPerUser of the QOS
        "AssocMaxSubmitJobLimit",  # MaxSubmitJobs of the user's association
        "QOSGrpSubmitJobsLimit",  # GrpSubmitJobs of the QOS
        "AssocGrpSubmitJobsLimit",  # GrpSubmitJobs of an association
        "MaxSubmitJobsPerAccount",  # MaxSubmitJobsPerAccount of the QOS
    }
)
# ESLURM_ACCOUNTING_POLICY's text (src/common/slurm_errno.c), the same for every limit
ACCOUNTING_POLICY = "Job violates accounting/QOS policy"


class SubmitLimit(SlurmProblem):
    """sbatch refused the job for a submit limit: ``limit`` names it ("" when Slurm did not)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class NotYet(Exception):
    """What a retry loop waits for has not happened: the queue is full again, the probe job has
    not ended."""


def sbatch_refusal(stderr: str) -> SlurmProblem:
    """sbatch's refusal as one line with every error it printed. SubmitLimit when the user's
    queue is full (the refused jobs can go in once jobs end): its ``limit`` is the one Slurm
    named on a line before "Batch job submission failed", "" when sbatch gave only
    ESLURM_ACCOUNTING_POLICY's text (a job_submit plugin's refusal, or a Slurm that sends no
    reason)."""
    said = [line.split("error:", 1)[1].strip() for line in stderr.splitlines() if "error:" in line]
    message = f"omnibio_slurm: sbatch failed: {'; '.join(said) or first_error_line(stderr)}"[:400]
    named = [reason for reason in said if ACCOUNTING_POLICY not in reason]
    limit = next((name for name in named if name in SUBMIT_LIMITS), None if named else "")
    if ACCOUNTING_POLICY in stderr and limit is not None:
        return SubmitLimit(message, limit)
    return SlurmProblem(message)


@dataclass(eq=False)
class Held:
    """One refused attempt, its record's memo: its request, and its Slurm handle once sent."""

    handle: str
    request: SlurmRequest
    slurm: str = ""
    error: str = ""  # sbatch refused it for another reason once it was its turn
    cancelled: bool = False


def slurm_handle(record: Submitted) -> str:
    """Slurm's handle of the record's job: the record's own, unless held ("" until sent)."""
    return record.memo.slurm if isinstance(record.memo, Held) else record.handle


@dataclass(eq=False)
class HeldSubmissions:
    """``sbatch`` sends equal-option requests as one job or array and returns their handles,
    raising SubmitLimit for a full queue. ``background``: a thread sends the held requests (tests
    call ``resend``)."""

    sbatch: Callable[[Sequence[SlurmRequest]], list[str]]
    logger: logging.Logger
    background: bool = True
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _queue: list[Held] = field(default_factory=list)  # held and not sent yet, in order
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _ended: int = 0  # attempts released since the last try
    _sent: int = 0  # jobs of this run Slurm holds: sent, not released
    _limit: str = ""
    _thread: threading.Thread | None = None
    _stopped: bool = False

    def submit(self, requests: Sequence[SlurmRequest]) -> list[Accepted]:
        """The requests as Slurm took them (one sbatch), or all held behind those held already
        or for a submit limit; raises any other refusal."""
        with self._cond:
            waiting = bool(self._queue)
        if not waiting:  # else keep the order, and spare Slurm a refused sbatch
            try:
                handles = self.sbatch(requests)
            except SubmitLimit as exn:
                if not self._full(exn):
                    raise
            else:
                with self._cond:
                    self._sent += len(handles)
                return [Accepted(handle) for handle in handles]
        entries = [Held(f"held-{next(self._numbers)}", request) for request in requests]
        with self._cond:
            first, self._queue = not self._queue, self._queue + entries
            if first:
                self._ended = 0  # releases before the queue filled opened no room since
            if self.background and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="slurm-held", daemon=True)
                self._thread.start()
        if first:
            self.logger.log(
                NOTICE_LEVEL,
                _(
                    "omnibio_slurm: Slurm's submit limit is reached; holding submissions "
                    "until jobs end",
                    limit=self._limit or "(sbatch named none)",
                    held=len(entries),
                ),
            )
        return [Accepted(entry.handle, entry) for entry in entries]

    def _full(self, refusal: SubmitLimit) -> bool:
        """A guess for a refusal naming no limit: a full queue only while jobs of ours can end."""
        self._limit = refusal.limit or self._limit
        return bool(refusal.limit or self._sent)

    def resend(self) -> int:
        """One try: the held requests in order, one job each, until Slurm refuses one for the
        limit. Returns how many went to Slurm."""
        sent = 0
        while True:
            with self._cond:
                if not self._queue:
                    break
                entry = self._queue[0]
            try:
                [entry.slurm] = self.sbatch([entry.request])
            except SlurmProblem as exn:  # the queue is full again, or Slurm refused it for another
                if isinstance(exn, SubmitLimit) and self._full(exn):  # reason when its turn came
                    break
                entry.error = str(exn)
            with self._cond:
                self._queue = [e for e in self._queue if e is not entry]
                self._sent += bool(entry.slurm)
                emptied = not self._queue
            if entry.slurm:
                sent += 1
                self.logger.info(_("Slurm job", id=entry.slurm, held=entry.handle))
            if emptied:
                self.logger.log(NOTICE_LEVEL, _("omnibio_slurm: no submission is held now"))
        return sent

    def _loop(self) -> None:
        """Try at once, again each time attempts end and at least every HOLD_RETRY seconds,
        until none is held: retrying.retry with a pause an ended attempt cuts short."""
        retry(self._try, self._verdict, sys.maxsize, self._pause, HOLD_RETRY)

    def _try(self) -> None:
        with self._cond:
            self._ended = 0
        self.resend()
        with self._cond:
            if self._queue and not self._stopped:
                raise NotYet
            self._thread = None

    def _verdict(self, exn: Exception) -> float:
        if not isinstance(exn, NotYet):  # a Slurm that does not answer: try again later
            self.logger.warning(
                _("omnibio_slurm: sending held submissions failed", error=str(exn)[:300])
            )
        return HOLD_RETRY

    def _pause(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._ended or self._stopped or not self._queue, timeout=seconds
            )

    def cancel(self, entry: Held) -> bool:
        """Drop a held request that was not sent; False if it was."""
        with self._cond:
            if entry.slurm:
                return False
            entry.cancelled = True
            self._queue = [e for e in self._queue if e is not entry]
            return True

    def release(self, record: Submitted) -> None:
        """The attempt is over: its job no longer counts, so room may have opened."""
        with self._cond:
            self._ended += 1
            self._sent -= bool(slurm_handle(record))
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue = []
            self._cond.notify_all()
