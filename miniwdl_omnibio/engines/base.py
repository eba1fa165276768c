"""The interface every execution engine implements, and the status it reports.

An engine translates and maps: the shared lifecycle (``container.py``) and the shared tracker
(``tracker.py``) do everything else, once, for every engine. One engine instance serves every
task thread of a miniwdl process; the tracker calls it from its own thread too, so an engine's
methods must be thread-safe.

The path of one attempt::

    request = engine.translate(attempt)             # pure: no I/O, no state; unit-testable
    accepted = engine.submit_many(submissions)      # the tracker gathers a burst for
                                                    # gather_seconds, then sends it at once;
                                                    # QueueFull: it holds that one (holding.py)
    ... tracker: engine.fetch(records, full) every poll_seconds -> {handle: Status};
    ...          full every sweep_seconds, and at once for a handle the engine wakes it for
    ... on Ctrl-C / SIGTERM / fail_fast / a client-side deadline:
    ...          engine.cancel_many(records, whole_groups, logger)
    engine.collect(record, status, logger)          # bring outputs home (staging engines)
    engine.failure_details(record, status)          # extra failure_info, on failure only
    engine.release(record, logger)                  # after the attempt: free what it holds
    engine.shutdown(logger)                         # at exit, after open attempts were cancelled

The tracker's record (``Submitted``) is the attempt's one home: it carries the request, a
memo the engine fills at submission (an exit-record path, an image id) and the group of
attempts the service took as one (an array job). An engine keeps no state keyed by handle of its
own.
"""

import contextlib
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from WDL import Error
from WDL.runtime import config as miniwdl_config

from ..attempt import TaskAttempt
from ..placement.sharedfs import SharedFilesystem
from ..settings import EngineSettings


class Phase(enum.Enum):
    QUEUED = "queued"  # accepted, not yet running
    RUNNING = "running"  # the container is (or is about to be) running: counts in the status bar
    DONE = "done"  # final; see the other Status fields


@dataclass(frozen=True)
class Status:
    """What the service says of one attempt, in the same words for every engine."""

    phase: Phase
    exit_code: int | None = None
    # not the task's fault (spot/low-priority preemption, lost host): miniwdl retries it within
    # runtime.preemptible
    interrupted: bool = False
    # the engine could not run the command at all (image pull failure, rejected task): one line
    error: str | None = None
    oom: bool = False  # killed for exceeding its memory limit
    timed_out: bool = False  # ended at its time limit (by the service or by the tracker)
    # over for this process, but the service still holds it (requeued after preemption, stuck in
    # a queue it can never leave): the tracker cancels it on release
    lingering: bool = False
    reason: str = ""  # the service's own words: state, statusReason, failure message ...
    # queued until jobs holding this limit of the service end (a user's, an account's, a
    # queue's): the tracker logs the run's set of them once each time it changes
    waits_at: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)  # extra failure_info (log stream)


QUEUED = Status(Phase.QUEUED)
RUNNING = Status(Phase.RUNNING)


Request = TypeVar("Request")


@dataclass(frozen=True)
class Submission(Generic[Request]):
    """One attempt the tracker hands the engine to submit."""

    attempt: TaskAttempt
    request: Request
    logger: logging.Logger


@dataclass(frozen=True)
class Accepted:
    """The service took a submission: its handle, what the engine wants to recall of it, and the
    group it went to the service in (an array job's id, which also stops the whole array); None:
    alone."""

    handle: str
    memo: Any = None
    group: str | None = None


class QueueFull(Error.RuntimeError):
    """The service refused a submission because the user's queue is full (a submit limit, a
    429-like "try again later"): back-pressure, not a failure. The tracker holds the submission
    and offers it again as jobs end (holding.py). ``limit`` names the limit the service gave, ""
    when it named none (then it counts as a full queue only while an attempt of this run is out,
    and else fails the submission with this one-line message)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass
class Submitted:
    """The tracker's record of a submitted attempt. Engines read it; only ``memo`` is theirs."""

    handle: str
    attempt: TaskAttempt
    logger: logging.Logger
    submitted_at: float  # time.monotonic()
    request: Any = None  # what translate() returned
    memo: Any = None  # the engine's, from Accepted
    group: str | None = None  # from Accepted
    status: Status = QUEUED
    started_at: float | None = None  # when the tracker first saw it running
    cancelled: bool = False  # this process asked the service to stop it


def sent_by_group(
    groups: Sequence[Sequence[int]], send: Callable[[Sequence[int]], Sequence[Accepted]]
) -> dict[int, Accepted | Exception]:
    """For ``submit_many`` of a service that takes a group of submissions in one call (an array
    job): each position's result when ``send`` sends each group of positions; the members of a
    group share its call's refusal."""
    results: dict[int, Accepted | Exception] = {}
    for group in groups:
        try:
            accepted = send(group)
        except Exception as exn:
            results.update(dict.fromkeys(group, exn))
        else:
            results.update(zip(group, accepted, strict=True))
    return results


