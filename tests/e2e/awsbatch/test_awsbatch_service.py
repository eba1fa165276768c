"""omnibio_awsbatch where AWS Batch behaves as documented and moto alone does not: the proxy in
front of moto (tests/emulators/moto_proxy.py) answers as Batch does, and records the SubmitJob
requests exactly as the engine sent them."""

import json

import pytest

from tests.helpers import error_line, workflow_run_of

from .conftest import run_batch

SLEEPER = """
version 1.1
task t {{
  command <<< sleep 600 >>>
  runtime {{ docker: "ubuntu:22.04" omnibio_result_check: "off" {runtime} }}
}}
"""
QUICK = """
version 1.1
task t {
  command <<< echo hi >>>
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
"""
# API_JobDetail statusReason, as Batch words it for a job no compute environment can place
NO_INSTANCE = (
    "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - All compute environments have no connected "
    "instances that meet the job requirements."
)
EFS_FAILURE = (
    "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: "
    "stderr: b'mount.nfs4: Connection timed out' : unsuccessful EFS utils command execution; "
    "code: 32"
)


def _requirements(request: dict) -> dict[str, str]:
    return {r["type"]: r["value"] for r in request["containerOverrides"]["resourceRequirements"]}


def test_submitjob_sizing_as_sent(moto, shared, proxy):
    """VCPU, MEMORY in MiB, GPU, attemptDurationSeconds (at least 60) and retryStrategy, read
    from the request bytes the proxy received (moto itself ignores all of them)."""
    wdl = """
version 1.1
workflow main {
  call sized
  call gpu
}
task sized {
  command <<< echo hi >>>
  runtime { docker: "ubuntu:22.04" cpu: 3 memory: "1536 MiB" omnibio_time_limit: 30
            omnibio_result_check: "off" }
}
task gpu {
  command <<< echo hi >>>
  runtime { docker: "ubuntu:22.04" gpu: true memory: "1 GB" omnibio_time_limit: "2h"
            omnibio_result_check: "off" }
}
"""
    run = run_batch(moto, shared, wdl)
    assert run.returncode == 0, run.stderr[-4000:]
    by_task = {r["tags"]["omnibio.task"]: r for r in proxy.submitted()}
    sized, gpu = by_task["sized"], by_task["gpu"]
    assert _requirements(sized) == {"VCPU": "3", "MEMORY": "1536"}
    assert sized["timeout"] == {"attemptDurationSeconds": 60}  # 30 s asked; Batch's minimum
    assert sized["retryStrategy"] == {"attempts": 1}  # miniwdl does the retrying
    assert _requirements(gpu) == {"VCPU": "1", "MEMORY": "954", "GPU": "1"}  # 10^9 B: 954 MiB
    assert gpu["timeout"] == {"attemptDurationSeconds": 7200}
    sizes = [len(body) for op, body in proxy.bodies if op == "submitjob"]
    assert max(sizes) < 30 * 1024


def test_limits_learned_from_the_compute_environment(moto, shared, proxy):
    """The spot queue's managed environment allows 16 vCPUs (maxvCpus) and 95% of its largest
    instance's memory (c5: 192 GiB); miniwdl clamps the task to that."""
    wdl = SLEEPER.format(runtime='cpu: 64 memory: "1 TiB" preemptible: 1').replace(
        "sleep 600", "echo hi"
    )
    run = run_batch(moto, shared, wdl, settings={"fallback_queue": ""})
    assert run.returncode == 0, run.stderr[-4000:]
    assert "max_cpu: 16" in run.stderr and 'limits_from: "compute environments"' in run.stderr
    (request,) = proxy.submitted()
    assert _requirements(request) == {"VCPU": "16", "MEMORY": str(int(196608 * 0.95))}


def test_a_job_batch_can_never_place_fails_naming_the_reason(moto, shared, proxy):
    """Batch leaves such a job RUNNABLE for ever with a MISCONFIGURATION reason; the attempt
    fails with one line quoting it, and the job is terminated."""
    proxy.hold_if = lambda request: NO_INSTANCE if "GPU" in _requirements(request) else None
    run = run_batch(moto, shared, SLEEPER.format(runtime="gpu: true"), timeout=120)
    assert run.returncode != 0
    (job,) = moto.run_jobs(workflow_run_of(run.dir))
    assert error_line(run) == f"AWS Batch cannot run job {job['jobId']} on queue " + (
        f"{moto.fallback_queue}: {NO_INSTANCE}"
    )
    assert "Traceback" not in run.stderr
    terminated = [json.loads(b)["jobId"] for op, b in proxy.bodies if op == "terminatejob"]
    assert terminated == [job["jobId"]]


