"""Real out-of-memory kills: docker's fixtures come from tests/conftest.py, the Slurm rig's,
moto's and the Azure Batch emulator's from their own e2e conftests (moto's proxy here without
autouse: only the AWS test starts moto)."""

import pytest

from tests.e2e.awsbatch.conftest import moto, shared  # noqa: F401
from tests.e2e.azurebatch.conftest import batch, emulator  # noqa: F401
from tests.e2e.slurm.conftest import rundir, shared_dir, slurm_rig  # noqa: F401


@pytest.fixture
def batch_proxy(moto):  # noqa: F811
    """The proxy in front of moto, its rules and records cleared before the test (an earlier
    file's submissions are not this test's) and after it."""
    moto.server.proxy.reset()
    yield moto.server.proxy
    moto.server.proxy.reset()
