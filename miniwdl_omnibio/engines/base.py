"""What an engine must provide to the shared lifecycle, and the shared batched status poller."""

import contextlib
import enum
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, ContextManager

from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ..attempt import TaskAttempt
from ..sharedfs import SharedFilesystem


class Phase(enum.Enum):
    QUEUED = "queued"  # accepted, not yet running
    RUNNING = "running"  # the container is (or is about to be) running: counts in the status bar
    DONE = "done"  # final; see Status fields


@dataclass(frozen=True)
class Status:
    phase: Phase
    exit_code: int | None = None
    # not the task's fault (spot/low-priority preemption, lost host): miniwdl retries it within
    # runtime.preemptible
    interrupted: bool = False
    # the engine could not run the command at all (image pull failure, rejected task): one line
    error: str | None = None
    oom: bool = False  # killed for exceeding its memory limit
    reason: str = ""  # the engine's own words: state, statusReason, ...
    details: Mapping[str, Any] = field(default_factory=dict)  # extra failure_info (log stream ...)


QUEUED = Status(Phase.QUEUED)
RUNNING = Status(Phase.RUNNING)


class Engine(ABC):
    """An execution engine. One instance per process, shared by all task threads."""

    section: ClassVar[str]  # its config section, e.g. omnibio_docker
    runtime_keys: ClassVar[tuple[str, ...]] = ()  # engine-specific runtime{} keys it honours
    filesystem: SharedFilesystem | None = None  # set by engines whose workers share the run dir
    poll_seconds: float = 1.0  # how long the lifecycle waits per round (stderr, termination)
    default_time_limit: int | None = None  # seconds, when the task names none

    @classmethod
    @abstractmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "Engine":
        """Read and check the config section, connect, fail with one line naming the problem."""

    @abstractmethod
    def resource_limits(self) -> dict[str, int]:
        """Largest cpu and mem_bytes one task can get (miniwdl clamps runtime values to them)."""

    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> ContextManager[None]:
        """Wait until the attempt may be submitted (admission control); a no-op for queueing engines."""
        return contextlib.nullcontext()

    @abstractmethod
    def submit(self, attempt: TaskAttempt, logger: logging.Logger) -> str:
        """Start the attempt; return a handle (container id, job id, ...)."""

    @abstractmethod
    def wait(self, handle: str, timeout: float) -> Status:
        """The attempt's status, waiting up to ``timeout`` seconds for it to finish."""

    @abstractmethod
    def cancel(self, handle: str, logger: logging.Logger) -> None:
        """Stop the attempt now (Ctrl-C, SIGTERM, fail_fast); must not raise."""

    def release(self, handle: str, logger: logging.Logger) -> None:
        """Forget a finished or cancelled attempt (remove its container, stop polling it)."""

    def failure_details(self, handle: str, attempt: TaskAttempt, status: Status) -> dict[str, Any]:
        """Extra failure_info for a failed attempt (e.g. the tail of a remote log)."""
        return {}

    def shutdown(self, logger: logging.Logger) -> None:
        """The run is over: cancel anything still outstanding and release shared resources."""


class Poller:
    """One thread per engine that asks the service about many attempts per call.

    Engines give it ``fetch(handles) -> {handle: Status}`` for at most ``batch`` handles (None:
    all outstanding ones at once, for services that list a whole job in one call). Task
    threads block in ``wait`` on an event instead of each calling the service. A failing call
    backs off (doubling up to ``max_backoff``) without failing any task; only ``max_failures``
    consecutive failures end the outstanding attempts with an error.
    """

    def __init__(
        self,
        name: str,
        fetch: Callable[[list[str]], dict[str, Status]],
        period: float,
        logger: logging.Logger,
        batch: int | None = 100,
        max_failures: int = 20,
        max_backoff: float = 60.0,
    ) -> None:
        self._fetch = fetch
        self._period = period
        self._batch = batch
        self._max_failures = max_failures
        self._max_backoff = max_backoff
        self._logger = logger
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._status: dict[str, Status] = {}
        self._done: dict[str, threading.Event] = {}
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def watch(self, handle: str, initial: Status = QUEUED) -> None:
        with self._lock:
            self._status[handle] = initial
            self._done[handle] = threading.Event()

    def forget(self, handle: str) -> None:
        with self._lock:
            self._status.pop(handle, None)
            self._done.pop(handle, None)

    def outstanding(self) -> list[str]:
        with self._lock:
            return [h for h, s in self._status.items() if s.phase is not Phase.DONE]

    def wait(self, handle: str, timeout: float) -> Status:
        with self._lock:
            done = self._done[handle]
        done.wait(timeout)
        with self._lock:
            return self._status[handle]

    def _update(self, statuses: dict[str, Status]) -> None:
        with self._lock:
            for handle, status in statuses.items():
                if handle in self._status:
                    self._status[handle] = status
                    if status.phase is Phase.DONE:
                        self._done[handle].set()

    def _loop(self) -> None:
        failures = 0
        while True:
            delay = self._period
            pending = self.outstanding()
            try:
                size = self._batch or max(1, len(pending))
                for start in range(0, len(pending), size):
                    self._update(self._fetch(pending[start : start + size]))
                failures = 0
            except Exception as exn:  # throttling, 5xx, network: keep the tasks, back off
                failures += 1
                delay = min(self._period * 2**failures, self._max_backoff)
                self._logger.warning(
                    _(
                        "status poll failed; backing off",
                        error=str(exn)[:300],
                        consecutive=failures,
                        seconds=delay,
                    )
                )
                if failures >= self._max_failures:
                    self._update(
                        {
                            h: Status(
                                Phase.DONE, error=f"status polling failed {failures} times: {exn}"
                            )
                            for h in pending
                        }
                    )
            time.sleep(delay)
