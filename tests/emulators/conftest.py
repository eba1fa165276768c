"""The emulators' own tests use the same service fixtures as the backend tests."""

import pytest

from tests.e2e.azurebatch.conftest import batch, emulator  # noqa: F401
from tests.e2e.tes.conftest import moto, s3, shared_dir  # noqa: F401


@pytest.fixture(autouse=True)
def fresh_moto_proxy(request):
    """The moto proxy's tests start with no rule or record left by earlier tests on the session's
    one moto server (their rules and counts are the proxy's, not an account's)."""
    if "account" in request.fixturenames:
        request.getfixturevalue("moto_server").proxy.reset()
