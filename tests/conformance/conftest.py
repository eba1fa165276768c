"""Per-backend setups for the conformance test: one session fixture per backend.

A backend's fixture yields ``(env, run_root)``:

* ``env``: the MINIWDL__SECTION__KEY variables that point miniwdl and the backend at its rig
  (emulator endpoints, queues, shared-filesystem paths...). The backend itself is chosen by the
  test; nothing else from the caller's MINIWDL__ environment or config file applies.
* ``run_root``: a directory miniwdl's host can write where the examples, their data files and
  their run directories go. Cloud backends must give a directory on their shared filesystem
  (under ``[section] host_mount_path``), since task inputs and outputs live in the run directory.

To add a backend: write its fixture here (it may build on the backend's own rig fixtures) and
name it in ``test_conformance.BACKEND_FIXTURES``.
"""

import os
from typing import Dict, Iterator, Tuple

import pytest

BackendSetup = Tuple[Dict[str, str], str]


@pytest.fixture(scope="session")
def conformance_omnibio_docker(docker_rig, tmp_path_factory) -> Iterator[BackendSetup]:
    run_root = tmp_path_factory.mktemp("conformance-omnibio_docker")
    os.chmod(run_root, 0o755)
    yield {}, str(run_root)
