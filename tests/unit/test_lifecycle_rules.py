"""Lifecycle rules that need no service: the retry wait and where stderr lines go."""

import logging
import time
import types

import pytest
from WDL._util import VERBOSE_LEVEL
from WDL.runtime.error import Terminated

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


def test_an_interruption_is_retried_at_once_and_ctrl_c_ends_a_wait():
    logger = logging.getLogger("test.retry")
    started = time.monotonic()
    _container_after(0, 1, True)._wait_before_retry(logger, lambda: False)
    assert time.monotonic() - started < 1
    with pytest.raises(Terminated):
        _container_after(1, 0, False)._wait_before_retry(logger, lambda: True)
    assert time.monotonic() - started < 2
