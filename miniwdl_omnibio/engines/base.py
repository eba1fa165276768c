"""The interface every execution engine implements, and the status it reports.

An engine only translates: the shared lifecycle (``container.py``) and the shared tracker
(``tracker.py``) do everything else, once, for every engine. One engine instance serves every
task thread of a miniwdl process; the tracker calls it from its own thread too, so an engine's
methods must be thread-safe.

The path of one attempt::

    request = engine.translate(attempt)      # pure: no I/O, no state; unit-testable
    handle = engine.submit(request, logger)  # the service accepts it (or one-line error)
    ... tracker: engine.fetch(records) every poll_seconds -> {handle: Status}
    ...          and at once for a handle the engine wakes it for (engine.on_wake)
    ... on Ctrl-C / SIGTERM / fail_fast / a client-side deadline: engine.cancel(handle, logger)
    engine.collect(handle, attempt, status, logger)   # bring outputs home (staging engines)
    engine.failure_details(handle, attempt, status)   # extra failure_info, on failure only
    engine.release(handle, logger)          # after the attempt: free what the handle holds
    engine.shutdown(logger)                 # at exit, after the tracker cancelled what was open
"""

import contextlib
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from WDL.runtime import config as miniwdl_config

from ..attempt import TaskAttempt
from ..placement.sharedfs import SharedFilesystem


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
    details: Mapping[str, Any] = field(default_factory=dict)  # extra failure_info (log stream)


QUEUED = Status(Phase.QUEUED)
RUNNING = Status(Phase.RUNNING)


@dataclass
class Submitted:
    """The tracker's record of a submitted attempt; engines read it in ``fetch``, never write it."""

    handle: str
    attempt: TaskAttempt
    logger: logging.Logger
    submitted_at: float  # time.monotonic()
    status: Status = QUEUED
    started_at: float | None = None  # when the tracker first saw it running
    cancelled: bool = False  # this process asked the service to stop it
    timed_out: bool = False  # ... because it ran past its time limit (client-side deadline)


Request = TypeVar("Request")


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
    # the service allocates runtime.disks (so a value it cannot parse is an error, not a warning)
    enforces_disks: ClassVar[bool] = False
    filesystem: SharedFilesystem | None = None  # set by engines whose workers share the run dir
    poll_seconds: float = 1.0  # seconds between two fetch rounds of the tracker
    fetch_batch: int | None = 100  # handles per fetch call; None: all outstanding in one call
    default_time_limit: int | None = None  # seconds, when the task names none

    @classmethod
    @abstractmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "Engine[Any]":
        """Read the config section once, connect, check what can be checked; fail with one line
        naming the config key or the service's reason."""

    @abstractmethod
    def resource_limits(self) -> dict[str, int]:
        """Largest cpu and mem_bytes one task can get (miniwdl clamps runtime values to them)."""

    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> AbstractContextManager[None]:
        """Hold the attempt until it may be submitted (admission control, a submission rate);
        return early when ``terminating()``. A no-op for engines whose service queues."""
        return contextlib.nullcontext()

    @abstractmethod
    def translate(self, attempt: TaskAttempt) -> Request:
        """The service's request for the attempt. Pure: no I/O, no change to the engine."""

    @abstractmethod
    def submit(self, request: Request, logger: logging.Logger) -> str:
        """Hand the request to the service; return its handle (container id, job id, ...).
        A refusal raises WDL.Error.RuntimeError with one line naming the cause."""

    @abstractmethod
    def fetch(self, records: Sequence[Submitted]) -> dict[str, Status]:
        """The status of each record's handle as the service reports it now, in one call or a
        few (at most ``fetch_batch`` records are passed at once). A pure mapping of the answer:
        no cancelling, no bookkeeping. Leave out a handle the service does not list (yet): the
        tracker gives it a grace period. An exception makes the tracker back off and ask again."""

    def on_wake(self, wake: Callable[[str], None]) -> None:
        """Called once by the tracker before the first submission. An engine the service can
        tell of an attempt's end (an event stream, an exit file) calls ``wake(handle)`` from any
        thread as soon as it learns of it, also before ``submit`` returned that handle; the
        tracker then fetches that handle at once instead of at its next round, and polling
        stays the safety net for a missed push. ``wake`` only marks the handle: it never blocks
        or raises. The default does nothing: the engine is only polled."""

    @abstractmethod
    def cancel(self, handle: str, logger: logging.Logger) -> None:
        """Ask the service to stop the attempt now; idempotent, and must not raise."""

    def collect(
        self, handle: str, attempt: TaskAttempt, status: Status, logger: logging.Logger
    ) -> None:
        """The attempt is DONE: bring what it wrote into the task's host directory before the
        lifecycle reads it (engines that stage files; a no-op where the run dir is shared)."""

    def release(self, handle: str, logger: logging.Logger) -> None:
        """The attempt is over (finished or cancelled): free what it holds (e.g. a container)."""

    def failure_details(self, handle: str, attempt: TaskAttempt, status: Status) -> dict[str, Any]:
        """Extra failure_info for a failed attempt (e.g. the tail of a remote log)."""
        return {}

    def shutdown(self, logger: logging.Logger) -> None:
        """The process is ending and every open handle was cancelled: release shared resources
        (a network sandbox, a Batch job) and anything the service still lists as this run's."""
