"""The core scenarios against the test server as each real implementation behaves (spec,
Funnel, TESK, TES on Azure), with another client's tasks running on the same server all along:
a scatter whose results are verified, with a create answer lost; preemption; SIGINT. TESK
ignores every list filter but the page and the view, so there these show that the engine
adopts, tracks and cancels only tasks whose own tags carry its launcher."""

import json
import os
import signal

import pytest
import requests

from miniwdl_omnibio.engines.tes.translate import LAUNCHER_TAG
from tests.e2e.tes.runs import (
    ACTIVE,
    api,
    cancel_active,
    create_task,
    run_tasks,
    running_tasks,
    staged_keys,
    start,
    states,
)
from tests.e2e.tes.support import BUCKET
from tests.helpers import run_dir_name, wait_until, workflow_run_of

OTHER = "another-process"


@pytest.fixture(scope="session")
def others(profile_server):
    """Another client's tasks, running the whole session: one tagged by another miniwdl
    process, one with no tags at all. Every test ends by finding them still running."""
    server = profile_server
    ids = [create_task(server, {LAUNCHER_TAG: OTHER, "omnibio.run": "elsewhere"})]
    ids.append(create_task(server, {}))
    try:
        wait_until(lambda: states(server, ids) == ["RUNNING"] * 2, "another client's tasks")
        yield ids
    finally:
        cancel_active(server, ids)


def untouched(server, ids):
    assert states(server, ids) == ["RUNNING"] * len(ids), server.profile.name


PAIR = r"""
version 1.1
workflow pair {
  scatter (i in range(2)) { call echo { input: i = i } }
  output { Array[File] results = echo.result  Array[Int] got = echo.got }
}
task echo {
  input { Int i }
  command <<<
    echo ~{i} > i.txt
    python3 -m miniwdl_omnibio.runtime.echo_test >&2
  >>>
  output { File result = "omnibio_result.json"  Int got = read_int("i.txt") }
  runtime { docker: "omnibio/runtime:latest" }
}
"""


def test_scatter_with_a_lost_create_answer(profile_server, others, moto, rundir):
    """One create's answer is lost; another client creates a task just then, so it is listed
    first (newest first) when the engine looks for the task its request made."""
    server = profile_server
    lost = server.count("fault:create")
    server.fault("create", 503, after=True)
    proc = start(server, moto, rundir, PAIR, results_dir=os.path.join(rundir, "results"))
    newer: list[str] = []
    try:
        wait_until(lambda: server.count("fault:create") > lost, "a create answer to be lost")
        newer.append(create_task(server, {LAUNCHER_TAG: OTHER}))
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr[-3000:]
        done = json.loads(stdout)
        assert done["outputs"]["pair.got"] == [0, 1]
        verified = [json.load(open(path)) for path in done["outputs"]["pair.results"]]
        assert all(result["ok"] for result in verified)
        tasks = run_tasks(server, done["dir"])
        assert sorted(t["tags"]["omnibio.run_id"] for t in tasks) == sorted(
            f"{workflow_run_of(done['dir'])}.call-echo-{i}.1" for i in range(2)
        )  # one task each: the lost one adopted, not created again
        assert {t["state"] for t in tasks} == {"COMPLETE"}
        assert "TES task was created by the failed request" in stderr
        # seen once, at start (a new launcher value lists the other client's tasks), on TESK
        # only: no server that filters is taken for one that does not
        ignoring = stderr.count("the TES server ignores list filters")
        assert ignoring == (1 if server.profile.name == "tesk" else 0), stderr[-3000:]
        untouched(server, others + newer)
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_active(server, newer)


PREEMPTIBLE = r"""
version 1.1
task once {
  command <<<
    sleep 3
    python3 -m miniwdl_omnibio.runtime.echo_test >&2
  >>>
  output { File result = "omnibio_result.json" }
  runtime { docker: "omnibio/runtime:latest" preemptible: 1 }
}
"""


def test_preemption_is_retried(profile_server, others, moto, rundir):
    server = profile_server
    proc = start(server, moto, rundir, PREEMPTIBLE, results_dir=os.path.join(rundir, "r"))
    try:
        (first,) = wait_until(lambda: running_tasks(server, rundir, 1), "the task to run")
        preempt = f"{server.url}/_fixture/tasks/{first['id']}:preempt"
        requests.post(preempt, timeout=10).raise_for_status()
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    tasks = run_tasks(server, json.loads(stdout)["dir"])
    assert [t["state"] for t in tasks] == ["PREEMPTED", "COMPLETE"]
    assert [t["tags"]["omnibio.attempt"] for t in tasks] == ["1", "2"]
    assert "interrupted task will be retried" in stderr
    untouched(server, others)


NAPS = r"""
version 1.1
workflow naps {
  scatter (i in range(2)) { call nap { input: i = i } }
}
task nap {
  input { Int i }
  command <<< sleep 300 >>>
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_sigint_cancels_this_runs_tasks_and_no_other(profile_server, others, moto, s3, rundir):
    """The run's tasks and a task carrying its launcher tag that it does not track (a create
    whose answer was lost, say) are cancelled; another client's are not."""
    server = profile_server
    proc = start(server, moto, rundir, NAPS, task_concurrency=2)
    stray: list[str] = []
    try:
        naps = wait_until(lambda: running_tasks(server, rundir, 2), "the run's tasks to run")
        stray.append(create_task(server, {LAUNCHER_TAG: naps[0]["tags"][LAUNCHER_TAG]}))
        wait_until(lambda: states(server, stray) == ["RUNNING"], "the stray task to run")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=90)
        assert proc.returncode != 0
        run_dir = os.path.join(rundir, run_dir_name(rundir))
        tasks = run_tasks(server, run_dir)
        assert [t["state"] for t in tasks] == ["CANCELED"] * 2
        wait_until(lambda: states(server, stray) == ["CANCELED"], "the stray task cancelled")
        untouched(server, others)
        assert not [k for k in staged_keys(s3, BUCKET) if os.path.basename(run_dir) in k]
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_active(server, stray)


def test_the_other_clients_tasks_are_on_the_api(profile_server, others):
    """The other client's tasks are there to be seen: a list with no filter shows them."""
    listed = requests.get(f"{api(profile_server)}/tasks", timeout=10).json()["tasks"]
    assert set(others) <= {t["id"] for t in listed}
    assert all(s in ACTIVE for s in states(profile_server, others))
