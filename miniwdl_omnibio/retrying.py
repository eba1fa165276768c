"""One retry loop for every call to a service that throttles, is busy, or answers late.

Each engine says which failures are worth another try and how long the service asked it to wait
(a Retry-After header, a throttling code); this module owns the rest, once: how many tries, the
doubling pause with its cap, and what is raised when the tries run out.
"""

import time
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")

FIRST_PAUSE = 1.0  # seconds before the second try, doubling per try
MAX_PAUSE = 30.0  # seconds between two tries at most


def pause_before(tries: int, asked: float | None, cap: float = MAX_PAUSE) -> float:
    """Seconds to wait after ``tries`` failed tries: what the service asked, else doubling."""
    if asked is not None:
        return min(max(asked, 0.0), cap)
    return min(FIRST_PAUSE * 2 ** (tries - 1), cap)


def retry(
    call: Callable[[], Result],
    verdict: Callable[[Exception], float | bool],
    tries: int,
    sleep: Callable[[float], None] = time.sleep,
    cap: float = MAX_PAUSE,
) -> Result:
    """``call()``, tried up to ``tries`` times. After a failure, ``verdict(exn)`` says what it
    means: False, give up and raise it; True, try again after the doubling pause; a number, try
    again after that many seconds (the service's Retry-After). The last failure is raised."""
    for done in range(1, tries + 1):
        try:
            return call()
        except Exception as exn:
            said = verdict(exn)
            if said is False or done == tries:
                raise
            sleep(pause_before(done, None if said is True else float(said), cap))
    raise AssertionError("tries must be at least 1")
