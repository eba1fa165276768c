"""A real out-of-memory kill retried with more memory (issue 21, point 5), and an exit 137 that
is not one: on omnibio_docker, the rig's Slurm, and the AWS and Azure Batch emulators.

The task asks for 64 MiB and allocates 160 MiB: the service kills it at its limit. With a
multiplier of 4 the retry asks for 256 MiB and passes; RESOURCES_JSON and the trace show it.
"""

import json
import os
import re
import subprocess

import docker
import pytest

from tests.e2e.awsbatch.conftest import run_batch
from tests.e2e.azurebatch.conftest import azurebatch_config, azurebatch_env
from tests.e2e.slurm.conftest import slurm_config
from tests.helpers import run_miniwdl

MiB = 1 << 20
ASKED = 64 * MiB
RAISED = 4 * ASKED

HUNGRY = """
version 1.1
task hungry {
  command <<<
    echo "$RESOURCES_JSON"
    python3 -c 'x = bytearray(160 * 1024 * 1024); print(len(x))'
  >>>
  output { Array[String] said = read_lines(stdout()) }
  runtime {
    docker: "omnibio/runtime:latest" memory: "64 MiB" maxRetries: 1 omnibio_result_check: "off"
    RUNTIME
  }
}
"""

# exit 137 with no OOM: the shell kills itself; the retry must ask for the same memory
SELF_KILLED = """
version 1.1
task self_killed {
  command <<<
    echo "$RESOURCES_JSON"
    kill -9 $$
  >>>
  runtime {
    docker: "omnibio/runtime:latest" memory: "64 MiB" maxRetries: 1 omnibio_result_check: "off"
  }
}
"""


def _write(where, name, text, runtime=""):
    path = os.path.join(where, name)
    with open(path, "w") as out:
        out.write(text.replace("RUNTIME", runtime))
    return path


def _trace(run_dir):
    with open(os.path.join(run_dir, "omnibio_trace.json")) as infile:
        rows = json.load(infile)["attempts"]
    return [(row["attempt"], row["ending"], row["memory"]) for row in rows]


def _raises(stderr):
    return re.findall(r"memory raised after out of memory :: [^\n]*", stderr)


def _check_retried_with_more_memory(run, cap, first_ran=True):
    assert run.returncode == 0, run.stderr[-3000:]
    said = run.outputs["hungry.said"]
    assert json.loads(said[0])["memory"] == RAISED, said  # the retry's RESOURCES_JSON
    assert said[1] == str(160 * MiB)
    assert _trace(run.dir) == [(1, "oom", ASKED), (2, "ok", RAISED)]
    raises = _raises(run.stderr)
    assert raises == [
        f"memory raised after out of memory :: from: {ASKED}, to: {RAISED}, multiplier: 4.0, "
        f"cap: {cap}"
    ], run.stderr[-3000:]
    if first_ran:
        with open(os.path.join(run.dir, "stdout.txt")) as infile:  # the first attempt's
            assert json.loads(infile.readline())["memory"] == ASKED


def _check_not_raised(run):
    assert run.returncode != 0
    assert _trace(run.dir) == [(1, "failed", ASKED), (2, "failed", ASKED)]
    for name in ("stdout.txt", "stdout2.txt"):
        with open(os.path.join(run.dir, name)) as infile:
            assert json.loads(infile.readline())["memory"] == ASKED
    assert "exit_code: 137" in run.stderr or '"exit_code": 137' in run.stderr
    assert not _raises(run.stderr)


DOCKER = {
    "omnibio": {"memory_retry_multiplier": "4", "retry_wait": "0"},
    # miniwdl's rule on omnibio_docker: runtime.memory is a hard limit only under the multiplier
    "task_runtime": {"memory_limit_multiplier": "1.0"},
}


def _host_memory():
    return int(docker.from_env().info()["MemTotal"])


def test_docker_oom_is_retried_with_more_memory(docker_rig, workdir):
    wdl = _write(str(workdir), "hungry.wdl", HUNGRY)
    run = run_miniwdl(wdl, [], str(workdir), config=DOCKER)
    _check_retried_with_more_memory(run, _host_memory())


def test_docker_exit_137_without_oom_is_not_raised(docker_rig, workdir):
    wdl = _write(str(workdir), "killed.wdl", SELF_KILLED)
    run = run_miniwdl(wdl, [], str(workdir), config=DOCKER)
    _check_not_raised(run)


