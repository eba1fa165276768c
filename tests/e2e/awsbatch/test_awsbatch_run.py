"""omnibio_awsbatch end to end: miniwdl runs whose task attempts are moto Batch jobs executed on
the local dockerd, on a shared directory mounted in place."""

import json
import os
import re
import signal

from miniwdl_omnibio.cli.selftest import run as selftest
from tests.emulators.moto_proxy import THROTTLED, UNAVAILABLE
from tests.helpers import miniwdl_env, run_dir_name, run_name, workflow_run_of

from .conftest import (
    BACKEND,
    READONLY_VIEW,
    batch_config,
    ended_jobs,
    lose_host,
    run_batch,
    started_batch,
    wait_for_jobs,
    wait_until,
)

ECHO_SCATTER = r"""
version 1.2
workflow main {
  input { File text  Directory folder }
  scatter (i in range(4)) {
    call echo { input: i = i, text = text, folder = folder }
  }
  output { Array[String] seen = echo.seen }
}
task echo {
  input { Int i  File text  Directory folder }
  command <<<
    set -e
    python3 -m miniwdl_omnibio.runtime.echo_test > echo.json
    cat ~{text} > seen.txt
    cat ~{folder}/a.txt >> seen.txt
    readlink -f ~{text} >> seen.txt
    if echo x >> ~{text}; then echo writable >> seen.txt; else echo read-only >> seen.txt; fi
    pwd >> seen.txt
  >>>
  output { String seen = read_string("seen.txt") }
  runtime { docker: "omnibio/runtime:latest" cpu: 1 memory: "256 MiB" }
}
"""


def test_scatter_inputs_in_situ_and_results_on_s3(moto, shared):
    text = os.path.join(shared, "text.txt")
    with open(text, "w") as outfile:
        outfile.write("hello\n")
    folder = os.path.join(shared, "folder")
    os.mkdir(folder)
    with open(os.path.join(folder, "a.txt"), "w") as outfile:
        outfile.write("a\n")
    run = run_batch(
        moto,
        shared,
        ECHO_SCATTER,
        [f"text={text}", f"folder={folder}"],
        # a window long enough that the four attempts meet even on a loaded machine
        settings={"tags": '{"project": "omnibio-e2e"}', "array_linger_seconds": "3"},
    )
    assert run.returncode == 0, run.stderr[-4000:]
    workflow_run = workflow_run_of(run.dir)
    for i, seen in enumerate(run.outputs["main.seen"]):
        lines = seen.splitlines()
        assert lines[:2] == ["hello", "a"]  # File and Directory inputs read on the Batch host
        assert (
            lines[2] == READONLY_VIEW + text[len(shared) :]
        )  # in place, through the read-only view
        assert lines[3] == "read-only"  # a write to an input fails
        assert lines[4] == os.path.join(
            run.dir, f"call-echo-{i}", "work"
        )  # the shared FS, in place
    with open(text) as infile:
        assert infile.read() == "hello\n"

    # the four attempts were ready together: one array job, its children one per attempt
    jobs = ended_jobs(moto, workflow_run)
    assert len(jobs) == 4 and all(j["status"] == "SUCCEEDED" for j in jobs)
    everything = ended_jobs(moto, workflow_run, parents=True)
    (parent,) = [j for j in everything if j["jobId"] not in {c["jobId"] for c in jobs}]
    assert sorted(j["jobId"] for j in jobs) == [f"{parent['jobId']}:{i}" for i in range(4)]
    assert re.fullmatch(r"omnibio-[0-9a-f]{8}-echo-array\d+-4", parent["jobName"])
    assert parent["jobQueue"].endswith("/" + moto.fallback_queue)  # not preemptible: on-demand
    assert parent["tags"]["project"] == "omnibio-e2e" and parent["tags"]["omnibio.task"] == "echo"
    assert "omnibio.call" not in parent["tags"]  # per attempt: in each child's script instead
    for job in jobs:
        assert job["container"]["command"][:2] == ["/bin/sh", "-c"]
    definitions = {j["jobDefinition"] for j in jobs}
    assert len(definitions) == 1  # one job definition for every attempt with the same image

    s3 = moto.server.client("s3")
    for i in range(4):
        key = f"results/{workflow_run}/call-echo-{i}/results.json"
        document = json.loads(s3.get_object(Bucket=moto.bucket, Key=key)["Body"].read())
        assert document["ok"] is True
        assert document["run_id"] == f"{workflow_run}.call-echo-{i}.1"
        assert document["results"]["echo"]["i"] == i


TRIVIAL = """
version 1.1
task t {
  command <<< echo hi >>>
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
"""


