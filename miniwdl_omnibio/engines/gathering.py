"""Submissions that arrive close together share one request to the service.

A scatter's attempts reach ``submit`` over a moment, each on its own thread: sending each alone
costs one request apiece (and the service's rate limits), sending them together costs one.
"""

import threading
import time
from collections.abc import Callable, Sequence
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


def settle(group: Sequence[Waiting[Item, Result]], send: Callable[[], Sequence[Result]]) -> None:
    """Finish each member of ``group`` with its result from one ``send()`` (in order), or every
    member with the error it raised: the members share one request, so they share its refusal."""
    try:
        results = send()
    except Exception as exn:
        for waiting in group:
            waiting.finish(error=exn)
        return
    for waiting, result in zip(group, results, strict=True):
        waiting.finish(result)


class Gathering(Generic[Item, Result]):
    """The first submitter of a burst waits until none came for ``linger`` seconds (at most
    ``linger_max``), then hands everything gathered to ``send`` (again, until nothing is left)
    while the others wait for their outcome. ``send`` finishes every ``Waiting`` it is given."""

    def __init__(
        self,
        send: Callable[[list[Waiting[Item, Result]]], None],
        linger: float,
        linger_max: float,
    ) -> None:
        self._send = send
        self._linger = linger
        self._linger_max = linger_max
        self._lock = threading.Lock()
        self._queue: list[Waiting[Item, Result]] = []
        self._sending = False
        self._last_arrival = 0.0  # time.monotonic() of the latest submission

    def add(self, item: Item) -> Result | None:
        """The result ``send`` gave the item; raises the error it gave instead."""
        waiting: Waiting[Item, Result] = Waiting(item)
        with self._lock:
            self._queue.append(waiting)
            self._last_arrival = time.monotonic()
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
        give_up = time.monotonic() + self._linger_max
        while True:
            with self._lock:
                quiet_at = self._last_arrival + self._linger
            now = time.monotonic()
            if now >= quiet_at or now >= give_up:
                return
            time.sleep(min(quiet_at, give_up) - now)
