"""docs/docker.md promises checked on a running container: the per-task labels, and the
`network` modes other than the default sandbox (bridge, none, host)."""

import json
import os

import pytest

from tests.e2e.docker.support import task_containers
from tests.helpers import DEADLINE, popen_miniwdl, run_dir_name, wait_until, workflow_run_of

pytestmark = pytest.mark.usefixtures("docker_rig")

# The task says what it sees, then waits for the test's "go" (the cap only ends a task whose
# test died): the test inspects the container while it runs.
WDL = """
version 1.2
workflow w {
  input { Directory control }
  call see { input: control }
}
task see {
  input { Directory control }
  command <<<
    echo "$RUN_ID" > run_id
    ls /sys/class/net > nets
    for _ in $(seq 3000); do [ -e '~{control}/go' ] && break; sleep 0.2; done
  >>>
  output {
    String run_id = read_string("run_id")
    Array[String] nets = read_lines("nets")
  }
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
"""


def _running(workdir, network: str | None = None):
    """Start the run, return (process, its run name, the running task container)."""
    (workdir / "w.wdl").write_text(WDL)
    control = workdir / "control"
    control.mkdir()
    env = {"MINIWDL__OMNIBIO_DOCKER__NETWORK": network} if network else {}
    proc = popen_miniwdl(str(workdir / "w.wdl"), [f"control={control}"], str(workdir), env=env)
    runs = lambda: [d for d in os.listdir(workdir) if d[:8].isdigit()]  # noqa: E731
    try:
        wait_until(lambda: proc.poll() is not None or runs(), "a run directory")
    except BaseException:
        proc.kill()
        raise
    assert proc.poll() is None, proc.communicate()[1][-3000:]  # e.g. the WDL did not load
    directory = os.path.join(str(workdir), run_dir_name(str(workdir)))
    name = workflow_run_of(directory)
    work = os.path.join(directory, "call-see", "work")

    def started():
        found = [c for c in task_containers(name) if c.status == "running"]
        return found if found and os.path.exists(os.path.join(work, "nets")) else None

    try:
        (container,) = wait_until(started, "the task's container to run")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    container.reload()
    return proc, name, container, control


def _finish(proc, control) -> dict:
    (control / "go").touch()
    stdout, stderr = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(stdout)["outputs"]


def test_each_task_container_is_labelled_with_its_run_call_task_attempt_and_run_id(workdir):
    proc, name, container, control = _running(workdir)
    labels = dict(container.labels)
    outputs = _finish(proc, control)
    assert labels["omnibio.run"] == name
    assert labels["omnibio.call"] == "call-see"
    assert labels["omnibio.task"] == "see"
    assert labels["omnibio.attempt"] == "1"
    assert labels["omnibio.run_id"] == outputs["w.see.run_id"]  # the task's own RUN_ID


def _fixed(interfaces) -> set[str]:
    """Interfaces that do not come and go with other containers (their veth pairs do)."""
    return {name for name in interfaces if not name.startswith("veth")}


@pytest.mark.parametrize("network", ["bridge", "none", "host"])
def test_network_modes(workdir, network):
    proc, _name, container, control = _running(workdir, network)
    mode = container.attrs["HostConfig"]["NetworkMode"]
    outputs = _finish(proc, control)
    nets = set(outputs["w.see.nets"])
    assert mode == network  # its own namespace (bridge), none at all, or the host's
    if network == "bridge":
        assert nets == {"lo", "eth0"}
    elif network == "none":
        assert nets == {"lo"}
    else:
        assert _fixed(nets) == _fixed(os.listdir("/sys/class/net")) and "docker0" in nets


def test_the_default_sandbox_shares_one_namespace_per_run(workdir):
    """The control for the modes above: by default the task joins the run's sandbox."""
    proc, name, container, control = _running(workdir)
    mode = container.attrs["HostConfig"]["NetworkMode"]
    _finish(proc, control)
    assert mode.startswith("container:")