def test_job_definition_found_again_by_name_on_a_later_run(moto, shared):
    batch = moto.server.client("batch")

    def ours():
        found = batch.describe_job_definitions(status="ACTIVE")["jobDefinitions"]
        return sorted(
            (d["jobDefinitionName"], d["revision"])
            for d in found
            if d["jobDefinitionName"].startswith("omnibio-")
        )

    before = ours()
    first = run_batch(moto, shared, TRIVIAL)
    assert first.returncode == 0, first.stderr[-3000:]
    registered = ours()
    assert len(registered) == len(before) + 1
    second = run_batch(moto, shared, TRIVIAL)
    assert second.returncode == 0, second.stderr[-3000:]
    assert ours() == registered  # reused, not registered again
    assert (
        "job definition registered" in first.stderr
        and "job definition registered" not in second.stderr
    )


RETRIES = """
version 1.2
workflow main {
  call codes
  call flaky
  call preempted
  call big { input: numbers = range(5000) }
  output { Int flaky_attempt = flaky.attempt }
}
task codes {
  command <<< exit 3 >>>
  runtime { docker: "ubuntu:22.04" returnCodes: [0, 3] omnibio_queue: "omnibio-spot" omnibio_result_check: "off" }
}
task big {
  input { Array[Int] numbers }
  command <<< python3 -m miniwdl_omnibio.runtime.echo_test >>>
  runtime { docker: "omnibio/runtime:latest" }
}
task flaky {
  command <<<
    echo "attempt ~{task.attempt}"
    if [ ~{task.attempt} -eq 0 ]; then exit 1; fi
    echo ~{task.attempt} > attempt
  >>>
  output { Int attempt = read_int("attempt") }
  runtime { docker: "ubuntu:22.04" maxRetries: 1 omnibio_result_check: "off" }
}
task preempted {
  command <<< python3 -m miniwdl_omnibio.runtime.echo_test >>>
  runtime { docker: "omnibio/runtime:latest" preemptible: 1 }
}
"""


def test_return_codes_retries_interruption_queue_and_large_inputs(moto, shared):
    run = run_batch(moto, shared, RETRIES, config={"task_runtime": {"_mock_interruptions": "1"}})
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.outputs["main.flaky_attempt"] == 1
    jobs = ended_jobs(moto, workflow_run_of(run.dir))
    by_task = {}
    for job in jobs:
        by_task.setdefault(job["tags"]["omnibio.task"], []).append(job)
    assert len(by_task["codes"]) == 1
    assert by_task["codes"][0]["jobQueue"].endswith("/omnibio-spot")  # runtime.omnibio_queue
    flaky = sorted(by_task["flaky"], key=lambda j: j["createdAt"])
    assert [j["status"] for j in flaky] == ["FAILED", "SUCCEEDED"]
    preempted = by_task["preempted"]
    assert len(preempted) == 2 and all(j["status"] == "SUCCEEDED" for j in preempted)
    # runtime.preemptible: the first attempt goes to the (spot) job_queue
    assert all(j["jobQueue"].endswith("/" + moto.queue) for j in preempted)
    assert "mock interruption" in run.stderr
    # INPUTS_JSON (~25 KB) exceeds the SubmitJob payload budget: the job sources it from a file
    assert "environment values passed in a file" in run.stderr
    key = f"results/{workflow_run_of(run.dir)}/call-big/results.json"
    document = json.loads(
        moto.server.client("s3").get_object(Bucket=moto.bucket, Key=key)["Body"].read()
    )
    assert document["results"]["echo"]["numbers"] == list(range(5000))


HOST_LOSS = """
version 1.2
task spot {
  command <<<
    if [ ~{task.attempt} -eq 0 ]; then sleep 120; fi
    python3 -m miniwdl_omnibio.runtime.echo_test
  >>>
  runtime { docker: "omnibio/runtime:latest" preemptible: 1 }
}
"""


def test_spot_host_loss_is_retried_on_the_fallback_queue(moto, shared):
    with started_batch(moto, shared, HOST_LOSS) as proc:
        workflow_run = run_name(shared)
        (job,) = wait_for_jobs(moto, workflow_run, 1)
        assert job["jobQueue"].endswith("/" + moto.queue)
        lose_host(moto, job["jobId"])
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-4000:]
    assert "task interrupted" in stderr and "interrupted task will be retried" in stderr
    jobs = sorted(ended_jobs(moto, workflow_run), key=lambda j: j["createdAt"])
    assert [j["status"] for j in jobs] == ["FAILED", "SUCCEEDED"]
    assert jobs[1]["jobQueue"].endswith(
        "/" + moto.fallback_queue
    )  # the preemptible budget is spent


