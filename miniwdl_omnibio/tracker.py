"""The one tracker every engine shares: which attempts are out, what the service says of them.

Task threads submit through it and wait on it; one thread asks the engine about every
outstanding attempt at once (``Engine.fetch``), so a thousand running tasks cost one poll per
period, not a thousand. The tracker owns, once for every engine: each attempt's record (the
engine's request and memo included), submissions and cancellations gathered into bursts, the
groups the service took as one (an array job: cancel_many learns which it may stop whole),
submissions held while the service's queue is full (``holding.py``), the two speeds of polling
(a cheap look every poll_seconds, a full one every sweep_seconds), the period for a handle the
service does not list (yet), client-side deadlines for services without a time limit, backoff on
failing polls, release (cancel if not finished), shutdown, one log line per state change in the
service's own words, and the times and counts the run's trace and progress lines are made of.

An engine that learns of an attempt's end sooner (``Engine.on_wake``) wakes the tracker, which
then fetches that handle at once (with the full look if the engine asks); polling stays the
safety net.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _

from .attempt import TaskAttempt
from .engines.base import Accepted, Engine, Phase, Status, Submission, Submitted
from .gathering import Cancellations, Gathering, Waiting
from .holding import Held, Holding

MAX_BACKOFF = 60.0  # seconds between polls at most while the service keeps failing
MAX_POLL_FAILURES = 20  # consecutive failed polls before the outstanding attempts fail
EARLY_WAKE_SECONDS = 60.0  # how long a wake for a handle not (yet) registered is kept
# a burst's cancellations go out at most this many lingers (cancel_gather_seconds) after its
# first: a Ctrl-C reaches every task thread within a round, so a few lingers hold them all
CANCEL_LINGERS_AT_MOST = 4


@dataclass(frozen=True)
class Outcome:
    """An attempt as the trace records it: its last status and when it was submitted, first seen
    running and seen done, in seconds since the epoch (None: not yet)."""

    status: Status
    submitted: float
    started: float | None
    ended: float | None


class Tracker:
    def __init__(
        self,
        engine: Engine[Any],
        logger: logging.Logger,
        unlisted_grace: float,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        """``background``: poll, and offer held submissions again, from threads of their own
        (tests call ``poll_once`` and ``resend_held`` instead)."""
        self.engine = engine
        self.unlisted_grace = unlisted_grace
        self._logger = logger
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, Submitted] = {}
        self._done: dict[str, threading.Event] = {}
        self._background = background
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._ended_at: dict[str, float] = {}  # handle -> clock() when first seen done
        self._held_at: dict[str, float] = {}  # handle -> clock() when held, for a held attempt
        self._groups: dict[str, set[str]] = {}  # group -> its open members (accepted, not released)
        self._stopped: set[str] = set()  # groups cancelled whole, until their members are released
        self._submitted = 0  # attempts submitted by this process
        self._retries = 0  # ... of which a second or later attempt of their task
        # handle -> when the engine woke the tracker for it, and whether it wants the full look
        self._woken: dict[str, tuple[float, bool]] = {}
        self._wakeup = threading.Event()
        self._next_round = float("-inf")  # when poll_once is due (clock time)
        self._next_sweep = float("-inf")  # when the next full fetch is due
        self._limits: frozenset[str] = frozenset()  # the service limits attempts wait at
        self._holding = Holding(engine, logger, background)
        self._submissions: Gathering[Submission[Any], Accepted | Held] = Gathering(
            self._send_submissions, engine.gather_seconds, engine.gather_max_seconds
        )
        self._cancellations: Cancellations[Submitted] = Cancellations(
            self._send_cancellations,
            engine.cancel_gather_seconds,
            CANCEL_LINGERS_AT_MOST * engine.cancel_gather_seconds,
            clock,
            background,
        )
        engine.on_wake(self.wake)

    # --- task threads ----------------------------------------------------------------------

    def submit(
        self,
        attempt: TaskAttempt,
        request: Any,
        logger: logging.Logger,
        terminating: Callable[[], bool] = lambda: False,
    ) -> str:
        """Hand the attempt to the engine (with the others of its burst, if the engine gathers);
        raises the service's refusal. While the service's queue is full the attempt is held
        (queued) and this waits until the engine accepts it, or raises Terminated once
        ``terminating()``: the attempt never reached the service."""
        submission = Submission(attempt, request, logger)
        accepted: Accepted | Held | Exception | None
        if self.engine.gather_seconds > 0:
            accepted = self._submissions.add(submission)
        else:
            (accepted,) = self._holding.offer([submission])
        if isinstance(accepted, Exception):
            raise accepted
        held_at = None
        if isinstance(accepted, Waiting):
            held_at = self._clock()
            logger.info(_("held: the service's queue is full", engine=self.engine.section))
            accepted = self._holding.wait(accepted, terminating)
        assert accepted is not None
        handle = accepted.handle
        with self._lock:
            if held_at is not None:  # the trace counts the hold as queued
                self._held_at[handle] = held_at
            self._join(accepted)
            self._records[handle] = Submitted(
                handle, attempt, logger, self._clock(), request, accepted.memo, accepted.group
            )
            self._done[handle] = threading.Event()
            self._submitted += 1
            self._retries += attempt.attempt > 1
            if handle in self._woken:  # it ended before submit returned: fetch it now
                self._wakeup.set()
            if self._background and self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"{self.engine.section}-tracker", daemon=True
                )
                self._thread.start()
        logger.info(_("submitted", engine=self.engine.section, handle=handle))
        return handle

    def _send_submissions(self, group: list[Waiting[Submission[Any], Accepted | Held]]) -> None:
        answers = self._holding.offer([waiting.item for waiting in group])
        with self._lock:  # every member, before any task thread can cancel its own
            for answer in answers:
                if isinstance(answer, Accepted):
                    self._join(answer)
        for waiting, answer in zip(group, answers, strict=True):
            if isinstance(answer, Exception):
                waiting.finish(error=answer)
            else:
                waiting.finish(answer)

    def _join(self, accepted: Accepted) -> None:
        """Count the attempt among the open members of its group (under the lock)."""
        if accepted.group is not None:
            self._groups.setdefault(accepted.group, set()).add(accepted.handle)

    def _leave(self, record: Submitted) -> None:
        """The attempt is no longer an open member of its group (under the lock)."""
        group = record.group
        if group is None or group not in self._groups:
            return
        self._groups[group].discard(record.handle)
        if not self._groups[group]:
            del self._groups[group]
            self._stopped.discard(group)

    def resend_held(self) -> int:
        """Offer the held submissions again now (the background thread does this on its own);
        returns how many the engine accepted."""
        return self._holding.resend()

    def wait(self, handle: str, timeout: float) -> Status:
        """The attempt's status, after waiting up to ``timeout`` seconds for it to finish."""
        with self._lock:
            done = self._done[handle]
        done.wait(timeout)
        with self._lock:
            return self._records[handle].status

    def cancel(self, handle: str, logger: logging.Logger) -> None:
        """Stop the attempt (Ctrl-C, SIGTERM, fail_fast); a second call does nothing."""
        with self._lock:
            record = self._records.get(handle)
            if record is None or record.cancelled:
                return
            record.cancelled = True
        logger.warning(_("cancelling", engine=self.engine.section, handle=handle))
        if self.engine.cancel_gather_seconds > 0:
            self._cancellations.add(record)
        else:
            self._send_cancellations([record])

    def _send_cancellations(self, records: list[Submitted]) -> None:
        """One cancel_many, told which groups the records cover whole: they hold every open
        member (on Ctrl-C each task thread releases its attempt right after cancelling it, so by
        now most groups have none left), and none was cancelled whole before."""
        handles = {record.handle for record in records}
        groups = {record.group for record in records if record.group is not None}
        with self._lock:
            whole = frozenset(
                g for g in groups - self._stopped if self._groups.get(g, set()) <= handles
            )
            # a group with no open member left is in no later batch: nothing to remember
            self._stopped |= whole & self._groups.keys()
        try:
            self.engine.cancel_many(records, whole, self._logger)
        except Exception as exn:  # must not happen; the attempts end by their deadline or exit
            self._logger.error(_("cancel failed", engine=self.engine.section, error=str(exn)[:300]))

    def collect(self, handle: str, status: Status, logger: logging.Logger) -> None:
        """The attempt is done: the engine brings its outputs home."""
        with self._lock:
            record = self._records[handle]
        self.engine.collect(record, status, logger)

    def failure_details(self, handle: str, status: Status) -> dict[str, Any]:
        with self._lock:
            record = self._records[handle]
        return self.engine.failure_details(record, status)

    def release(self, handle: str, logger: logging.Logger) -> None:
        """The lifecycle is done with the attempt: cancel it if the service may still run it."""
        with self._lock:
            record = self._records.get(handle)
        if record is None:
            return
        if record.status.phase is not Phase.DONE or record.status.lingering:
            self.cancel(handle, logger)
        self.engine.release(record, logger)
        self._holding.released()
        with self._lock:
            self._records.pop(handle, None)
            self._leave(record)
            self._done.pop(handle, None)
            self._ended_at.pop(handle, None)
            self._held_at.pop(handle, None)

    def outcome(self, handle: str) -> Outcome | None:
        """The attempt's status and times, until it is released; a held attempt was submitted
        when it was held."""
        with self._lock:
            record = self._records.get(handle)
            ended = self._ended_at.get(handle)
            held_at = self._held_at.get(handle)
        if record is None:
            return None
        offset = time.time() - self._clock()

        def wall(at: float | None) -> float | None:
            return None if at is None else at + offset

        submitted = record.submitted_at if held_at is None else held_at
        return Outcome(record.status, submitted + offset, wall(record.started_at), wall(ended))

    def counts(self) -> dict[str, int]:
        """For progress lines: attempts queued (held ones too) and running now, submitted (held
        ones too) and retried so far."""
        held = self._holding.held()
        with self._lock:
            phases = [record.status.phase for record in self._records.values()]
            submitted, retries = self._submitted, self._retries
        return {
            "queued": phases.count(Phase.QUEUED) + held,
            "running": phases.count(Phase.RUNNING),
            "submitted": submitted + held,
            "retried": retries,
        }

    def shutdown(self) -> None:
        """At exit: drop the held submissions unsent, cancel every attempt still out, then let
        the engine clean up."""
        self._holding.stop()
        with self._lock:
            records = list(self._records.values())
        for record in records:
            if record.status.phase is not Phase.DONE or record.status.lingering:
                self.cancel(record.handle, record.logger)
        self._cancellations.flush()
        self.engine.shutdown(self._logger)

    # --- the polling thread ----------------------------------------------------------------

    def wake(self, handle: str, full: bool) -> None:
        """The engine learnt of a change to ``handle`` (its end): fetch it at once, with the full
        look if ``full``. A wake for a handle not registered yet is kept, since a short attempt
        can end before submit returns."""
        with self._lock:
            _, before = self._woken.get(handle, (0.0, False))
            self._woken[handle] = (self._clock(), full or before)
        self._wakeup.set()

    def _loop(self) -> None:
        while True:
            self._wakeup.clear()  # before the turn reads the woken handles: no wake is lost
            self._wakeup.wait(self.turn())

    def turn(self) -> float:
        """Fetch the handles the engine woke the tracker for, then a full round (``poll_once``)
        if one is due. Returns the seconds until the next full round."""
        self._fetch_woken()
        if self._clock() >= self._next_round:
            pause = self.poll_once()  # counted from the round's end, as its log line announces
            self._next_round = self._clock() + pause
        return max(0.0, self._next_round - self._clock())

    def _fetch_woken(self) -> None:
        now = self._clock()
        with self._lock:
            woken = [
                (self._records[h], full)
                for h, (_, full) in self._woken.items()
                if h in self._records
            ]
            self._woken = {
                h: (t, full)
                for h, (t, full) in self._woken.items()
                if h not in self._records and now - t <= EARLY_WAKE_SECONDS
            }
        pending = [r for r, _ in woken if r.status.phase is not Phase.DONE]
        if not pending:
            return
        try:
            self._apply(pending, self.engine.fetch(pending, any(full for _, full in woken)))
        except Exception as exn:  # the next full round asks again, and backs off if need be
            self._logger.debug(
                _("fetch on wake failed", engine=self.engine.section, error=str(exn)[:300])
            )

    def poll_once(self) -> float:
        """One round: ask the engine about every outstanding attempt, apply deadlines and grace.
        Returns the seconds until the next round (longer while the service keeps failing)."""
        with self._lock:
            pending = [r for r in self._records.values() if r.status.phase is not Phase.DONE]
        sweep = self.engine.sweep_seconds
        full = sweep is None or self._clock() >= self._next_sweep
        try:
            statuses = self.engine.fetch(pending, full) if pending else {}
            self._apply(pending, statuses)
        except Exception as exn:  # throttling, 5xx, network: keep the attempts, back off
            self._failures += 1
            delay = min(self.engine.poll_seconds * 2**self._failures, MAX_BACKOFF)
            self._logger.warning(
                _(
                    "status poll failed; backing off",
                    engine=self.engine.section,
                    error=str(exn)[:300],
                    consecutive=self._failures,
                    seconds=delay,
                )
            )
            if self._failures >= MAX_POLL_FAILURES:
                error = f"status polling failed {self._failures} times: {str(exn)[:300]}"
                self._apply(pending, {r.handle: Status(Phase.DONE, error=error) for r in pending})
            return delay
        self._failures = 0
        if full and sweep is not None:
            self._next_sweep = self._clock() + sweep
        self._enforce_deadlines(pending)
        self._log_limits(pending)
        return self.engine.poll_seconds

    def _apply(self, records: Iterable[Submitted], statuses: dict[str, Status]) -> None:
        now = self._clock()
        for record in records:
            status = statuses.get(record.handle)
            if status is None:
                if now - record.submitted_at <= self.unlisted_grace:
                    continue
                status = Status(
                    Phase.DONE,
                    error=f"{self.engine.section}: the service does not list {record.handle} "
                    f"({record.attempt.run_id}) {int(now - record.submitted_at)} s after it "
                    "accepted it",
                )
            self._update(record, status, now)

    def _update(self, record: Submitted, status: Status, now: float) -> None:
        with self._lock:
            if record.handle not in self._records or record.status.phase is Phase.DONE:
                return
            previous, record.status = record.status, status
            if status.phase is not Phase.QUEUED and record.started_at is None:
                record.started_at = now
            if status.phase is Phase.DONE:
                self._ended_at[record.handle] = now
                self._done[record.handle].set()
        if (previous.phase, previous.reason) != (status.phase, status.reason):
            record.logger.info(
                _(
                    "engine status",
                    handle=record.handle,
                    phase=status.phase.value,
                    reason=status.reason or None,
                )
            )

    def _log_limits(self, records: Iterable[Submitted]) -> None:
        """One line when the service limits queued attempts wait at (Status.waits_at) change,
        not one per poll."""
        waiting = [
            r.status.waits_at
            for r in records
            if r.status.phase is Phase.QUEUED and r.status.waits_at
        ]
        limits = frozenset(waiting)
        if limits == self._limits:
            return
        self._limits = limits
        self._logger.log(
            NOTICE_LEVEL,
            _(
                f"{self.engine.section}: jobs wait until jobs holding a limit of the service end"
                if limits
                else f"{self.engine.section}: no job waits at a limit of the service now",
                limits=" ".join(sorted(limits)) or None,
                jobs=len(waiting),
            ),
        )

    def _enforce_deadlines(self, records: Iterable[Submitted]) -> None:
        """Services without a time limit: cancel an attempt running past its own, and end it."""
        if self.engine.enforces_time_limit:
            return
        now = self._clock()
        for record in records:
            limit = record.attempt.resources.time_limit
            if not limit or record.started_at is None or record.status.phase is Phase.DONE:
                continue
            if now - record.started_at <= limit:
                continue
            self.cancel(record.handle, record.logger)
            self._update(record, Status(Phase.DONE, timed_out=True, reason="time limit"), now)
