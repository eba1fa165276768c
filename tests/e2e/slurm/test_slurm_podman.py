"""omnibio_slurm with container_runtime = podman, end to end on the rig's Slurm.

podman (Debian 12: 4.3 on runc) sets RLIMIT_NOFILE and RLIMIT_NPROC in every container it
starts, by default above what a process without CAP_SYS_RESOURCE may set: on this rig (itself a
container) that fails with "error setting rlimit type 7: operation not permitted". runtime_options
gives podman ulimits within the job's own, and then it runs here.
"""

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import require
from tests.e2e.slurm.conftest import slurm_config
from tests.helpers import run_miniwdl, workflow_run_of

PODMAN_OPTIONS = "--ulimit nofile=1024:1024 --ulimit nproc=4096:4096"
TASK = """
version 1.1
task hello {
  input { Int code }
  command <<< echo "$RUN_ID" > run_id.txt; echo "to stderr" >&2; exit ~{code} >>>
  output { String run_id = read_string("run_id.txt") }
  runtime { docker: "ubuntu:22.04" memory: "64 MiB" omnibio_result_check: "off" }
}
"""


@pytest.fixture(scope="module")
def podman(slurm_rig):
    ready = shutil.which("podman") is not None and (
        subprocess.run(["podman", "image", "exists", "ubuntu:22.04"], timeout=60).returncode == 0
    )
    require(ready, "podman with ubuntu:22.04 in its store (tests/rig/slurm.sh)")


def run_hello(shared_dir, rundir, code):
    wdl = os.path.join(rundir, "hello.wdl")
    with open(wdl, "w") as out:
        out.write(TASK)
    config = slurm_config(shared_dir, container_runtime="podman", runtime_options=PODMAN_OPTIONS)
    return run_miniwdl(wdl, [f"code={code}"], rundir, backend="omnibio_slurm", config=config)


def test_podman_runs_the_task_with_its_contract(podman, shared_dir, rundir):
    run = run_hello(shared_dir, rundir, 0)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["hello.run_id"] == f"{workflow_run_of(run.dir)}.hello.1"
    with open(os.path.join(run.dir, "stderr.txt")) as infile:
        assert "to stderr" in infile.read()
    listed = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True)
    assert b"omnibio-" not in listed.stdout  # the job script removed its container


def test_podman_exit_code_is_the_tasks(podman, shared_dir, rundir):
    run = run_hello(shared_dir, rundir, 3)
    assert run.returncode != 0
    assert '"exit_code": 3' in json.dumps(run.error_json()), run.stderr[-2000:]
