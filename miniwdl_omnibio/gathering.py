"""Submissions (and cancellations) that arrive close together share one request to the service.

A scatter's attempts reach ``submit`` over a moment, each on its own thread: sending each alone
costs one request apiece (and the service's rate limits), sending them together costs one.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class Waiting(Generic[Item, Result]):
    """One submission waiting for the request that carries it, and what that request gave it."""

    item: Item
    done: threading.Event = field(default_factory=threading.Event)
    result: Result | None = None
    error: Exception | None = None

    def finish(self, result: Result | None = None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class Gathering(Generic[Item, Result]):
    """The first submitter of a burst waits until none came for ``linger`` seconds (at most
    ``linger_max``), then hands everything gathered to ``send`` (again, until nothing is left)
    while the others wait for their outcome. ``send`` finishes every ``Waiting`` it is given."""

    def __init__(
        self,
        send: Callable[[list[Waiting[Item, Result]]], None],
        linger: float,
        linger_max: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``clock`` and ``sleep``: the real ones, or a test's."""
        self._send = send
        self._linger = linger
        self._linger_max = linger_max
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._queue: list[Waiting[Item, Result]] = []
        self._sending = False
        self._last_arrival = 0.0  # clock() of the latest submission

    def add(self, item: Item) -> Result | None:
        """The result ``send`` gave the item; raises the error it gave instead."""
        waiting: Waiting[Item, Result] = Waiting(item)
        with self._lock:
            self._queue.append(waiting)
            self._last_arrival = self._clock()
            lead, self._sending = not self._sending, True
        if lead:
            self._gather()
            while True:
                with self._lock:
                    gathered, self._queue = self._queue, []
                    if not gathered:
                        self._sending = False
                        break
                self._send(gathered)
        waiting.done.wait()
        if waiting.error:
            raise waiting.error
        return waiting.result

    def _gather(self) -> None:
        """Wait while submissions keep arriving (each within ``linger`` of the previous)."""
        give_up = self._clock() + self._linger_max
        while True:
            with self._lock:
                quiet_at = self._last_arrival + self._linger
            now = self._clock()
            if now >= quiet_at or now >= give_up:
                return
            self._sleep(min(quiet_at, give_up) - now)


class Cancellations(Generic[Item]):
    """cancel() returns at once; the items gathered go to ``send`` together once none came for
    ``linger`` seconds (at most ``linger_max`` after the first). On Ctrl-C, SIGTERM or fail_fast
    each task's thread notices within the run loop's round (container.ROUND_SECONDS, 1 s) and
    cancels its own attempt: a linger that outlasts that round lets one request take them all.
    ``flush()`` (at shutdown) sends whatever is still gathering, and waits for it."""

    def __init__(
        self,
        send: Callable[[list[Item]], None],
        linger: float,
        linger_max: float,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        """``background``: a thread sends when due (tests ask ``due_in`` and ``flush``)."""
        self._send = send
        self._linger = linger
        self._linger_max = linger_max
        self._clock = clock
        self._background = background
        self._lock = threading.Lock()
        self._sending = threading.Lock()  # one send at a time: flush() waits for a send under way
        self._queue: list[Item] = []
        self._first = self._last = 0.0
        self._waiting = False

    def add(self, item: Item) -> None:
        with self._lock:
            self._queue.append(item)
            self._last = self._clock()
            if self._waiting:
                return
            self._first, self._waiting = self._last, True
        if self._background:
            threading.Thread(target=self._wait_then_flush, daemon=True).start()

    def due_in(self) -> float:
        """Seconds until the gathered items are due (0 or less: now)."""
        with self._lock:
            due = min(self._last + self._linger, self._first + self._linger_max)
        return due - self._clock()

    def _wait_then_flush(self) -> None:
        while (wait := self.due_in()) > 0:
            time.sleep(wait + 0.01)
        self.flush()

    def flush(self) -> None:
        with self._sending:
            with self._lock:
                items, self._queue, self._waiting = self._queue, [], False
            if items:
                self._send(items)
