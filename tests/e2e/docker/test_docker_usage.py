"""omnibio_docker's measured usage end to end: the task's container reads its own cgroup after
the command ends, and the run's trace shows the peak memory and CPU seconds."""

import json
import os

import pytest

from miniwdl_omnibio.engines.docker.status import USAGE_SOURCE
from miniwdl_omnibio.engines.docker.translate import RECORD_DIR
from miniwdl_omnibio.engines.jobscript import read_exit_record
from tests.e2e.docker.support import run_dir
from tests.helpers import run_miniwdl

pytestmark = pytest.mark.usefixtures("docker_rig")

MIB = 1 << 20

# touches 200 MiB, then spins until the process has used 2 s of CPU; exits 3 when asked
USAGE_WDL = r"""
version 1.1
task burn {
  input { Int code = 0 }
  command <<<
    python3 -c '
import sys, time
held = bytearray(b"\x07") * (200 << 20)
while time.process_time() < 2.0:
    pass
print(len(held))
sys.exit(~{code})
'
  >>>
  output { Int n = read_int(stdout()) }
  runtime { docker: "omnibio/runtime:latest" cpu: 1 memory: "400 MiB" }
}
"""


def _trace_row(run) -> dict:
    with open(os.path.join(run_dir(run), "omnibio_trace.json")) as infile:
        (row,) = json.load(infile)["attempts"]
    return row


def test_the_trace_shows_the_containers_peak_memory_and_cpu(workdir):
    wdl = workdir / "burn.wdl"
    wdl.write_text(USAGE_WDL)
    run = run_miniwdl(str(wdl), [], str(workdir))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["burn.n"] == 200 * MIB
    row = _trace_row(run)
    # the whole container: python's 200 MiB plus the interpreter and the shells, within 15%
    assert row["peak_memory"] and 200 * MIB <= row["peak_memory"] <= 1.15 * 200 * MIB, row
    assert row["cpu_seconds"] and 2.0 <= row["cpu_seconds"] <= 2.3, row
    assert row["usage"] == USAGE_SOURCE and row["ending"] == "ok", row
    assert row["image_id"].startswith("sha256:"), row  # the image the container ran
    record = os.path.join(run_dir(run), RECORD_DIR, "omnibio_exit.1")  # a task run: its dir
    started, found = read_exit_record(record)
    assert started and found is not None and found.exit_code == 0 and not found.oom, found


def test_the_attempt_keeps_the_commands_exit_code(workdir):
    wdl = workdir / "burn.wdl"
    wdl.write_text(USAGE_WDL)
    run = run_miniwdl(str(wdl), ["code=3"], str(workdir))
    assert run.returncode != 0
    row = _trace_row(run)
    assert row["exit_code"] == 3 and row["ending"] == "failed", row
    assert row["peak_memory"] >= 200 * MIB and row["cpu_seconds"] >= 2.0, row


def test_an_oom_kill_is_in_the_record_as_docker_says(workdir):
    """Under a hard limit the kernel kills python, not the job script: docker's OOMKilled and
    the record's oom_kill agree, and the peak is the limit's."""
    wdl = workdir / "burn.wdl"
    wdl.write_text(USAGE_WDL.replace('memory: "400 MiB"', 'memory: "100 MiB"'))
    config = {"task_runtime": {"memory_limit_multiplier": "1.0"}}
    run = run_miniwdl(str(wdl), [], str(workdir), config=config)
    assert run.returncode != 0
    row = _trace_row(run)
    assert row["ending"] == "oom" and row["exit_code"] == 137, row
    assert 90 * MIB <= row["peak_memory"] <= 100 * MIB, row
    _started, found = read_exit_record(os.path.join(run_dir(run), RECORD_DIR, "omnibio_exit.1"))
    assert found is not None and found.oom and found.exit_code == 137, found
