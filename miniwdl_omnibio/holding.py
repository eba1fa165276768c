"""Submissions a service refused because the user's queue is full, offered again as jobs end.

A batch service may cap what one user has queued (Slurm's MaxSubmitJobsPerUser, a 429-like
"try again later"): the engine returns ``QueueFull`` for each such submission. That is
back-pressure, not a failure. The refused submissions wait here in arrival order, and those that
arrive while some wait queue behind them without reaching the engine. They are offered to the
engine again one at a time, each alone, until it refuses one again: at once, then each time an
attempt of this tracker is released and at least every HOLD_RETRY seconds (the jobs of the
user's other runs end too). A refusal naming no limit counts as a full queue only while an
attempt of this tracker is out, whose end can open room; else it fails its submission.

Each task thread waits for its own held submission, so it can leave when its run is terminating
(Ctrl-C, SIGTERM, fail_fast): the submission is dropped without ever reaching the engine.
"""

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime.error import Terminated

from .engines.base import Accepted, Engine, QueueFull, Submission
from .gathering import Waiting

HOLD_RETRY = 30.0  # seconds between offers while nothing of this run ends
CHECK_SECONDS = 1.0  # how often a waiting task thread looks whether its run is terminating

Held = Waiting[Submission[Any], Accepted]


class Holding:
    """The tracker's held submissions. ``background``: a thread offers them again (tests call
    ``resend``)."""

    def __init__(self, engine: Engine[Any], logger: logging.Logger, background: bool) -> None:
        self.engine = engine
        self._logger = logger
        self._background = background
        self._cond = threading.Condition()
        self._queue: list[Held] = []  # held and not offered now, in arrival order
        self._offered: Held | None = None  # the one the engine is being offered again
        self._out = 0  # attempts the engine accepted and the tracker has not released
        self._released = 0  # attempts released since the last offer
        self._limit = ""  # the last limit the service named
        self._thread: threading.Thread | None = None
        self._stopped = False
        # when the engine gathers, submit_many never runs twice at once (base.Engine)
        self._one_call: AbstractContextManager[Any] = (
            threading.Lock() if engine.gather_seconds > 0 else contextlib.nullcontext()
        )

    def offer(self, submissions: Sequence[Submission[Any]]) -> list[Accepted | Exception | Held]:
        """The engine's result for each submission, or its ``Held`` when it waits: behind those
        held already (the engine is not asked), or refused for a full queue."""
        with self._cond:
            if self._queue or self._offered:
                held = [Held(s) for s in submissions]
                self._queue += held
                return list(held)
        with self._one_call:
            try:
                results = self.engine.submit_many(submissions)
            except Exception as exn:  # one request for all, so one refusal for all
                results = [exn] * len(submissions)
        answers: list[Accepted | Exception | Held] = []
        with self._cond:
            first = not (self._queue or self._offered)
            for submission, result in zip(submissions, results, strict=True):
                if isinstance(result, QueueFull) and self._full(result):
                    waiting = Held(submission)
                    self._queue.append(waiting)
                    answers.append(waiting)
                else:
                    self._out += isinstance(result, Accepted)
                    answers.append(result)
            count = sum(isinstance(a, Waiting) for a in answers)
            if count and self._background and self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"{self.engine.section}-held", daemon=True
                )
                self._thread.start()
        if count and first:
            self._logger.log(
                NOTICE_LEVEL,
                _(
                    f"{self.engine.section}: the service's submit limit is reached; holding "
                    "submissions until jobs end",
                    limit=self._limit or "(the service named none)",
                    held=count,
                ),
            )
        return answers

    def _full(self, refusal: QueueFull) -> bool:
        """A refusal naming no limit is a full queue only while an attempt of ours can end."""
        self._limit = refusal.limit or self._limit
        return bool(refusal.limit or self._out)

    def wait(self, held: Held, terminating: Callable[[], bool]) -> Accepted:
        """The held submission once the engine accepted it; raises its refusal, or Terminated
        (quietly) when the run is terminating or the tracker shut down before it was sent."""
        while not held.done.wait(CHECK_SECONDS):
            if terminating() and self._drop(held):
                raise Terminated(quiet=True)
        if held.error:
            raise held.error
        assert held.result is not None
        return held.result

    def _drop(self, held: Held) -> bool:
        """Take the submission out of the queue; False while the engine is being offered it
        (it comes back to the queue if refused again) or once it was answered."""
        with self._cond:
            queued = len(self._queue)
            self._queue = [h for h in self._queue if h is not held]
            return len(self._queue) < queued

    def resend(self) -> int:
        """One try: the held submissions in order, each alone, until the engine refuses one for
        a full queue. Returns how many it accepted."""
        accepted = 0
        while True:
            with self._cond:
                if not self._queue or self._stopped:
                    return accepted
                self._offered = held = self._queue.pop(0)
            with self._one_call:
                try:
                    [result] = self.engine.submit_many([held.item])
                except Exception as exn:
                    result = exn
            with self._cond:
                self._offered = None
                if isinstance(result, QueueFull) and self._full(result):
                    if self._stopped:
                        held.finish(error=Terminated(quiet=True))
                    else:
                        self._queue.insert(0, held)
                    return accepted
                self._out += isinstance(result, Accepted)
                emptied = not self._queue
            if isinstance(result, Accepted):
                accepted += 1
                held.finish(result)
            else:  # refused for another reason once its turn came
                held.finish(error=result)
            if emptied:
                self._logger.log(
                    NOTICE_LEVEL, _(f"{self.engine.section}: no submission is held now")
                )

    def _loop(self) -> None:
        """Offer at once, again each time attempts are released and at least every HOLD_RETRY
        seconds, until none is held."""
        while True:
            with self._cond:
                self._released = 0
            self.resend()
            with self._cond:
                self._cond.wait_for(
                    lambda: self._released or self._stopped or not self._queue, HOLD_RETRY
                )
                if self._stopped or not self._queue:
                    self._thread = None
                    return

    def held(self) -> int:
        """How many submissions wait now."""
        with self._cond:
            return len(self._queue) + bool(self._offered)

    def released(self) -> None:
        """An accepted attempt is over: it no longer counts, so room may have opened."""
        with self._cond:
            self._out -= 1
            self._released += 1
            self._cond.notify_all()

    def stop(self) -> None:
        """At shutdown: drop every held submission unsent (their task threads end Terminated)."""
        with self._cond:
            self._stopped = True
            dropped, self._queue = self._queue, []
            self._cond.notify_all()
        for held in dropped:
            held.finish(error=Terminated(quiet=True))
