"""Per-backend setups for the conformance and scenario tests: one session fixture per backend
(a plugin of tests/conftest.py, so each is set up once per session).

A backend's fixture yields ``(env, run_root)``:

* ``env``: the MINIWDL__SECTION__KEY variables that point miniwdl and the backend at its rig
  (emulator endpoints, queues, shared-filesystem paths...). The backend itself is chosen by the
  test; nothing else from the caller's MINIWDL__ environment or config file applies.
* ``run_root``: a directory miniwdl's host can write where the examples, their data files and
  their run directories go. Cloud backends must give a directory on their shared filesystem
  (under ``[section] host_mount_path``), since task inputs and outputs live in the run directory.

To add a backend: write its fixture here (it may build on the session's moto server and
Azurite) and name it in ``test_conformance.BACKEND_FIXTURES``.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.conftest import require
from tests.helpers import config_env

BackendSetup = tuple[dict[str, str], str]


@pytest.fixture(scope="session")
def conformance_omnibio_docker(docker_rig, tmp_path_factory) -> Iterator[BackendSetup]:
    run_root = tmp_path_factory.mktemp("conformance-omnibio_docker")
    os.chmod(run_root, 0o755)
    yield {}, str(run_root)


def _shared_root(backend: str) -> str:
    """A fresh directory that plays the backend's shared filesystem (same path on both sides)."""
    path = tempfile.mkdtemp(prefix=f"omnibio-conformance-{backend}-")
    os.chmod(path, 0o755)
    return path


# Spec examples do not use the tool runtime: no RESULT_URI, so no results.json is expected.
# Their retries (runtime.maxRetries) start at once: the wait is tested where it is the point.
NO_RESULTS = {"omnibio": {"result_uri_prefix": "", "retry_wait": "0"}}


@pytest.fixture(scope="session")
def conformance_omnibio_awsbatch(docker_rig, moto_server) -> Iterator[BackendSetup]:
    from tests.e2e.awsbatch.conftest import batch_config

    shared = _shared_root("awsbatch")
    try:
        config = {**batch_config(moto_server.account("conformance"), shared), **NO_RESULTS}
        yield {**config_env(config), **moto_server.env()}, shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="session")
def conformance_omnibio_azurebatch(docker_rig) -> Iterator[BackendSetup]:
    from tests.e2e.azurebatch.conftest import azurebatch_config, azurebatch_env
    from tests.emulators.azurebatch_emulator import BatchEmulator

    shared = _shared_root("azurebatch")
    try:
        with BatchEmulator() as batch:
            config = {**azurebatch_config(batch, shared, poll_seconds="0.5"), **NO_RESULTS}
            yield {**config_env(config), **azurebatch_env(batch)}, shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="session")
def conformance_omnibio_tes(docker_rig, moto_server) -> Iterator[BackendSetup]:
    """Staging mode: the TES test server moves files through moto S3, mounts nothing."""
    from tests.e2e.tes.support import BUCKET, tes_config
    from tests.emulators.tes_server import S3Access, TesServer

    moto_server.bucket(BUCKET)
    run_root = _shared_root("tes")  # any directory of this host: files are staged
    try:
        with TesServer(
            s3=S3Access(moto_server.endpoint, "testing", "testing"), workers=4
        ) as server:
            config = {**tes_config(server.url), **NO_RESULTS}
            yield {**config_env(config), **moto_server.env()}, run_root
    finally:
        shutil.rmtree(run_root, ignore_errors=True)


@pytest.fixture(scope="session")
def conformance_omnibio_slurm(docker_rig) -> Iterator[BackendSetup]:
    from tests.e2e.slurm.conftest import slurm_answers, slurm_config

    require(slurm_answers(), "no Slurm cluster answers sinfo (tests/rig/slurm.sh starts one)")
    shared = _shared_root("slurm")
    try:
        # no start-time probe job before each example: tests/e2e/slurm and the preflight test it
        yield config_env({**slurm_config(shared, probe="false"), **NO_RESULTS}), shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)
