"""Shared pytest fixtures: the rig (dockerd, images, one moto server and one Azurite per session)
and how the suite is split across pytest-xdist workers (tests/run_all.sh)."""

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers import REPO, docker_available

IN_CI = os.environ.get("CI", "").lower() == "true"
# the conformance suite's per-backend setups, used by the scenario suite too: one plugin, so one
# instance of each per session (a fixture imported into two conftests would be two)
pytest_plugins = ("tests.conformance.backends",)

BACKENDS = ("docker", "awsbatch", "azurebatch", "tes", "slurm")
# xdist group of the tests not parametrized by backend, by path (first match): a backend's tests
# share its session fixtures (emulators, shared directories) and, for Slurm, the one-node cluster
GROUPS = {
    **{f"tests/e2e/{b}/": b for b in BACKENDS},
    **{f"tests/e2e/preflight/test_preflight_{b}.py": b for b in BACKENDS},
    "tests/e2e/examples/": "docker",
    "tests/e2e/report/": "docker",
    "tests/e2e/runtime/": "runtime",
    "tests/emulators/test_moto_batch.py": "awsbatch",
    "tests/emulators/test_azurebatch_emulator": "azurebatch",
    "tests/emulators/test_tes_server.py": "tes",
}
# The order xdist hands the groups out in (run_all.sh keeps it: --no-loadscope-reorder). Each of
# the 3 workers gets two groups at the start, the 1st and 4th, 2nd and 5th, 3rd and 6th, then
# the tests of no group as workers free up. Worker-seconds per group in a fresh clone's run:
# slurm 482 (the rig's one node runs its jobs few at a time), awsbatch 368, tes 307, docker
# 277, azurebatch 269, runtime 31, no group 82: so slurm pairs with runtime and the rest pair
# up evenly (the longest worker 637 s, against 689 s in collection order).
ORDER = ("slurm", "awsbatch", "tes", "runtime", "azurebatch", "docker")
# tests that depend on the host's cores or measure time: tests/run_all.sh runs them alone, after
# the others (-m serial)
SERIAL = ("tests/e2e/docker/test_lifecycle.py::test_admission_queues_tasks_that_do_not_fit",)


def backend_group(item: pytest.Item) -> str | None:
    """The backend a test runs on: its omnibio_* parameter, else its path, else a name that
    starts with it (test_slurm_..., as tests/e2e/oom names them); None: any worker."""
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec else ():
        if isinstance(value, str) and value.removeprefix("omnibio_") in BACKENDS:
            return value.removeprefix("omnibio_")
    path = os.path.relpath(str(item.path), REPO)
    by_path = next((group for prefix, group in GROUPS.items() if path.startswith(prefix)), None)
    return by_path or next((b for b in BACKENDS if item.name.startswith(f"test_{b}_")), None)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads xdist_group into the node id
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    groups = {item.nodeid: backend_group(item) for item in items}
    for item in items:
        if groups[item.nodeid]:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
        if item.nodeid.startswith(SERIAL):
            item.add_marker(pytest.mark.serial)
    rank = {group: index for index, group in enumerate(ORDER)}
    items.sort(key=lambda item: rank.get(groups[item.nodeid] or "", len(ORDER)))  # stable


def require(condition: bool, why: str) -> None:
    """Skip locally when a rig part is missing; under CI=true that is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {why} (run tests/rig/setup.sh)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def docker_rig():
    require(docker_available(), "dockerd is not answering")
    for image in ("omnibio/base:bookworm", "omnibio/runtime:latest", "ubuntu:22.04"):
        found = (
            subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
            == 0
        )
        require(found, f"local image {image} is missing")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """The session's moto server (Batch, S3, Logs behind the proxy); users take their own
    account or bucket on it by name (MotoServer.account, MotoServer.bucket)."""
    require(importlib.util.find_spec("moto") is not None, "moto[server] is not installed")
    from tests.emulators.moto_server import MotoServer

    server = MotoServer(str(tmp_path_factory.mktemp("moto") / "moto.log")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite_server() -> Iterator:
    """The session's Azurite; users take their own blob container on it (Azurite.container)."""
    from tests.emulators.azurite import Azurite, azurite_binary

    require(azurite_binary() is not None, "Azurite is not installed (tests/rig/setup.sh)")
    with Azurite() as blob:
        yield blob


@pytest.fixture
def workdir(tmp_path):
    """A run directory; world-readable so containers running as other users can read inputs."""
    os.chmod(tmp_path, 0o755)
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)
