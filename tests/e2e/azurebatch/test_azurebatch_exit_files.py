"""omnibio_azurebatch's exit records end to end: real miniwdl runs on the Batch emulator, whose
tasks run as containers on the local dockerd and read their own cgroup."""

import json
import os
import time

from miniwdl_omnibio.engines.jobscript import read_exit_record
from tests.helpers import USAGE_WDL

from .conftest import run_azurebatch, write

LISTING = "GET /jobs/{jobId}/tasks"
MIB = 1 << 20

SCATTER_WDL = r"""
version 1.1
workflow wf {
  scatter (i in range(4)) { call t { input: i = i } }
}
task t {
  input { Int i }
  command <<< sleep 2; echo ~{i} >>>
  output { String o = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" cpu: 1 memory: "128 MiB" }
}
"""


def _listings(batch, workdir, wdl: str, **overrides: str) -> tuple[int, float]:
    batch.reset_counts()
    started = time.monotonic()
    run = run_azurebatch(batch, workdir, wdl, **overrides)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(run.outputs["wf.t.o"]) == ["0", "1", "2", "3"]
    return batch.counts()["requests"].get(LISTING, 0), elapsed


def test_a_run_lists_its_tasks_less_than_once_per_poll(batch, workdir):
    """The same scatter twice: listing at every poll (list_seconds = poll_seconds, as before the
    exit records), then at the default list_seconds (30); both poll every second."""
    wdl = write(workdir / "scatter.wdl", SCATTER_WDL)
    os.mkdir(workdir / "every-poll")
    os.mkdir(workdir / "records")
    before, _ = _listings(batch, workdir / "every-poll", wdl, list_seconds="1")
    after, elapsed = _listings(batch, workdir / "records", wdl, list_seconds="30")
    # the first poll lists (nothing is known yet), then one per 30 s of the run
    assert after <= 1 + elapsed // 30 and after < before, (before, after, elapsed)


def test_the_exit_record_carries_the_measured_usage(batch, workdir):
    wdl = write(workdir / "use.wdl", USAGE_WDL)
    batch.reset_counts()
    run = run_azurebatch(batch, workdir, wdl, list_seconds="30")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["use.n"] == 200 * MIB
    started, record = read_exit_record(os.path.join(run.dir, "omnibio_exit.1"))
    assert started and record is not None and record.exit_code == 0 and not record.oom
    # the container's cgroup: python's 200 MiB plus the interpreter, within 15%
    assert record.memory_peak and 200 * MIB <= record.memory_peak <= 1.15 * 200 * MIB, record
    assert record.cpu_seconds and 2.0 <= record.cpu_seconds <= 2.3, record
    with open(os.path.join(run.dir, "omnibio_trace.json")) as infile:
        (row,) = json.load(infile)["attempts"]
    assert row["peak_memory"] == record.memory_peak and row["cpu_seconds"] == record.cpu_seconds
    assert row["usage"] == "cgroup, read by the job script"
    # the record said exit 0: the attempt ended without Batch's word
    assert batch.counts()["requests"].get(LISTING, 0) <= 2


def test_an_oom_kill_is_typed_from_the_cgroup(batch, workdir):
    wdl = write(
        workdir / "oom.wdl",
        USAGE_WDL.replace('memory: "512 MiB"', 'memory: "100 MiB"'),
    )
    run = run_azurebatch(batch, workdir, wdl)
    assert run.returncode != 0
    cause = run.error_json()["cause"]
    assert "raise runtime.memory" in cause.get("oom", ""), cause
    assert cause["usage"]["memory_peak"] >= 90 * MIB, cause
