"""omnibio_awsbatch's exit records end to end: moto runs each job as a container on the local
dockerd, and the job script reads that container's own cgroup after the command ends."""

import json
import os

from miniwdl_omnibio.engines.jobscript import read_exit_record
from tests.helpers import USAGE_WDL

from .conftest import run_batch

MIB = 1 << 20


def test_the_trace_shows_the_measured_usage(moto, shared, proxy):
    run = run_batch(moto, shared, USAGE_WDL)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.outputs["use.n"] == 200 * MIB
    started, record = read_exit_record(os.path.join(run.dir, "omnibio_exit.1"))
    assert started and record is not None and record.exit_code == 0 and not record.oom
    # the container's cgroup: python's 200 MiB plus the interpreter and the shells, within 15%
    assert record.memory_peak and 200 * MIB <= record.memory_peak <= 1.15 * 200 * MIB, record
    assert record.cpu_seconds and 2.0 <= record.cpu_seconds <= 1.15 * 2.0, record
    with open(os.path.join(run.dir, "omnibio_trace.json")) as infile:
        (row,) = json.load(infile)["attempts"]
    assert row["peak_memory"] == record.memory_peak and row["cpu_seconds"] == record.cpu_seconds
    assert row["usage"] == "cgroup, read by the job script"
    # the record said exit 0: the attempt ended without asking Batch about it
    assert len(proxy.submitted()) == 1
