"""The TES test server on 127.0.0.1 over the local dockerd, with moto server as its S3 store."""

import importlib.util
import os
import shutil
import tempfile

import pytest

from tests.conftest import require
from tests.e2e.tes.support import moto_s3
from tests.emulators.tes_server import S3Access, TesServer
from tests.emulators.tes_server.profiles import PROFILES


@pytest.fixture(scope="session")
def moto(docker_rig, tmp_path_factory):
    """moto server (S3 only is used), with the staging bucket."""
    require(importlib.util.find_spec("moto") is not None, "moto[server] is not installed")
    server = moto_s3(str(tmp_path_factory.mktemp("tes-moto") / "moto.log"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tes_server(moto):
    """A server that behaves like the real ones: inputs and outputs through S3, no host mounts."""
    with TesServer(s3=S3Access(moto.endpoint, "testing", "testing"), workers=4) as server:
        yield server


@pytest.fixture(scope="session", params=PROFILES)
def profile_server(request, moto):
    """The test server as each real implementation behaves (tests/emulators/tes_server/
    profiles.py); room for another client's tasks beside a run's."""
    access = S3Access(moto.endpoint, "testing", "testing")
    with TesServer(profile=request.param, s3=access, workers=6) as server:
        yield server


@pytest.fixture
def s3(moto):
    return moto.client("s3")


@pytest.fixture
def rundir(request, docker_rig):
    """A run directory on this host only (world-readable)."""
    path = tempfile.mkdtemp(prefix=request.node.name[:40] + "-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_dir(docker_rig):
    """A directory playing a shared filesystem a worker volume mounts (shared-filesystem mode)."""
    path = tempfile.mkdtemp(prefix="omnibio-tes-shared-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def azurite(docker_rig):
    """Azurite with a "staging" container, for staging through Azure Blob URLs."""
    from azure.storage.blob import BlobServiceClient

    from tests.emulators.azurite import Azurite, azurite_binary

    require(azurite_binary() is not None, "Azurite is not installed (tests/rig/setup.sh)")
    with Azurite() as blob:
        BlobServiceClient.from_connection_string(blob.connection_string).create_container("staging")
        yield blob
