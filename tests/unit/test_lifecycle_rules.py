"""Lifecycle rules that need no service: the retry wait and where stderr lines go."""

import logging
import types

import pytest
from WDL._util import VERBOSE_LEVEL
from WDL.runtime.error import Terminated

from miniwdl_omnibio.attempt import Resources
from miniwdl_omnibio.container import OmnibioContainer
from miniwdl_omnibio.progress import OpenJdProgress
from miniwdl_omnibio.task_values import retry_delay


def test_retry_wait_doubles_up_to_its_maximum():
    assert [retry_delay(n, 5, 300) for n in range(0, 9)] == [0, 5, 10, 20, 40, 80, 160, 300, 300]
    assert retry_delay(3, 0, 300) == 0


class Lines:
    def __init__(self):
        self.seen = []

    def __call__(self, text):
        self.seen.append(text)


def _line_handler(level, callback):
    logger = logging.getLogger(f"test.stderr.{level}")
    logger.setLevel(level)
    container = OmnibioContainer.__new__(OmnibioContainer)  # only stderr_callback is read
    container.stderr_callback = callback
    return container._stderr_line(logger, OpenJdProgress(logger)), logger


def test_stderr_callback_only_with_verbose_logging_as_miniwdl_documents():
    quiet = Lines()
    handler, _logger = _line_handler(logging.INFO, quiet)
    handler("a line\n")
    assert quiet.seen == []
    verbose = Lines()
    handler, _logger = _line_handler(VERBOSE_LEVEL, verbose)
    handler("a line\n")
    assert verbose.seen == ["a line\n"]


def test_openjd_lines_count_without_verbose_logging():
    progress_logger = logging.getLogger("test.openjd")
    progress = OpenJdProgress(progress_logger)
    container = OmnibioContainer.__new__(OmnibioContainer)
    container.stderr_callback = None
    progress_logger.setLevel(logging.INFO)
    container._stderr_line(progress_logger, progress)("openjd_fail: reference missing\n")
    assert progress.fail_reason == "reference missing"


def _container_after(failures: int, interruptions: int, interrupted_last: bool):
    container = OmnibioContainer.__new__(OmnibioContainer)
    container.try_counter = failures + interruptions + 1
    container._interruptions = interruptions
    container._interrupted_last = interrupted_last
    container._omnibio = types.SimpleNamespace(retry_wait=60.0, retry_wait_max=300.0)
    return container


class FakeTime:
    """The container module's clock: sleeping advances it, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def clock(monkeypatch):
    from miniwdl_omnibio import container

    fake = FakeTime()
    monkeypatch.setattr(container, "time", fake)
    return fake


def test_a_failed_attempt_waits_retry_wait_doubling(clock):
    logger = logging.getLogger("test.retry")
    _container_after(1, 0, False)._wait_before_retry(logger, lambda: False)
    assert clock.slept == pytest.approx(60)
    _container_after(3, 0, False)._wait_before_retry(logger, lambda: False)
    assert clock.slept == pytest.approx(60 + 240)  # the third retry: 4 x 60, under 300


def test_an_interruption_is_retried_at_once_and_ctrl_c_ends_a_wait(clock):
    logger = logging.getLogger("test.retry")
    _container_after(0, 1, True)._wait_before_retry(logger, lambda: False)
    assert clock.slept == 0
    asked = []

    def ctrl_c_after_one_second() -> bool:
        asked.append(clock.now)
        return clock.now - asked[0] >= 1

    with pytest.raises(Terminated):
        _container_after(1, 0, False)._wait_before_retry(logger, ctrl_c_after_one_second)
    assert 1 <= clock.slept <= 1.2  # checked at least every 0.2 s of a 60 s wait


def test_one_memory_policy_for_every_engine():
    """runtime.memory as miniwdl computed it: batch services get it as a hard limit; local
    Docker (miniwdl's rule) as a reservation, limited only under memory_limit_multiplier."""
    asked = {"cpu": 2, "memory_reservation": 1 << 30}
    multiplied = {**asked, "memory_limit": 2 << 30}
    as_limit = Resources.granted(asked, memory_is_limit=True, time_limit=None, disk=None)
    assert (as_limit.memory_reservation, as_limit.memory_limit) == (1 << 30, 1 << 30)
    reserved = Resources.granted(asked, memory_is_limit=False, time_limit=None, disk=None)
    assert (reserved.memory_reservation, reserved.memory_limit) == (1 << 30, 0)
    for memory_is_limit in (True, False):
        both = Resources.granted(
            multiplied, memory_is_limit=memory_is_limit, time_limit=60, disk=None
        )
        assert (both.memory_reservation, both.memory_limit, both.time_limit) == (
            1 << 30,
            2 << 30,
            60,
        )
