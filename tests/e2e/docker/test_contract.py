"""The environment contract on omnibio_docker, checked from inside tasks (tests/scenarios)."""

import pytest

from tests.scenarios.contract import check_contract, check_contract_form_clash

pytestmark = pytest.mark.usefixtures("docker_rig")


def test_contract_seen_from_inside_a_task(workdir):
    check_contract("omnibio_docker", {}, str(workdir))


def test_contract_wins_over_the_other_form_of_a_variable(workdir):
    check_contract_form_clash("omnibio_docker", {}, str(workdir))
