"""omnibio_awsbatch edge cases that moto cannot produce: Batch's own failure reasons, long names,
oversized payloads, EFS volumes. The end-to-end tests cover the common paths for real."""

import logging
import os
import re

import botocore.exceptions
import pytest

from miniwdl_omnibio.engines.awsbatch import (
    JOB_NAME_MAX,
    PAYLOAD_BUDGET,
    AwsBatchEngine,
    JobRecord,
    SharedVolume,
    SubmitRate,
    error_text,
    is_auth_error,
    job_name,
    job_status,
    needs_listed_exit_code,
)
from miniwdl_omnibio.engines.base import Phase

RECORD = JobRecord(
    name="omnibio-1234abcd-call-x-1",
    queue="spot",
    call="call-x",
    image="quay.io/biocontainers/bwa:0.7.17",
    time_limit=120,
    submitted=0.0,
)


def _job(status, reason=None, exit_code=None, attempt_reason=None, **extra):
    job = {
        "jobId": "j-1",
        "status": status,
        "container": {},
        "attempts": [{"container": {}}],
        **extra,
    }
    if reason:
        job["statusReason"] = reason
    if exit_code is not None:
        job["container"]["exitCode"] = exit_code
    if attempt_reason:
        job["attempts"][-1]["statusReason"] = attempt_reason
    return job


@pytest.mark.parametrize(
    "state,phase",
    [
        ("SUBMITTED", Phase.QUEUED),
        ("RUNNABLE", Phase.QUEUED),
        ("STARTING", Phase.RUNNING),
        ("RUNNING", Phase.RUNNING),
    ],
)
def test_states(state, phase):
    assert job_status(_job(state), RECORD).phase is phase


def test_succeeded_without_exit_code_is_zero():
    status = job_status(_job("SUCCEEDED"), RECORD)
    assert status.phase is Phase.DONE and status.exit_code == 0


def test_failed_exit_code_from_describe_or_list():
    assert job_status(_job("FAILED", exit_code=3), RECORD).exit_code == 3
    assert job_status(_job("FAILED"), RECORD, listed_exit_code=5).exit_code == 5


def test_spot_host_loss_in_attempt_reason_is_an_interruption():
    status = job_status(
        _job("FAILED", attempt_reason="Host EC2 (instance i-0abc) terminated."), RECORD
    )
    assert status.interrupted and status.error is None


def test_cannot_pull_names_the_image():
    reason = "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found"
    status = job_status(_job("FAILED", reason=reason), RECORD)
    assert (
        status.error
        and "could not pull image quay.io/biocontainers/bwa:0.7.17" in status.error
        and reason in status.error
    )


def test_out_of_memory():
    status = job_status(
        _job(
            "FAILED", reason="OutOfMemoryError: Container killed due to memory usage", exit_code=137
        ),
        RECORD,
    )
    assert status.oom and status.exit_code == 137
    assert job_status(
        _job("FAILED", reason="OutOfMemoryError: Container killed due to memory usage"), RECORD
    ).oom


def test_time_limit_from_reason_or_duration():
    status = job_status(
        _job("FAILED", reason="Job attempt duration exceeded timeout", exit_code=137), RECORD
    )
    assert "exceeded its time limit of 120 s" in status.error
    moto_style = _job("FAILED", startedAt=1_000, stoppedAt=1_000 + 121_000)
    assert "exceeded its time limit of 120 s" in job_status(moto_style, RECORD).error


def test_log_stream_from_the_last_attempt():
    job = _job("FAILED", exit_code=1)
    job["attempts"][-1]["container"]["logStreamName"] = "omnibio-x/default/j-1"
    details = job_status(job, RECORD).details
    assert (
        details["log_stream"] == "omnibio-x/default/j-1"
        and details["log_group"] == "/aws/batch/job"
    )


def test_job_names_are_valid_and_distinct():
    prefix = "omnibio-1234abcd-"
    long_call = "/".join(f"call-subworkflow_{i}" for i in range(20)) + "/call-align-3"
    names = {
        job_name(prefix, long_call, 1),
        job_name(prefix, long_call + "x", 1),
        job_name(prefix, "call-a.b/call-c", 2),
    }
    assert len(names) == 3
    for name in names:
        assert len(name) <= JOB_NAME_MAX and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name), name
    assert job_name(prefix, long_call, 1).endswith("call-align-3-1")