# docker's answer when a volume does not mount (aws/efs-utils#39), as ECS on EC2 reports it;
# guess: the CannotStartContainerError prefix over docker's words (ECS "Stopped tasks error codes")
DOCKER_MOUNT_FAILURE = (
    "CannotStartContainerError: Error response from daemon: error while mounting volume "
    "'/var/lib/docker/volumes/ecs-omnibio-fs/_data': failed to mount local volume: mount "
    "fs-12345678:/:/var/lib/docker/volumes/ecs-omnibio-fs/_data, data: tls: connection timed out"
)


@pytest.mark.parametrize(
    "reason,in_container",
    [(EFS_FAILURE, False), (EFS_FAILURE, True), (DOCKER_MOUNT_FAILURE, False)],
    ids=["statusReason", "container.reason", "CannotStartContainerError"],
)
def test_filesystem_setup_failure_names_the_filesystem(moto, shared, proxy, reason, in_container):
    proxy.break_if = lambda request: reason
    proxy.break_in_container_reason = in_container
    run = run_batch(moto, shared, QUICK)
    assert run.returncode != 0
    line = error_line(run)
    assert line.endswith(
        f"could not start: {reason}; NFS did not answer: the mount target's security group must "
        "let TCP 2049 in from the compute environment's security group; check the shared "
        f"filesystem host:{shared} (every Batch host must mount it; [omnibio_awsbatch] host_path, "
        "mount_path)"
    ), line
    assert "ubuntu:22.04" not in line


@pytest.mark.parametrize("reason", [True, False], ids=["with-reason", "run-time-only"])
def test_time_limit_end_to_end(moto, shared, proxy, reason):
    """Batch stops the job at attemptDurationSeconds (60 s, run 30 times faster here)."""
    proxy.time_scale, proxy.timeout_reason = 30, reason
    run = run_batch(moto, shared, SLEEPER.format(runtime="omnibio_time_limit: 45"), timeout=120)
    assert run.returncode != 0
    (job,) = moto.run_jobs(workflow_run_of(run.dir))
    assert error_line(run) == (
        f"task t ({job['jobId']}) exceeded its time limit of 45 s "
        "(runtime.omnibio_time_limit) and was stopped"
    )
    assert [r["timeout"] for r in proxy.submitted()] == [{"attemptDurationSeconds": 60}]


def test_default_time_limit(moto, shared, proxy):
    proxy.time_scale = 30
    run = run_batch(
        moto, shared, SLEEPER.format(runtime=""), settings={"default_time_limit": "90"}, timeout=120
    )
    assert run.returncode != 0
    assert error_line(run).endswith(
        "exceeded its time limit of 90 s ([omnibio_awsbatch] default_time_limit) and was stopped"
    )
    assert [r["timeout"] for r in proxy.submitted()] == [{"attemptDurationSeconds": 90}]


def test_throttled_without_retry_after_on_submit_and_poll(moto, shared, proxy):
    """429 TooManyRequestsException, no Retry-After, on SubmitJob and on DescribeJobs."""
    proxy.fail_next("submitjob", 3)
    proxy.fail_next("describejobs", 3)
    run = run_batch(moto, shared, QUICK)
    assert run.returncode == 0, run.stderr[-4000:]
    assert proxy.answered["submitjob 429"] == 3 and proxy.answered["describejobs 429"] == 3
    assert len(proxy.submitted()) == 1 + 3  # the three refused, then the one accepted
    assert len(moto.run_jobs(workflow_run_of(run.dir))) == 1


def test_environment_within_the_ecs_overrides_limit(moto, shared, proxy):
    """An INPUTS_JSON of 9 KB: the SubmitJob request is far below 30 KiB, but ECS takes at most
    8192 characters of overrides (the proxy fails the job past them, as Batch does); the value
    reaches the task through the env file instead."""
    wdl = """
version 1.1
workflow main {
  call big { input: numbers = range(2000) }
  output { Int items = big.items }
}
task big {
  input { Array[Int] numbers }
  command <<< printf '%s\\n' "$INPUTS_JSON" | tr ',' '\\n' | wc -l >>>
  output { Int items = read_int(stdout()) }
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
"""
    run = run_batch(moto, shared, wdl)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.outputs["main.items"] == 2000
    assert "environment values passed in a file" in run.stderr
    (request,) = proxy.submitted()
    overrides = json.dumps(request["containerOverrides"], separators=(",", ":"))
    assert len(overrides) < 8192 - 2048 and len(json.dumps(request)) < 10 * 1024