def test_docker_oom_without_a_multiplier_is_retried_as_is(docker_rig, workdir):
    wdl = _write(str(workdir), "hungry.wdl", HUNGRY)
    config = {**DOCKER, "omnibio": {"retry_wait": "0"}}
    run = run_miniwdl(wdl, [], str(workdir), config=config)
    assert run.returncode != 0
    assert _trace(run.dir) == [(1, "oom", ASKED), (2, "oom", ASKED)]
    assert not _raises(run.stderr)


def _slurm_largest():
    """The largest node's memory, as the engine reads it from sinfo (MiB)."""
    done = subprocess.run(
        ["sinfo", "--noheader", "--format=%m"], capture_output=True, text=True, check=True
    )
    return max(int(line.strip().rstrip("+")) for line in done.stdout.split()) * MiB


@pytest.mark.usefixtures("slurm_rig")
def test_slurm_oom_is_retried_with_the_task_multiplier(shared_dir, rundir):
    """Here the task sets runtime.omnibio_memory_retry_multiplier; no [omnibio] key is set."""
    wdl = _write(rundir, "hungry.wdl", HUNGRY, "omnibio_memory_retry_multiplier: 4.0")
    run = run_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=slurm_config(shared_dir))
    _check_retried_with_more_memory(run, _slurm_largest())


@pytest.mark.usefixtures("slurm_rig")
def test_slurm_exit_137_without_oom_is_not_raised(shared_dir, rundir):
    wdl = _write(rundir, "killed.wdl", SELF_KILLED)
    config = slurm_config(shared_dir)
    config["omnibio"]["memory_retry_multiplier"] = "4"
    run = run_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=config)
    _check_not_raised(run)


# Batch's words for a container its OOM killer stopped (the reason engines/awsbatch/status.OOM matches)
BATCH_OOM = "OutOfMemoryError: Container killed due to memory usage"
AWS = {"omnibio": {"memory_retry_multiplier": "4", "retry_wait": "0"}}


def _submitted_memory(batch_proxy):
    """Each SubmitJob's MEMORY in MiB, as sent."""
    return [
        {r["type"]: r["value"] for r in job["containerOverrides"]["resourceRequirements"]}["MEMORY"]
        for job in batch_proxy.submitted()
    ]


def test_awsbatch_oom_is_retried_with_more_memory(moto, shared, batch_proxy):
    """moto (moto_batch.py, 7) runs the job's container under its MEMORY: the first attempt is
    killed for real and DescribeJobs gives Batch's OutOfMemoryError; the retry runs."""
    run = run_batch(moto, shared, HUNGRY.replace("RUNTIME", ""), config=AWS)
    _check_retried_with_more_memory(run, _cap(run.stderr))
    assert re.search(r"task exit :: [^\n]*exit_code: 137, reason: [^\n]*" + BATCH_OOM, run.stderr)
    assert _submitted_memory(batch_proxy) == [str(ASKED // MiB), str(RAISED // MiB)]


def test_awsbatch_oom_reason_alone_is_retried_with_more_memory(moto, shared, batch_proxy):
    """Batch's reason alone types the OOM: the proxy fails the first attempt before its command
    runs (no exit record, no cgroup to read), FAILED with the container's reason."""
    batch_proxy.break_if = lambda request: (
        BATCH_OOM if request["tags"]["omnibio.attempt"] == "1" else None
    )
    batch_proxy.break_in_container_reason = True
    run = run_batch(moto, shared, HUNGRY.replace("RUNTIME", ""), config=AWS)
    _check_retried_with_more_memory(run, _cap(run.stderr), first_ran=False)
    assert _submitted_memory(batch_proxy) == [str(ASKED // MiB), str(RAISED // MiB)]


def _cap(stderr):
    """The cap the engine logged with the raise: the backend's largest, at least the raise."""
    cap = re.search(r"memory raised[^\n]*cap: (\d+)", stderr)
    assert cap and int(cap.group(1)) >= RAISED, stderr[-3000:]
    return int(cap.group(1))


def test_azurebatch_oom_is_retried_with_more_memory(batch, workdir):  # noqa: F811
    """The emulator runs the task's container with its memory as the limit; the job script's
    record carries the cgroup's oom flag, the engine's typed OOM."""
    wdl = _write(str(workdir), "hungry.wdl", HUNGRY)
    config = azurebatch_config(batch, str(workdir))
    config["omnibio"]["memory_retry_multiplier"] = "4"
    run = run_miniwdl(
        wdl,
        [],
        str(workdir),
        backend="omnibio_azurebatch",
        config=config,
        env=azurebatch_env(batch),
    )
    _check_retried_with_more_memory(run, _cap(run.stderr))
