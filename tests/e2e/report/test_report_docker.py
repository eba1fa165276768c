"""A real run on omnibio_docker leaves a trace and a report: a scatter (with a sub-workflow) where
one shard fails once and is retried; and a run stopped by SIGTERM keeps the rows written so far
and names its stopped attempt cancelled."""

import json
import os
import signal
from datetime import datetime

import pytest

from miniwdl_omnibio.engines.docker.status import USAGE_SOURCE
from miniwdl_omnibio.trace import CANCELLED, FAILED, JSON, OK, TSV, read_trace
from tests.e2e.docker.support import task_containers
from tests.e2e.report.browser import load
from tests.helpers import (
    DEADLINE,
    containers_with_label,
    popen_miniwdl,
    run_dir_name,
    run_miniwdl,
    wait_until,
    workflow_run_of,
)

pytestmark = pytest.mark.usefixtures("docker_rig", "browser_rig")

MAIN = """
version 1.2
import "sub.wdl" as sub
workflow traced {
  # the sub-workflow's task runs first: the run's own lines still go to the top workflow's logger
  call sub.inner
  scatter (i in range(3)) { call shard { input: i = i, after = inner.greeting } }
  output { Array[String] outs = shard.out }
}
task shard {
  input { Int i  String after }
  command <<<
    if [ ~{i} -eq 1 ] && [ ~{task.attempt} -eq 0 ]; then echo "shard 1 fails once" >&2; exit 3; fi
    echo ~{i} ~{after}
  >>>
  output { String out = read_string(stdout()) }
  requirements { container: "ubuntu:22.04"  max_retries: 1  cpu: 1  memory: "256 MiB" }
}
"""
SUB = """
version 1.2
workflow inner {
  call hello
  output { String greeting = hello.out }
}
task hello {
  command <<< echo hello >>>
  output { String out = read_string(stdout()) }
  requirements { container: "ubuntu:22.04" }
}
"""
CONFIG = {"omnibio": {"retry_wait": "0", "report": "true", "progress_seconds": "0.5"}}


def _time(text):
    return datetime.fromisoformat(text)


def test_a_scatter_with_a_retry_leaves_a_trace_and_a_report(workdir, artifacts):
    (workdir / "sub.wdl").write_text(SUB)
    wdl = workdir / "main.wdl"
    wdl.write_text(MAIN)
    run = run_miniwdl(str(wdl), [], str(workdir), config=CONFIG)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = read_trace(run.dir)
    endings = {(r["call"], r["attempt"]): r["ending"] for r in rows}
    assert endings == {
        ("call-shard-0", 1): OK,
        ("call-shard-1", 1): FAILED,
        ("call-shard-1", 2): OK,
        ("call-shard-2", 1): OK,
        ("call-inner/call-hello", 1): OK,  # the sub-workflow's task, in the top run's trace
    }
    for row in rows:
        assert (row["backend"], row["usage"], row["verified"]) == (
            "omnibio_docker",
            USAGE_SOURCE,  # the container's cgroup (tests/e2e/docker/test_docker_usage.py)
            None,  # no [omnibio] result_uri_prefix: nothing to verify
        )
        assert row["peak_memory"] and row["cpu_seconds"] is not None, row
        assert row["handle"] and row["image"] == "ubuntu:22.04"
        assert _time(row["submitted"]) <= _time(row["ended"])
        assert row["queued_seconds"] is not None and row["running_seconds"] is not None
        assert row["task"] == ("hello" if row["call"].startswith("call-inner") else "shard")
    failed = next(r for r in rows if r["ending"] == FAILED)
    assert (failed["exit_code"], failed["cpu"], failed["memory"]) == (3, 1, 256 * 1024**2)
    with open(os.path.join(run.dir, JSON)) as infile:
        assert json.load(infile)["attempts"] == rows  # the JSON caught up at exit
    assert "wdl.w:traced NOTICE omnibio progress" in run.stderr  # the workflow's logger
    page = load(
        os.path.join(run.dir, "report.html"),
        {
            "bars": "document.querySelectorAll('#timeline rect.bar').length",
            "retries": "document.querySelectorAll('#timeline rect.bar.retry').length",
            "tasks": "document.querySelectorAll('#tasks tbody tr').length",
        },
        screenshot=os.path.join(artifacts, "report-docker.png"),
    )
    assert page.errors == []
    assert page.values == {"bars": 5, "retries": 1, "tasks": 2}


QUICK_AND_SLOW = """
version 1.2
workflow stopped {
  scatter (seconds in [0, 600]) { call nap { input: seconds = seconds } }
}
task nap {
  input { Int seconds }
  command <<< sleep ~{seconds} >>>
  requirements { container: "ubuntu:22.04" }
}
"""


def _rows(run_dir):
    return read_trace(run_dir) if os.path.exists(os.path.join(run_dir, TSV)) else []


def test_each_row_is_written_at_its_attempts_end_and_a_stopped_one_is_cancelled(workdir):
    wdl = workdir / "stopped.wdl"
    wdl.write_text(QUICK_AND_SLOW)
    proc = popen_miniwdl(str(wdl), [], str(workdir), config={"omnibio": {"report": "true"}})
    try:
        run_dir = str(workdir / run_dir_name(str(workdir)))
        run_name = workflow_run_of(run_dir)
        # the quick shard's row is there while the run goes on (a crash would keep it)
        (row,) = wait_until(lambda: _rows(run_dir), "the quick shard's row in the trace")
        assert (row["call"], row["ending"]) == ("call-nap-0", OK)
        wait_until(
            lambda: [c for c in task_containers(run_name) if c.status == "running"],
            "the slow shard's container running",
        )
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert {(r["call"], r["ending"]) for r in _rows(run_dir)} == {
        ("call-nap-0", OK),
        ("call-nap-1-600", CANCELLED),  # miniwdl names a shard by index and value
    }
    assert os.path.exists(os.path.join(run_dir, "report.html"))  # written at exit all the same
    assert containers_with_label("omnibio.run", run_name) == []