FAILING = """
version 1.1
task fails {
  command <<<
    echo "reference index corrupt" >&2
    exit 3
  >>>
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
"""


def test_nonzero_exit_fails_the_run_with_the_job_log(moto, shared):
    run = run_batch(moto, shared, FAILING)
    assert run.returncode != 0
    error = run.error_json()
    assert error["cause"]["exit_status"] == 3, error
    info = error["cause"]
    assert info["engine"] == "omnibio_awsbatch" and info["exit_code"] == 3
    assert info["log_group"] == "/aws/batch/job" and info["log_stream"]
    assert "reference index corrupt" in info["log_tail"]  # the task's stderr tail, from CloudWatch
    assert [j["status"] for j in moto.run_jobs(workflow_run_of(run.dir))] == ["FAILED"]


SLEEPY_SCATTER = """
version 1.1
workflow sleepy {
  scatter (i in range(4)) { call nap { input: i } }
}
task nap {
  input { Int i }
  command <<< sleep 600 >>>
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
"""


def test_sigint_terminates_every_job_of_the_run(moto, shared):
    with started_batch(moto, shared, SLEEPY_SCATTER) as proc:
        workflow_run = run_name(shared)
        wait_for_jobs(moto, workflow_run, 4)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode != 0
    jobs = moto.run_jobs(workflow_run)
    assert len(jobs) == 4
    # every job was told to terminate before miniwdl exited ...
    assert all("cancelled by miniwdl" in (j.get("statusReason") or "") for j in jobs), jobs
    # ... and TerminateJob is asynchronous (as on AWS): the jobs and containers go soon after
    active = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
    names = [j["jobName"] for j in jobs]

    def all_gone():
        running = [j for j in moto.run_jobs(workflow_run) if j["status"] in active]
        left = [c for c in moto.server.job_containers() if c.name.startswith(tuple(names))]
        return not running and not left

    wait_until(all_gone, "no job is active and no job container is left", timeout=30)


FAIL_FAST = """
version 1.1
workflow main {
  scatter (i in range(4)) { call nap_or_fail { input: i } }
}
task nap_or_fail {
  input { Int i }
  command <<< if [ ~{i} -eq 0 ]; then while [ ! -e go ]; do sleep 0.2; done; exit 1; fi; sleep 600 >>>
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
"""


def test_fail_fast_terminates_the_other_jobs(moto, shared):
    """The first task fails once the test sees all four jobs running (its file "go")."""
    with started_batch(moto, shared, FAIL_FAST) as proc:
        directory = run_dir_name(shared)
        workflow_run = workflow_run_of(os.path.join(shared, directory))
        wait_for_jobs(moto, workflow_run, 4)
        open(os.path.join(shared, directory, "call-nap_or_fail-0", "work", "go"), "w").close()
        proc.communicate(timeout=120)
    assert proc.returncode != 0
    jobs = moto.run_jobs(workflow_run)
    assert len(jobs) == 4
    cancelled = [j for j in jobs if "cancelled by miniwdl" in (j.get("statusReason") or "")]
    assert len(cancelled) == 3, [(j["jobName"], j["status"], j.get("statusReason")) for j in jobs]


SMALL_SCATTER = """
version 1.1
workflow main {
  scatter (i in range(4)) { call echo { input: i } }
}
task echo {
  input { Int i }
  command <<< python3 -m miniwdl_omnibio.runtime.echo_test >>>
  runtime { docker: "omnibio/runtime:latest" }
}
"""


def test_throttling_and_5xx_back_off_without_failing(moto, shared, proxy):
    """The first SubmitJob and DescribeJobs calls answer 429 TooManyRequestsException, then 503;
    after them every third does."""
    for operation in ("submitjob", "describejobs"):
        proxy.fail_next(operation, 1, THROTTLED)
        proxy.fail_next(operation, 1, UNAVAILABLE)
    proxy.every = 3
    run = run_batch(moto, shared, SMALL_SCATTER)
    assert run.returncode == 0, run.stderr[-4000:]
    for operation in ("submitjob", "describejobs"):
        answered = proxy.answered
        assert answered[f"{operation} 429"] >= 1 and answered[f"{operation} 503"] >= 1, answered
    jobs = ended_jobs(moto, workflow_run_of(run.dir))
    assert sorted(j["status"] for j in jobs) == ["SUCCEEDED"] * 4  # each task submitted once


def test_offline_selftest_passes(moto, shared):
    env = miniwdl_env(BACKEND, batch_config(moto, shared), moto.server.env())
    assert selftest(BACKEND, shared, env=env) == []