class Engine(ABC, Generic[Request]):
    """A service that runs containers, seen one TaskAttempt at a time."""

    section: ClassVar[str]  # its config section, e.g. omnibio_docker
    runtime_keys: ClassVar[tuple[str, ...]] = ()  # engine-specific runtime{} keys it honours
    # the service enforces runtime.memory as a hard limit (batch services do); False: miniwdl's
    # rule, a reservation, with a hard limit only under memory_limit_multiplier
    memory_is_limit: ClassVar[bool] = True
    # the service ends an attempt at its time limit itself and fetch() says timed_out; False: the
    # tracker cancels it at the deadline
    enforces_time_limit: ClassVar[bool] = False
    settings: EngineSettings  # its config section, loaded at start
    # largest cpu and mem_bytes one task can get, known at start (miniwdl clamps runtime values
    # to them: TaskContainer.detect_resource_limits)
    limits: dict[str, int]
    # seconds between two full rounds (fetch(records, full=True)): the costly look an engine
    # takes only now and then (a listing of the service beside its exit files); None: all full
    sweep_seconds: float | None = None
    # a submission waits until none came for this long (at most gather_max_seconds), so that a
    # burst reaches submit_many together (one array job, one task collection), one burst at a
    # time: submit_many never runs twice at once (held submissions offered again included); 0:
    # each alone, at once, from its own thread
    gather_seconds: float = 0.0
    gather_max_seconds: float = 2.0
    # cancellations gathered likewise into one cancel_many; it should outlast the run loop's
    # round (container.ROUND_SECONDS), in which every task thread notices Ctrl-C
    cancel_gather_seconds: float = 0.0

    @property
    def poll_seconds(self) -> float:
        """Seconds between two fetch rounds of the tracker."""
        return self.settings.poll_seconds

    @property
    def filesystem(self) -> SharedFilesystem | None:
        """The run directory as the workers share it; None where they do not."""
        return self.settings.filesystem

    @property
    def default_time_limit(self) -> int | None:
        """Seconds an attempt may run when its task names no limit."""
        return self.settings.default_time_limit

    @classmethod
    @abstractmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "Engine[Any]":
        """Read the config section once, connect, check what can be checked; fail with one line
        naming the config key or the service's reason."""

    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> AbstractContextManager[None]:
        """Hold the attempt until it may be submitted (admission control, a submission rate);
        return early when ``terminating()``. A no-op for engines whose service queues."""
        return contextlib.nullcontext()

    @abstractmethod
    def translate(self, attempt: TaskAttempt) -> Request:
        """The service's request for the attempt. Pure: no I/O, no change to the engine. A
        request's ``notes``, if it has them (what the service cannot honour, e.g. a GPU TES
        cannot ask for), are warned in the task's log, each once per process."""

    def submit(self, request: Request, logger: logging.Logger) -> Accepted:
        """Hand one request to the service. Implement this or ``submit_many``."""
        raise NotImplementedError

    def submit_many(self, submissions: Sequence[Submission[Request]]) -> list[Accepted | Exception]:
        """Hand the submissions to the service, in as few calls as it allows; one result per
        submission, in order. A refusal is that submission's WDL.Error.RuntimeError, one line
        naming the cause; ``QueueFull`` when the user's queue is full, which the tracker holds
        and offers again later, alone, in a call of its own. The default sends each with
        ``submit``."""
        results: list[Accepted | Exception] = []
        for each in submissions:
            try:
                results.append(self.submit(each.request, each.logger))
            except Exception as exn:
                results.append(exn)
        return results

    @abstractmethod
    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """The status of each record's handle as the service reports it now. ``full``: take the
        costly look too (see ``sweep_seconds``). Only reads and maps: no cancelling, no
        bookkeeping. Leave out a handle the service does not list (yet): the tracker gives it a
        grace period. An exception makes the tracker back off and ask again."""

    def on_wake(self, wake: Callable[[str, bool], None]) -> None:
        """Called once by the tracker before the first submission. An engine the service can
        tell of an attempt's end (an event stream, an exit file) calls ``wake(handle, full)``
        from any thread as soon as it learns of it, also before ``submit`` returned that handle;
        the tracker then fetches that handle at once (``full``: the engine wants its costly look
        now) instead of at its next round, and polling stays the safety net for a missed push.
        ``wake`` only marks the handle: it never blocks or raises. The default does nothing:
        the engine is only polled."""

    def cancel(self, record: Submitted, logger: logging.Logger) -> None:
        """Ask the service to stop one attempt now; idempotent, and must not raise. Implement
        this or ``cancel_many``."""
        raise NotImplementedError

    def cancel_many(
        self, records: Sequence[Submitted], whole_groups: frozenset[str], logger: logging.Logger
    ) -> None:
        """Stop the attempts, in as few calls as the service allows; must not raise.
        ``whole_groups``: the groups (``Accepted.group``) of which the records hold every member
        still open (submitted, not released), and which no earlier call stopped whole: stopping
        such a group by its id stops all of it. The default cancels each with ``cancel``."""
        for record in records:
            self.cancel(record, record.logger)

    def collect(self, record: Submitted, status: Status, logger: logging.Logger) -> None:
        """The attempt is DONE: bring what it wrote into the task's host directory before the
        lifecycle reads it (engines that stage files; a no-op where the run dir is shared)."""

    def release(self, record: Submitted, logger: logging.Logger) -> None:
        """The attempt is over (finished or cancelled): free what it holds (e.g. a container)."""

    def failure_details(self, record: Submitted, status: Status) -> dict[str, Any]:
        """Extra failure_info for a failed attempt (e.g. the tail of a remote log)."""
        return {}

    def shutdown(self, logger: logging.Logger) -> None:
        """The process is ending and every open handle was cancelled: release shared resources
        (a network sandbox, a Batch job) and anything the service still lists as this run's."""
