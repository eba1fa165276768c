"""The fixture TES server on 127.0.0.1 over the local dockerd, and a shared directory its worker mounts."""

import os
import shutil
import tempfile

import pytest

from tests.emulators.tes_server import TesServer


@pytest.fixture(scope="session")
def shared_dir(docker_rig):
    """The shared filesystem: this host and the server's worker both see it at the same path."""
    path = tempfile.mkdtemp(prefix="omnibio-tes-shared-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tes_server(shared_dir):
    with TesServer([shared_dir], workers=4) as server:
        yield server


@pytest.fixture
def rundir(shared_dir, request):
    """A run directory on the shared filesystem (world-readable, like the docker tests' workdir)."""
    path = tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=shared_dir)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
