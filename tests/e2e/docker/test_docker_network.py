"""runtime.docker_network: a task joins a docker network of its choice only when
[omnibio_docker] allow_networks names it (docs/docker.md); else it stays in the run's sandbox."""

import ipaddress
import json
import uuid

import docker
import pytest

from tests.helpers import containers_with_label, error_line, run_miniwdl, workflow_run_of

pytestmark = pytest.mark.usefixtures("docker_rig")

WDL = """
version 1.1
task where {
  input { String network }
  command <<< python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))' >>>
  output { String address = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" docker_network: network }
}
"""


@pytest.fixture
def network():
    created = docker.from_env().networks.create(f"omnibio-test-{uuid.uuid4().hex[:8]}")
    created.reload()
    yield created
    created.remove()


def _subnet(network) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"])


def _run(workdir, name: str, allowed: list[str]):
    wdl = workdir / "where.wdl"
    wdl.write_text(WDL)
    config = {"omnibio_docker": {"allow_networks": json.dumps(allowed)}}
    return run_miniwdl(str(wdl), [f"network={name}"], str(workdir), config=config)


def test_an_allowed_network_is_joined(workdir, network):
    run = _run(workdir, network.name, [network.name])
    assert run.returncode == 0, run.stderr[-3000:]
    assert ipaddress.ip_address(run.outputs["where.address"]) in _subnet(network)
    assert "ignored" not in run.stderr
    network.reload()
    assert network.attrs["Containers"] == {}  # the task's container is gone from it


def test_a_network_not_allowed_is_refused_with_a_warning(workdir, network):
    run = _run(workdir, network.name, [])
    assert run.returncode == 0, run.stderr[-3000:]
    address = ipaddress.ip_address(run.outputs["where.address"])
    assert address not in _subnet(network)
    assert address in _subnet(docker.from_env().networks.get("bridge"))  # the run's sandbox
    assert (
        f"runtime.docker_network '{network.name}' ignored: not in [omnibio_docker] allow_networks"
        in run.stderr
    )


def test_an_allowed_network_that_does_not_exist_is_one_line(workdir):
    missing = f"omnibio-missing-{uuid.uuid4().hex[:8]}"
    run = _run(workdir, missing, [missing])
    assert run.returncode != 0
    line = error_line(run)
    assert missing in line and "\n" not in line and "Traceback" not in line, line
    assert containers_with_label("omnibio.run", workflow_run_of(run.dir)) == []