def test_large_environment_values_are_spilled():
    env = {"INPUTS_JSON": "x" * 40_000, "RUN_ID": "r", "TOOL_ID": "t"}
    spilled = AwsBatchEngine._spill(env)
    assert list(spilled) == ["INPUTS_JSON"] and set(env) == {"RUN_ID", "TOOL_ID"}
    assert sum(len(v) for v in env.values()) < PAYLOAD_BUDGET


def test_submit_rate_spaces_calls():
    rate = SubmitRate(10)
    delays = [rate.delay() for _ in range(15)]
    assert delays[:10] == [0.0] * 10  # a burst of one second's worth
    assert 0.35 < delays[-1] <= 0.55  # then one every 0.1 s


def test_efs_volume():
    volume = SharedVolume(efs_id="fs-123", efs_access_point="fsap-9", host_path="")
    assert volume.source(".") == {
        "efsVolumeConfiguration": {
            "fileSystemId": "fs-123",
            "transitEncryption": "ENABLED",
            "authorizationConfig": {"accessPointId": "fsap-9"},
        }
    }
    plain = SharedVolume(efs_id="fs-123", efs_access_point="", host_path="")
    assert plain.source("runs")["efsVolumeConfiguration"]["rootDirectory"] == "/runs"
    assert SharedVolume("", "", "/fsx").source("runs") == {"host": {"sourcePath": "/fsx/runs"}}


def test_moto_xml_errors_and_auth_detection():
    body = '<?xml version="1.0"?><ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></Errors></ErrorResponse>'
    exn = botocore.exceptions.ClientError(
        {"Error": {"Code": "403", "Message": body}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "DescribeJobQueues",
    )
    assert (
        error_text(exn)
        == "InvalidClientTokenId: The security token included in the request is invalid."
    )
    assert is_auth_error(exn)
    throttled = botocore.exceptions.ClientError(
        {
            "Error": {"Code": "TooManyRequestsException", "Message": "slow down"},
            "ResponseMetadata": {"HTTPStatusCode": 429},
        },
        "SubmitJob",
    )
    assert not is_auth_error(throttled)


def test_only_failures_that_hang_on_an_exit_code_ask_list_jobs():
    assert needs_listed_exit_code(_job("FAILED"))
    assert not needs_listed_exit_code(_job("FAILED", exit_code=1))
    assert not needs_listed_exit_code(_job("SUCCEEDED"))
    assert not needs_listed_exit_code(
        _job("FAILED", attempt_reason="Host EC2 (instance i-1) terminated.")
    )
    assert not needs_listed_exit_code(_job("FAILED", reason="CannotPullContainerError: not found"))


def test_example_configuration_is_valid():
    """examples/awsbatch.cfg: only known keys, and every value parses (no AWS call)."""
    from WDL.runtime import config as miniwdl_config

    from miniwdl_omnibio.config import DEFAULTS, Settings, check_sections
    from miniwdl_omnibio.sharedfs import SharedFilesystem
    from tests.helpers import REPO

    cfg = miniwdl_config.Loader(
        logging.getLogger("test"), [os.path.join(REPO, "examples", "awsbatch.cfg")]
    )
    check_sections(cfg, ("omnibio", "omnibio_awsbatch"))
    settings = Settings(cfg, "omnibio_awsbatch")
    assert (
        settings.text("job_queue") == "omnibio-spot"
        and settings.json_object("tags")["project"] == "omnibio"
    )
    assert SharedFilesystem.from_settings(settings).readonly_root == "/mnt/omnibio_inputs"
    assert (
        SharedVolume.from_settings(settings).source(".")["efsVolumeConfiguration"][
            "transitEncryption"
        ]
        == "ENABLED"
    )
    assert settings.size("max_memory") == 384 * 10**9 and settings.number("submit_rate") == 10
    assert set(DEFAULTS["omnibio_awsbatch"]) >= {
        k for k in cfg.get_all(defaults=False).get("omnibio_awsbatch", {})
    }
