"""Bad input on omnibio_awsbatch: one clear line naming the cause, and no job left running."""

import pytest

from tests.emulators.moto_server import free_port
from tests.helpers import error_line, workflow_run_of

from .conftest import run_batch

TASK = """
version 1.1
task t {{
  command <<< echo hi >>>
  runtime {{ docker: "{image}" omnibio_result_check: "off" }}
}}
"""
ACTIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
NO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}
KEY = "[omnibio_awsbatch] {} (env MINIWDL__OMNIBIO_AWSBATCH__{})"


@pytest.mark.parametrize(
    "settings,env,expected",
    [
        ({"job_queue": ""}, {}, KEY.format("job_queue", "JOB_QUEUE") + ": is required but not set"),
        (
            {"job_queue": "no-such-queue"},
            {},
            KEY.format("job_queue", "JOB_QUEUE") + ": AWS Batch has no job queue 'no-such-queue'",
        ),
        (
            {"fallback_queue": "no-such-queue"},
            {},
            KEY.format("fallback_queue", "FALLBACK_QUEUE")
            + ": AWS Batch has no job queue 'no-such-queue'",
        ),
        ({"host_path": ""}, {}, KEY.format("efs_id", "EFS_ID") + ": set exactly one of efs_id"),
        (
            {"mount_path": ""},
            {},
            KEY.format("mount_path", "MOUNT_PATH") + ": is required but not set",
        ),
        ({"tags": "[1]"}, {}, KEY.format("tags", "TAGS") + ": should be a JSON dict"),
        ({"job_queu": "x"}, {}, "unknown configuration key(s) [omnibio_awsbatch] job_queu"),
        (
            {},
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:{closed}"},
            "omnibio_awsbatch cannot reach AWS Batch at http://127.0.0.1:{closed} (set by AWS_ENDPOINT_URL)",
        ),
        ({}, NO_CREDENTIALS, "omnibio_awsbatch found no AWS credentials in boto3's chain"),
    ],
    ids=[
        "missing-queue",
        "unknown-queue",
        "unknown-fallback-queue",
        "no-filesystem",
        "no-mount-path",
        "bad-tags",
        "unknown-key",
        "unreachable-endpoint",
        "no-credentials",
    ],
)
def test_configuration_problems_fail_at_start(moto, shared, settings, env, expected):
    closed = free_port()
    env = {k: v.format(closed=closed) for k, v in env.items()}
    run = run_batch(
        moto, shared, TASK.format(image="ubuntu:22.04"), settings=settings, env=env, timeout=120
    )
    _assert_one_line(run, expected.format(closed=closed))
    assert moto.run_jobs(workflow_run_of(run.dir)) == []  # nothing was submitted


def test_rejected_credentials(moto, shared):
    """moto checks access keys against its IAM users once authentication is switched on."""
    with moto.server.require_auth():
        run = run_batch(
            moto,
            shared,
            TASK.format(image="ubuntu:22.04"),
            env={"AWS_ACCESS_KEY_ID": "AKIAREJECTEDEXAMPLE1"},
        )
    _assert_one_line(
        run, f"AWS Batch at {moto.server.endpoint} rejected the credentials boto3 found (env)"
    )
    assert "The security token included in the request is invalid" in error_line(run)
    assert "AKIAREJECTEDEXAMPLE1" not in run.stderr and "testing" not in error_line(run)
    assert moto.run_jobs(workflow_run_of(run.dir)) == []


def test_missing_image_names_the_image(moto, shared):
    run = run_batch(moto, shared, TASK.format(image="omnibio/no-such-image:1"))
    _assert_one_line(run, "check that image omnibio/no-such-image:1 exists")
    jobs = moto.run_jobs(workflow_run_of(run.dir))
    assert len(jobs) == 1 and jobs[0]["status"] == "FAILED"


def _assert_one_line(run, expected: str) -> None:
    assert run.returncode != 0
    line = error_line(run)
    assert expected in line, line
    assert "\n" not in line and "Traceback" not in line
    print(line)
