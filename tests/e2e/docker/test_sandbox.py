"""docs/docker.md, "What a task can reach" (network = sandbox), each promise checked from inside
tasks: outbound connections work, nothing reaches a task from outside, the host's loopback is not
the task's, localhost is shared by the tasks of one run and not with another run, and the only
host paths a task sees are its own.

"Outside" is a network namespace this test creates and routes through the host, as a machine on
the host's network would be; the probes connect over real sockets.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass

import docker
import pytest

from tests.conftest import require
from tests.e2e.docker.support import (
    bridge_gateway,
    connect,
    free_port,
    tcp_server,
)
from tests.helpers import (
    containers_with_label,
    popen_miniwdl,
    run_dir_name,
    run_miniwdl,
    wait_until,
    workflow_run_of,
)

pytestmark = pytest.mark.usefixtures("docker_rig")

WDL = r"""
version 1.2
workflow reach {
  input {
    Directory control
    Int port
    Array[String] targets
  }
  call listen { input: control, port }
  call probe { input: control, port, targets }
  output {
    String listener_netns = listen.netns
    File probe_seen = probe.seen
  }
}

task listen {
  input {
    Directory control
    Int port
  }
  command <<<
    python3 - '~{control}' ~{port} <<'PY'
    import os, socket, sys, time
    control, port = sys.argv[1], int(sys.argv[2])
    netns = os.readlink("/proc/self/ns/net")
    server = socket.create_server(("0.0.0.0", port))
    server.settimeout(0.2)
    print("listening", flush=True, file=sys.stderr)
    deadline = time.monotonic() + 600  # only if the test never says stop
    while not os.path.exists(os.path.join(control, "stop")) and time.monotonic() < deadline:
        try:
            connection, peer = server.accept()
        except OSError:
            continue
        print("served", peer[0], flush=True, file=sys.stderr)
        connection.sendall(("listener " + netns).encode())
        connection.close()
    print(netns)
    PY
  >>>
  output { String netns = read_string(stdout()) }
  requirements { container: "ubuntu:22.04" cpu: 1 }
}

task probe {
  input {
    Directory control
    Int port
    Array[String] targets
  }
  command <<<
    python3 - '~{control}' ~{port} ~{sep(" ", targets)} <<'PY'
    import json, os, socket, sys, time

    def attempt(host, port):
        try:
            with socket.create_connection((host, port), timeout=5) as connection:
                return connection.recv(200).decode()
        except ConnectionRefusedError:
            return "refused"
        except socket.timeout:
            return "timeout"
        except OSError as exn:
            return "error " + str(exn)

    control, port = sys.argv[1], int(sys.argv[2])
    deadline = time.monotonic() + 600  # the test says go once the run's listener listens
    while not os.path.exists(os.path.join(control, "go")) and time.monotonic() < deadline:
        time.sleep(0.2)
    seen = {"netns": os.readlink("/proc/self/ns/net"), "run localhost": attempt("127.0.0.1", port)}
    for target in sys.argv[3:]:
        name, host, target_port = target.split(":")
        seen[name] = attempt(host, int(target_port))
    seen["binds"] = []  # every mount but the image's root and the kernel's /proc, /dev, /sys
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        point = fields[4]
        if point != "/" and point.split("/")[1] not in ("proc", "dev", "sys"):
            seen["binds"].append([point, fields[5].split(",")[0]])
    json.dump(seen, open("seen.json", "w"))
    PY
  >>>
  output { File seen = "seen.json" }
  requirements { container: "ubuntu:22.04" cpu: 1 }
}
"""

OTHER_RUN = r"""
version 1.1
task other {
  input { Int port }
  command <<<
    python3 - ~{port} <<'PY'
    import os, socket, sys
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
        answer = "connected"
    except ConnectionRefusedError:
        answer = "refused"
    print(os.readlink("/proc/self/ns/net"), answer)
    PY
  >>>
  output { Array[String] seen = read_lines(stdout()) }
  runtime { docker: "ubuntu:22.04" }
}
"""

# Runs in the outside namespace: serves one reply per connection, or makes one connection.
OUTSIDE_SERVER = """
import socket, sys
server = socket.create_server(("0.0.0.0", 0))
print(server.getsockname()[1], flush=True)
while True:
    connection, _peer = server.accept()
    connection.sendall(b"outside")
    connection.close()
"""
OUTSIDE_CONNECT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as connection:
        print(connection.recv(200).decode())
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
except OSError as exn:
    print("error", exn)
"""


@dataclass
class Outside:
    """A network namespace routed through the host: another machine on the host's network."""

    namespace: str
    address: str  # its own address
    host_address: str  # the host's address on the link between them
    server_port: int

    def connect(self, host: str, port: int) -> str:
        argv = ["ip", "netns", "exec", self.namespace, sys.executable, "-c", OUTSIDE_CONNECT]
        return subprocess.run(
            [*argv, host, str(port)], check=True, capture_output=True, text=True
        ).stdout.strip()


