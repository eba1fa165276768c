"""omnibio_slurm against the rig's real Slurm: arrays, results, cancellation, limits."""

import json
import logging
import os
import signal
import subprocess
import time

import pytest

from miniwdl_omnibio.engines.base import Phase, Submitted
from tests.e2e.slurm.conftest import active_jobs, sacct, slurm_config, start_engine
from tests.helpers import (
    error_line,
    popen_miniwdl,
    run_dir_name,
    run_miniwdl,
    run_name,
    wait_until,
    workflow_run_of,
)
from tests.unit.test_slurm_translation import make_attempt

SCATTER = """
version 1.1
workflow fan {
  scatter (i in range(4)) { call echo { input: i } }
  output { Array[File] results = echo.result }
}
task echo {
  input { Int i }
  command <<< echo "line ~{i}" >&2; python3 -m miniwdl_omnibio.runtime.echo_test >&2 >>>
  output { File result = "omnibio_result.json" }
  runtime { docker: "omnibio/runtime:latest" cpu: 1 memory: "128 MiB" }
}
"""


def write(rundir, name, text):
    path = os.path.join(rundir, name)
    with open(path, "w") as out:
        out.write(text)
    return path


def assert_results_verified(run, count: int) -> None:
    """The SCATTER run of ``count`` tasks succeeded, each result came from its own attempt and
    was verified, and each task's stderr line is in its stderr.txt."""
    assert run.returncode == 0, run.stderr[-3000:]
    workflow_run = workflow_run_of(run.dir)
    calls = [f"call-echo-{i:0{len(str(count - 1))}d}" for i in range(count)]  # miniwdl pads
    results = []
    for path in run.outputs["fan.results"]:
        with open(path) as infile:
            results.append(json.load(infile))
    assert sorted(r["run_id"] for r in results) == [f"{workflow_run}.{c}.1" for c in calls]
    assert run.stderr.count("result verified") == count
    for i, call in enumerate(calls):
        with open(os.path.join(run.dir, call, "stderr.txt")) as infile:
            assert f"line {i}" in infile.read()


def test_scatter_in_one_array_with_results_verified(shared_dir, rundir):
    wdl = write(rundir, "fan.wdl", SCATTER)
    run = run_miniwdl(
        wdl,
        [],
        rundir,
        backend="omnibio_slurm",
        config={**slurm_config(shared_dir, results=True), "scheduler": {"task_concurrency": "4"}},
    )
    assert_results_verified(run, 4)
    workflow_run = workflow_run_of(run.dir)

    # ready together: one sbatch --array for the four attempts, as Slurm's accounting saw it
    # (slurmctld sends each job's end to slurmdbd a moment after the job ends)
    def recorded() -> dict[str, str]:
        return {
            job_id: state
            for job_id, name, state in sacct(
                "--starttime=now-6hours", "--format=JobID,JobName,State"
            )
            if name.startswith(workflow_run + ".")
        }

    jobs = wait_until(
        lambda: list(recorded().values()).count("COMPLETED") >= 4 and recorded(),
        "4 completed jobs of the run in sacct",
        60,
    )
    (array,) = {job_id.split("_")[0] for job_id in jobs}
    assert jobs == {f"{array}_{i}": "COMPLETED" for i in range(4)}, jobs
    log = os.path.join(run.dir, "call-echo-2", "omnibio_exit.1")
    with open(log) as infile:
        assert "exit_code=0" in infile.read()


TALK = """
version 1.1
task talk {
  input { String control }
  command <<<
    echo "halfway there" >&2
    for _ in $(seq 3000); do [ -e '~{control}/go' ] && break; sleep 0.2; done
  >>>
  runtime { docker: "ubuntu:22.04" memory: "64 MiB" omnibio_result_check: "off" }
}
"""


def test_stderr_reaches_the_run_directory_while_the_job_runs(shared_dir, rundir):
    wdl = write(rundir, "talk.wdl", TALK)
    control = os.path.join(rundir, "control")
    os.mkdir(control)
    config = slurm_config(shared_dir)
    proc = popen_miniwdl(wdl, [f"control={control}"], rundir, "omnibio_slurm", config)
    try:
        name = run_dir_name(rundir)
        stderr = os.path.join(rundir, name, "stderr.txt")
        run = workflow_run_of(os.path.join(rundir, name))
        wait_until(lambda: "halfway there" in _text(stderr), "the line in stderr.txt", 120)
        # the task cannot end before the test says go: the line came while its job ran
        assert active_jobs(run)
        write(control, "go", "")
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0


def _text(path):
    try:
        with open(path) as infile:
            return infile.read()
    except FileNotFoundError:
        return ""


SLEEPY = """
version 1.1
workflow sleepy {
  scatter (i in range(3)) { call nap { input: i } }
}
task nap {
  input { Int i }
  command <<< sleep 600 >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 memory: "64 MiB" }
}
"""


