"""Array jobs on moto: attempts ready together go to Batch in one SubmitJob; each child is an
attempt of its own (status, cancellation, interruption, exit code)."""

import json
import os
import signal

from tests.helpers import run_dir_name

from .conftest import (
    ended_jobs,
    lose_host,
    run_batch,
    started_batch,
    wait_for_jobs,
    wait_until,
)

# results.json written by the command itself (no Python in the container), so 200 tasks stay
# light on a 2-core machine; the plugin verifies each one as it would the tool runtime's
SCATTER = """
version 1.1
workflow main {{
  scatter (i in range({n})) {{ call t {{ input: i }} }}
  output {{ Array[Int] seen = t.seen }}
}}
task t {{
  input {{ Int i }}
  command <<<
    {command}
    echo ~{{i}} > seen
    printf '{{"ok": true, "run_id": "%s"}}' "$RUN_ID" > "${{RESULT_URI#file://}}"
  >>>
  output {{ Int seen = read_int("seen") }}
  runtime {{ docker: "ubuntu:22.04" {runtime} }}
}}
"""
ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


def _config(shared: str, concurrency: int) -> dict[str, dict[str, str]]:
    return {
        "omnibio": {"result_uri_prefix": f"file://{shared}/results"},
        "scheduler": {"task_concurrency": str(concurrency)},
    }


def test_scatter_of_200_through_array_jobs(moto, shared, proxy):
    wdl = SCATTER.format(n=200, command="", runtime="")
    run = run_batch(moto, shared, wdl, config=_config(shared, 200), timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.outputs["main.seen"] == list(range(200))
    assert run.stderr.count("result verified") == 200
    children = ended_jobs(moto, os.path.basename(run.dir))
    assert len(children) == 200 and {j["status"] for j in children} == {"SUCCEEDED"}
    submitted = proxy.submitted()
    sizes = sorted((r.get("arrayProperties") or {}).get("size", 1) for r in submitted)
    assert sum(sizes) == 200 and len(submitted) <= 20, sizes  # a few SubmitJob, not 200
    assert proxy.calls["batch submitjob"] == len(submitted)


def test_sigint_leaves_no_child_active(moto, shared):
    wdl = SCATTER.format(n=6, command="sleep 600", runtime='omnibio_result_check: "off"')
    with started_batch(moto, shared, wdl, settings={"array_linger_seconds": "3"}) as proc:
        workflow_run = run_dir_name(shared)
        running = wait_for_jobs(moto, workflow_run, 6)
        assert all(":" in j["jobId"] for j in running)  # children of one array
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode != 0

    def none_active():
        left = [j["jobId"] for j in moto.run_jobs(workflow_run) if j["status"] in ACTIVE]
        return not left

    wait_until(none_active, "no child is RUNNABLE, STARTING or RUNNING", timeout=60)
    for job in moto.run_jobs(workflow_run):
        assert "cancelled by miniwdl" in job.get("statusReason", ""), job


def test_a_childs_host_loss_is_retried_alone(moto, shared, proxy):
    command = "if [ ~{i} -eq 1 ] && [ ~{task.attempt} -eq 0 ]; then sleep 120; fi"
    wdl = SCATTER.format(n=3, command=command, runtime="preemptible: 1").replace(
        "version 1.1", "version 1.2"
    )
    settings = {"array_linger_seconds": "3"}
    with started_batch(moto, shared, wdl, settings, _config(shared, 8)) as proc:
        workflow_run = run_dir_name(shared)

        def sleeper_running():
            jobs = moto.run_jobs(workflow_run)
            done = [j for j in jobs if j["status"] == "SUCCEEDED"]
            running = [j for j in jobs if j["status"] == "RUNNING"]
            return running if len(done) == 2 and len(running) == 1 else None

        (child,) = wait_until(sleeper_running, "two children done, one still running")
        lose_host(moto, child["jobId"])
        _stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-4000:]
    assert "task interrupted" in stderr
    jobs = ended_jobs(moto, workflow_run)
    children = [j for j in jobs if ":" in j["jobId"]]
    (retry,) = [j for j in jobs if ":" not in j["jobId"]]  # a plain job of its own ...
    assert retry["jobQueue"].endswith("/" + moto.fallback_queue)  # ... on the fallback queue
    assert sorted(j["status"] for j in children) == ["FAILED", "SUCCEEDED", "SUCCEEDED"]
    assert [json.loads(b) for op, b in proxy.bodies if op == "terminatejob"] == []  # rest untouched


def test_a_child_exiting_non_zero_fails_only_its_task(moto, shared):
    command = "if [ ~{i} -eq 1 ]; then echo 'child one broke' >&2; exit 3; fi"
    wdl = SCATTER.format(n=3, command=command, runtime="")
    config = {**_config(shared, 8), "scheduler": {"task_concurrency": "8", "fail_fast": "false"}}
    run = run_batch(moto, shared, wdl, settings={"array_linger_seconds": "3"}, config=config)
    assert run.returncode != 0
    jobs = ended_jobs(moto, os.path.basename(run.dir))
    assert len({j["jobId"].split(":")[0] for j in jobs}) == 1  # the children of one array
    assert sorted(j["status"] for j in jobs) == ["FAILED", "SUCCEEDED", "SUCCEEDED"]
    (failed,) = [j for j in jobs if j["status"] == "FAILED"]
    assert failed["container"]["exitCode"] == 3
    cause = run.error_json()["cause"]  # the failed child's own exit code and log tail
    assert cause["exit_status"] == 3 and cause["handle"] == failed["jobId"]
    assert "child one broke" in cause["log_tail"]
    assert run.stderr.count("result verified") == 2
