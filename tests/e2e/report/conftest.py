"""Headless Chromium for the report tests, and where their screenshots are kept."""

import os
import tempfile

import pytest

from tests.conftest import require
from tests.e2e.report.browser import chromium


@pytest.fixture(scope="session")
def browser_rig():
    require(chromium() is not None, "chromium is not installed (Debian package chromium)")


@pytest.fixture
def artifacts():
    """Where screenshots are kept after the test: $OMNIBIO_TEST_ARTIFACTS, else
    <tmp>/omnibio-test-artifacts (not a pytest tmp dir: those are removed or rotated away)."""
    default = os.path.join(tempfile.gettempdir(), "omnibio-test-artifacts")
    where = os.environ.get("OMNIBIO_TEST_ARTIFACTS") or default
    os.makedirs(where, exist_ok=True)
    return where