def start_sleepy(shared_dir, rundir):
    """miniwdl running three sleeping tasks; (process, run name) once Slurm lists all three."""
    wdl = write(rundir, "sleepy.wdl", SLEEPY)
    config = {**slurm_config(shared_dir), "scheduler": {"task_concurrency": "3"}}
    proc = popen_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=config)
    try:
        name = run_name(rundir)
        wait_until(lambda: len(active_jobs(name)) >= 3, f"3 jobs of {name} in Slurm", 90)
    except BaseException:
        proc.kill()
        raise
    return proc, name


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_leaves_no_job_pending_or_running(shared_dir, rundir, signum):
    proc, name = start_sleepy(shared_dir, rundir)
    try:
        assert len(active_jobs(name)) == 3  # 2 running on the 2 CPUs, 1 pending
        proc.send_signal(signum)
        stderr = proc.communicate(timeout=90)[1]
    finally:
        proc.kill()
    assert proc.returncode != 0
    wait_until(lambda: not active_jobs(name), f"no job of {name} left pending or running", 60)
    assert stderr.count("scancel :: jobs: ") == 1 and "scancel :: jobs: 3" in stderr, stderr[-3000:]
    # the job scripts removed their containers
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=omnibio.run_id", "--format", "{{.Labels}}"],
        capture_output=True,
        text=True,
    ).stdout
    assert name not in listed


def test_time_limit_ends_with_the_time_limit_error(shared_dir, rundir):
    wdl = write(
        rundir,
        "slow.wdl",
        'version 1.1\ntask slow { command <<< sleep 120 >>> runtime { docker: "ubuntu:22.04" '
        'omnibio_time_limit: "3s" memory: "64 MiB" } }\n',
    )
    started = time.monotonic()
    run = run_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=slurm_config(shared_dir))
    assert run.returncode != 0 and time.monotonic() - started < 60
    assert "exceeded its time limit of 3 s" in error_line(run)


def test_out_of_memory_is_named(shared_dir, rundir):
    wdl = write(
        rundir,
        "oom.wdl",
        "version 1.1\ntask oom {\n"
        "  command <<< python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))' >>>\n"
        '  runtime { docker: "ubuntu:22.04" memory: "64 MiB" }\n}\n',
    )
    run = run_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=slurm_config(shared_dir))
    assert run.returncode != 0
    assert "exceeding the memory limit" in json.dumps(run.error_json()), run.stderr[-2000:]


@pytest.fixture
def engine(shared_dir, monkeypatch):
    return start_engine(shared_dir, monkeypatch)


def test_a_job_cancelled_outside_the_run_is_named_from_squeue(shared_dir, rundir):
    """The script's trap records a signal; squeue --states=all still lists the ended job
    (within MinJobAge) as CANCELLED, and the run fails saying it was not its doing."""
    wdl = write(
        rundir,
        "nap.wdl",
        'version 1.1\ntask nap { command <<< sleep 600 >>> runtime { docker: "ubuntu:22.04" '
        'memory: "64 MiB" omnibio_result_check: "off" } }\n',
    )
    proc = popen_miniwdl(wdl, [], rundir, "omnibio_slurm", slurm_config(shared_dir))
    try:
        name = run_dir_name(rundir)
        running = os.path.join(rundir, name, "omnibio_exit.1")  # empty while the job runs
        wait_until(lambda: os.path.exists(running), "the job script runs", 300)
        run = workflow_run_of(os.path.join(rundir, name))
        (job,) = active_jobs(run)
        listed = subprocess.run(
            ["squeue", "--noheader", f"--jobs={job}", "--Format=WorkDir:500,Comment:500"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert listed[0] == os.path.join(rundir, name, "work")  # sbatch --chdir
        assert f"run={run} call=nap launcher=" in " ".join(listed[1:])  # sbatch --comment
        subprocess.run(["scancel", job], check=True)  # by a user, not by the run
        stderr = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the run cancels its job
            proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "was cancelled outside this run" in stderr, stderr[-3000:]


def test_the_next_start_cancels_the_jobs_of_a_sigkilled_launcher(shared_dir, rundir, monkeypatch):
    proc, name = start_sleepy(shared_dir, rundir)
    proc.kill()  # SIGKILL: no chance to scancel
    proc.communicate(timeout=60)
    assert len(active_jobs(name)) == 3
    engine = start_engine(shared_dir, monkeypatch)
    wait_until(lambda: not active_jobs(name), f"no job of {name} left pending or running", 60)
    assert engine.cli.counts["scancel"] == 1  # all of them in one call


def test_exit_record_answers_once_slurm_has_forgotten_the_job(engine, rundir):
    """A final record needs no squeue; the rig has accounting, so one sacct asks for the ended
    job's figures, knows no such job, and the attempt goes without (its record is older than
    SACCT_WAIT). A record a signal ended asks squeue; past MinJobAge it says "Invalid job id",
    sacct knows no such job either, and the record counts."""
    attempt = make_attempt(os.path.join(rundir, "call-x"), engine.settings.host_root)
    request = engine.translate(attempt)
    os.makedirs(request.files.host_dir)
    forgotten = "987654"  # no such job on the rig
    engine.cli.counts.clear()  # count from here, not the start's own commands
    record = Submitted(forgotten, attempt, logging.getLogger("test"), time.monotonic(), request)
    for signalled, code, asked in (("false", 3, (0, 1)), ("true", 143, (1, 2))):
        write(
            os.path.dirname(request.files.record),
            os.path.basename(request.files.record),
            f"exit_code={code}\noom=false\ntimed_out=false\nstarted=true\nsignalled={signalled}\n",
        )
        long_ago = time.time() - 60
        os.utime(request.files.record, (long_ago, long_ago))
        status = engine.fetch([record], True)[forgotten]
        assert status.phase is Phase.DONE and status.exit_code == code
        assert (engine.cli.counts["squeue"], engine.cli.counts["sacct"]) == asked
