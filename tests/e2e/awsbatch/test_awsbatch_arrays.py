"""Array jobs on moto: attempts ready together go to Batch in one SubmitJob; each child is an
attempt of its own (status, interruption, exit code); a whole array is stopped by its parent."""

import json
import signal

import pytest

from tests.helpers import error_line, run_name, workflow_run_of

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


def test_scatter_through_array_jobs(moto, shared, proxy):
    """Scale is benchmarks/awsbatch_api_calls.py's; here the path: one SubmitJob for the six."""
    wdl = SCATTER.format(n=6, command="", runtime="")
    settings = {"array_linger_seconds": "3"}
    run = run_batch(moto, shared, wdl, settings=settings, config=_config(shared, 8))
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.outputs["main.seen"] == list(range(6))
    assert run.stderr.count("result verified") == 6
    children = ended_jobs(moto, workflow_run_of(run.dir))
    assert len(children) == 6 and {j["status"] for j in children} == {"SUCCEEDED"}
    (request,) = proxy.submitted()
    assert request["arrayProperties"] == {"size": 6}


def _terminated(proxy) -> list[str]:
    return [body["jobId"] for body in proxy.sent("terminatejob")]


def _cancelled_in_batch(moto, workflow_run: str) -> None:
    """Every job of the run ends, each array child with the launcher's reason."""

    def none_active():
        jobs = moto.run_jobs(workflow_run)
        return jobs if not [j for j in jobs if j["status"] in ACTIVE] else None

    jobs = wait_until(none_active, "no child is RUNNABLE, STARTING or RUNNING", timeout=60)
    for job in [j for j in jobs if ":" in j["jobId"]]:
        assert "cancelled by miniwdl" in job.get("statusReason", ""), job


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_terminates_the_array_by_its_parent(moto, shared, proxy, sent):
    wdl = SCATTER.format(n=6, command="sleep 600", runtime='omnibio_result_check: "off"')
    with started_batch(moto, shared, wdl, settings={"array_linger_seconds": "3"}) as proc:
        workflow_run = run_name(shared)
        running = wait_for_jobs(moto, workflow_run, 6)
        assert all(":" in j["jobId"] for j in running)  # children of one array
        proc.send_signal(sent)
        proc.communicate(timeout=60)
    assert proc.returncode != 0
    _cancelled_in_batch(moto, workflow_run)
    assert _terminated(proxy) == [running[0]["jobId"].split(":")[0]]  # one call: the parent


@pytest.mark.parametrize("unknown_job", ["error", "ignore"])
def test_fail_fast_right_after_submission_terminates_the_array(moto, shared, proxy, unknown_job):
    """Batch does not list the children yet (moto_proxy late_children), and TerminateJob of a
    child id would fail or do nothing: the parent's id stops them all."""
    proxy.late_children, proxy.unknown_job = 1000, unknown_job
    wdl = SCATTER.format(n=3, command="sleep 600", runtime='omnibio_result_check: "off"')
    wdl = wdl.replace(
        "  output {",
        "  call fails\n  output {",
        1,
    ) + (
        "task fails {\n  command <<< exit 1 >>>\n"
        '  runtime { docker: "ubuntu:22.04" cpu: 2 omnibio_result_check: "off" }\n}\n'
    )
    run = run_batch(moto, shared, wdl, settings={"array_linger_seconds": "3"})
    assert run.returncode != 0
    workflow_run = workflow_run_of(run.dir)
    _cancelled_in_batch(moto, workflow_run)
    children = [j["jobId"] for j in moto.run_jobs(workflow_run) if ":" in j["jobId"]]
    assert len(children) == 3 and _terminated(proxy) == [children[0].split(":")[0]]
    assert proxy.answered.get("terminatejob 400", 0) == 0


def test_a_childs_host_loss_is_retried_alone(moto, shared, proxy):
    command = "if [ ~{i} -eq 1 ] && [ ~{task.attempt} -eq 0 ]; then sleep 120; fi"
    wdl = SCATTER.format(n=3, command=command, runtime="preemptible: 1").replace(
        "version 1.1", "version 1.2"
    )
    settings = {"array_linger_seconds": "3"}
    with started_batch(moto, shared, wdl, settings, _config(shared, 8)) as proc:
        workflow_run = run_name(shared)

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
    jobs = ended_jobs(moto, workflow_run_of(run.dir))
    assert len({j["jobId"].split(":")[0] for j in jobs}) == 1  # the children of one array
    assert sorted(j["status"] for j in jobs) == ["FAILED", "SUCCEEDED", "SUCCEEDED"]
    (failed,) = [j for j in jobs if j["status"] == "FAILED"]
    assert failed["container"]["exitCode"] == 3
    cause = run.error_json()["cause"]  # the failed child's own exit code and log tail
    assert cause["exit_status"] == 3 and cause["handle"] == failed["jobId"]
    assert "child one broke" in cause["log_tail"]
    assert run.stderr.count("result verified") == 2


# API_JobDetail statusReason, as Batch words it for a job no compute environment can place
NO_INSTANCE = (
    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - All compute environments have no connected "
    "instances that meet the job requirements."
)


@pytest.mark.parametrize("hold_at", ["parent", "head"])
def test_a_blocked_array_fails_by_the_reason_batch_gives_it(moto, shared, proxy, hold_at):
    """Batch puts the reason on the job at the head of the queue: the parent or one child (the
    proxy picks the last); every child fails with it, and one TerminateJob ends the array."""
    proxy.hold_if = lambda request: NO_INSTANCE if "arrayProperties" in request else None
    proxy.hold_at = hold_at
    wdl = SCATTER.format(n=3, command="sleep 600", runtime='omnibio_result_check: "off"')
    run = run_batch(moto, shared, wdl, settings={"array_linger_seconds": "3"}, timeout=120)
    assert run.returncode != 0
    (request,) = proxy.submitted()
    children = sorted(j["jobId"] for j in moto.run_jobs(workflow_run_of(run.dir)))
    parent = children[0].split(":")[0]
    line = error_line(run)
    assert any(
        line == f"AWS Batch cannot run job {child} on queue {moto.fallback_queue}: {NO_INSTANCE}"
        for child in children
    ), line
    assert _terminated(proxy) == [parent]