@pytest.fixture(scope="module")
def outside():
    require(
        os.geteuid() == 0 and shutil.which("ip") is not None,
        "the sandbox test makes a network namespace: it needs root and iproute2",
    )
    tag = uuid.uuid4().hex[:6]
    namespace, host_end, outside_end = f"omnibio-out-{tag}", f"obo{tag}h", f"obo{tag}o"
    subnet = int(tag[:2], 16)
    host_address, address = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    bridge = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"][0]["Subnet"]
    server = None
    try:
        for argv in (
            ["ip", "netns", "add", namespace],
            ["ip", "link", "add", host_end, "type", "veth", "peer", "name", outside_end],
            ["ip", "link", "set", outside_end, "netns", namespace],
            ["ip", "addr", "add", f"{host_address}/30", "dev", host_end],
            ["ip", "link", "set", host_end, "up"],
            ["ip", "-n", namespace, "addr", "add", f"{address}/30", "dev", outside_end],
            ["ip", "-n", namespace, "link", "set", outside_end, "up"],
            ["ip", "-n", namespace, "link", "set", "lo", "up"],
            # as a router would, it knows the host leads to Docker's bridge network
            ["ip", "-n", namespace, "route", "add", bridge, "via", host_address],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", OUTSIDE_SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
        yield Outside(namespace, address, host_address, port)
    finally:
        if server:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)


def test_what_a_task_can_reach(workdir, outside):
    gateway = bridge_gateway()
    wdl = workdir / "reach.wdl"
    wdl.write_text(WDL)
    control = workdir / "control"
    control.mkdir()
    port = free_port()
    with (
        tcp_server("127.0.0.1", b"host loopback") as loopback_port,
        tcp_server(gateway, b"host gateway") as gateway_port,
    ):
        targets = {
            "host_loopback_service": f"127.0.0.1:{loopback_port}",
            "host_loopback_service_via_the_gateway": f"{gateway}:{loopback_port}",
            "host_service_on_the_gateway": f"{gateway}:{gateway_port}",
            "outside": f"{outside.address}:{outside.server_port}",
        }
        args = [f"control={control}", f"port={port}"]
        args += [f"targets={name}:{target}" for name, target in targets.items()]
        proc = popen_miniwdl(str(wdl), args, str(workdir))
        try:
            call_dir = workdir / run_dir_name(str(workdir))
            run_name = workflow_run_of(str(call_dir))
            listener_log = call_dir / "call-listen" / "stderr.txt"
            wait_until(
                lambda: listener_log.exists() and "listening" in listener_log.read_text(),
                "the listener task to listen",
            )
            (control / "go").touch()  # the probe task connects now, once
            inbound = {
                "from this host, to its loopback": connect("127.0.0.1", port),
                "from outside, to the host": outside.connect(outside.host_address, port),
            }
            sandbox_address = _sandbox_address(run_name)
            if sandbox_address:
                inbound["from outside, to the sandbox"] = outside.connect(sandbox_address, port)
                # the control: the host itself does reach a task through Docker's bridge
                from_host = connect(sandbox_address, port)
            other = _other_run(workdir, port)
            probe_seen = call_dir / "call-probe" / "work" / "seen.json"
            wait_until(probe_seen.exists, "the probe task to finish")
        except BaseException:
            proc.terminate()  # miniwdl removes the run's containers
            raise
        finally:
            (control / "stop").touch()
            stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    listener_netns = json.loads(stdout)["outputs"]["reach.listener_netns"]
    seen = json.loads(probe_seen.read_text())

    # localhost is shared within the run ...
    assert seen["netns"] == listener_netns, seen
    assert seen["run localhost"] == f"listener {listener_netns}", seen
    # ... and not with another run
    other_netns, other_answer = other
    assert other_netns != listener_netns and other_answer == "refused", other
    # outbound: to the host's bridge address, and routed through the host to another machine
    assert seen["host_service_on_the_gateway"] == "host gateway", seen
    assert seen["outside"] == "outside", seen
    # the host's loopback is not the task's
    assert seen["host_loopback_service"] == "refused", seen
    assert seen["host_loopback_service_via_the_gateway"] == "refused", seen
    # nothing reaches the task from outside: no port is published
    assert sandbox_address, "the run's sandbox has no address on Docker's default bridge"
    assert from_host.startswith("listener "), f"the control failed: {from_host}"
    assert all(not answer.startswith("listener") for answer in inbound.values()), inbound
    assert f"served {outside.address}" not in listener_log.read_text()
    # the host paths it sees: its own files (in miniwdl's container directory) and docker's three
    docker_files = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
    strays = [
        point
        for point, _mode in seen["binds"]
        if not point.startswith("/mnt/miniwdl_task_container/") and point not in docker_files
    ]
    assert strays == [] and len(seen["binds"]) > len(docker_files), seen["binds"]
    assert containers_with_label("omnibio.run", run_name) == []


def _sandbox_address(run_name: str) -> str:
    containers = containers_with_label("omnibio.run", run_name)
    (sandbox,) = [c for c in containers if "omnibio.sandbox" in c.labels]
    return str(sandbox.attrs["NetworkSettings"]["IPAddress"])


def _other_run(workdir, port: int) -> tuple[str, str]:
    """Another run, while the first one listens: its task's network namespace and whether it
    could connect to the first run's port on its localhost."""
    other_dir = workdir / "other"
    other_dir.mkdir()
    other_wdl = workdir / "other.wdl"
    other_wdl.write_text(OTHER_RUN)
    other = run_miniwdl(str(other_wdl), [f"port={port}"], str(other_dir))
    assert other.returncode == 0, other.stderr[-3000:]
    netns, answer = other.outputs["other.seen"][0].split()
    return netns, answer
