"""Headless Chromium for the report tests, and where their screenshots are kept."""

import os

import pytest

from tests.conftest import require
from tests.e2e.report.browser import chromium


@pytest.fixture(scope="session")
def browser_rig():
    require(chromium() is not None, "chromium is not installed (Debian package chromium)")


@pytest.fixture
def artifacts(tmp_path):
    """$OMNIBIO_TEST_ARTIFACTS when set (CI keeps it), else the test's own tmp dir (pytest keeps
    the last three sessions' under its basetemp)."""
    where = os.environ.get("OMNIBIO_TEST_ARTIFACTS") or str(tmp_path / "artifacts")
    os.makedirs(where, exist_ok=True)
    return where
