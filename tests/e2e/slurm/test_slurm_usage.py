"""omnibio_slurm's measured usage on the rig's real Slurm: the container measures its own cgroup
when its command ends (its cgroup is gone once ``docker wait`` returns), the element script puts
that in the exit record, and the run's trace shows it. sacct's figures for the same job measure
only the job's own processes: under docker, the client (the job step); the trace shows them
when the container measured nothing. The trace names the image the container ran."""

import json
import os
import subprocess

from miniwdl_omnibio.engines.jobscript import read_exit_record
from miniwdl_omnibio.engines.slurm.status import (
    CGROUP_SOURCE,
    SACCT_FORMAT,
    SACCT_SOURCE,
    SlurmJob,
    parse_sacct,
)
from tests.e2e.slurm.conftest import slurm_config
from tests.e2e.slurm.test_slurm_backend import write

# the task the Batch emulator's usage test runs: 200 MiB touched, 2 s of CPU burnt
from tests.helpers import USAGE_WDL, run_miniwdl, wait_until

MIB = 1 << 20


def sacct_job(job_id: str) -> SlurmJob | None:
    """The job as the engine's own sacct call reads it (allocation and step lines)."""
    done = subprocess.run(
        ["sacct", "--noheader", "--parsable2", f"--jobs={job_id}", f"--format={SACCT_FORMAT}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_sacct(done.stdout).get(job_id)


def image_id(image: str) -> str:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def trace_row(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "omnibio_trace.json")) as infile:
        (row,) = json.load(infile)["attempts"]
    return row


def test_the_trace_shows_the_containers_peak_memory_and_cpu_seconds(accounting, shared_dir, rundir):
    wdl = write(rundir, "use.wdl", USAGE_WDL)
    run = run_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=slurm_config(shared_dir))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["use.n"] == 200 * MIB
    started, record = read_exit_record(os.path.join(run.dir, "omnibio_exit.1"))
    assert started and record is not None and record.exit_code == 0 and not record.oom
    assert not os.path.exists(os.path.join(run.dir, "slurm", "attempt1.usage"))
    row = trace_row(run.dir)
    assert row["image_id"] == image_id("omnibio/runtime:latest")
    # the container's cgroup: python's 200 MiB plus the interpreter and the shell, within 15%
    assert row["peak_memory"] and 200 * MIB <= row["peak_memory"] <= 1.15 * 200 * MIB, row
    assert row["cpu_seconds"] and 2.0 <= row["cpu_seconds"] <= 2.3, row
    assert (row["peak_memory"], row["cpu_seconds"]) == (record.memory_peak, record.cpu_seconds)
    assert row["usage"] == CGROUP_SOURCE
    # sacct measured the job's own processes: under docker only the client, which waited
    job = wait_until(
        lambda: (j := sacct_job(row["handle"])) and j.total_cpu is not None and j,
        "the job's TotalCPU in sacct",
        60,
    )
    assert job.total_cpu < 1.0, job


def test_an_oom_kill_is_typed_and_carries_the_usage(shared_dir, rundir):
    """The same task under a 100 MiB limit: the record's oom (docker's OOMKilled, the cgroup's
    oom_kill) names the OOM, and the failure carries the container's peak, at the limit."""
    wdl = write(rundir, "oom.wdl", USAGE_WDL.replace('memory: "512 MiB"', 'memory: "100 MiB"'))
    run = run_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=slurm_config(shared_dir))
    assert run.returncode != 0
    cause = run.error_json()["cause"]
    assert "raise runtime.memory" in cause.get("oom", ""), cause
    assert 90 * MIB <= cause["usage"]["memory_peak"] <= 100 * MIB, cause
    assert cause["usage"]["source"] == CGROUP_SOURCE


def test_a_container_that_measured_nothing_has_sacct_figures_in_the_trace(
    accounting, shared_dir, rundir
):
    """A container stopped at its time limit measures nothing (its shell dies with it): the
    engine's sacct for the ended job gives the trace MaxRSS and TotalCPU, the job step's (under
    docker, the client that waited), and the image the container ran, as docker names it."""
    wdl = write(
        rundir,
        "slow.wdl",
        'version 1.1\ntask slow { command <<< sleep 120 >>> runtime { docker: "ubuntu:22.04" '
        'omnibio_time_limit: "4s" memory: "64 MiB" } }\n',
    )
    run = run_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=slurm_config(shared_dir))
    assert run.returncode != 0
    row = trace_row(run.dir)
    assert row["ending"] == "time limit" and row["usage"] == SACCT_SOURCE, row
    assert row["image_id"] == image_id("ubuntu:22.04") and row["image_id"].startswith("sha256:")
    job = sacct_job(row["handle"])
    assert (
        job
        and job.max_rss
        and (row["peak_memory"], row["cpu_seconds"])
        == (
            job.max_rss,
            job.total_cpu,
        )
    )
