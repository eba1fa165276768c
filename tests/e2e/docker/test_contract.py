"""The environment contract on omnibio_docker, checked from inside tasks (tests/scenarios)."""

import pytest

from tests.scenarios.contract import check_contract

pytestmark = pytest.mark.usefixtures("docker_rig")


def test_contract_seen_from_inside_a_task(workdir):
    check_contract("omnibio_docker", {}, str(workdir))
