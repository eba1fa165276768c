"""Shared pytest fixtures: the rig (dockerd, images) and a way to run miniwdl for real."""

import os
import shutil
import subprocess

import pytest

from tests.helpers import docker_available

IN_CI = os.environ.get("CI", "").lower() == "true"


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


@pytest.fixture
def workdir(tmp_path):
    """A run directory; world-readable so containers running as other users can read inputs."""
    os.chmod(tmp_path, 0o755)
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)
