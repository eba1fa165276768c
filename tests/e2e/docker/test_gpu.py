"""runtime.gpu on omnibio_docker. On a host with an NVIDIA GPU and container toolkit the task
gets the GPU; elsewhere the test checks the refusal (one line naming the cause, no container
left) and says, as a warning in pytest's summary, that the GPU path itself did not run."""

import glob
import shutil
import warnings

import docker
import pytest

from tests.e2e.docker.support import run_dir
from tests.helpers import containers_with_label, error_line, run_miniwdl, workflow_run_of

pytestmark = pytest.mark.usefixtures("docker_rig")

WDL = """
version 1.1
task g {
  command <<<
    nvidia-smi -L
    echo "$RESOURCES_JSON"
  >>>
  output { Array[String] seen = read_lines(stdout()) }
  runtime { docker: "ubuntu:22.04" gpu: true }
}
"""


class GpuPathNotRun(UserWarning):
    """The positive runtime.gpu path could not run on this host."""


def nvidia_host() -> bool:
    """A GPU device and dockerd able to hand it to a container (the NVIDIA toolkit's runtime or
    its hook, which dockerd looks up for --gpus)."""
    runtimes = docker.from_env().info().get("Runtimes", {})
    toolkit = "nvidia" in runtimes or shutil.which("nvidia-container-runtime-hook") is not None
    return toolkit and bool(glob.glob("/dev/nvidia[0-9]*"))


def test_runtime_gpu(workdir):
    wdl = workdir / "g.wdl"
    wdl.write_text(WDL)
    run = run_miniwdl(str(wdl), [], str(workdir))
    if nvidia_host():
        assert run.returncode == 0, run.stderr[-3000:]
        listing, resources = run.outputs["g.seen"][0], run.outputs["g.seen"][-1]
        assert listing.startswith("GPU 0:"), run.outputs
        assert '"gpu": 1' in resources, resources
        return
    assert run.returncode != 0
    line = error_line(run)
    assert line.startswith("docker could not start the container of ubuntu:22.04: "), line
    assert "runtime.gpu needs a GPU and the NVIDIA container toolkit on this host" in line, line
    assert "\n" not in line and "Traceback" not in line
    assert containers_with_label("omnibio.run", workflow_run_of(run_dir(run))) == []
    warnings.warn(
        GpuPathNotRun(
            "runtime.gpu: no NVIDIA GPU and container toolkit here, so only the refusal was "
            "checked; a task on a GPU did not run"
        ),
        stacklevel=1,
    )
