"""The AWS Batch emulator the omnibio_awsbatch tests rely on: moto with the fixes of
moto_batch.py, behind the proxy of moto_proxy.py. Each test checks one documented behaviour with
plain boto3 (no plugin code), so the engine's tests cannot pass on an emulator that drifted."""

import importlib.util

import botocore.config
import botocore.exceptions
import pytest
import requests

from tests.conftest import require
from tests.emulators.moto_server import MotoBatch, MotoServer
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def account(docker_rig, tmp_path_factory):
    require(importlib.util.find_spec("moto") is not None, "moto[server] is not installed")
    server = MotoServer(str(tmp_path_factory.mktemp("moto") / "moto.log")).start()
    try:
        yield MotoBatch(server, max_vcpus=1).create()
    finally:
        server.stop()


def _definition(batch, name: str, **properties) -> str:
    return batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties={
            "image": "ubuntu:22.04",
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
            **properties,
        },
    )["jobDefinitionArn"]


def _until_ended(batch, ids: list[str], timeout: float = 120) -> dict[str, dict]:
    def ended() -> dict[str, dict] | None:
        jobs = {j["jobId"]: j for j in batch.describe_jobs(jobs=ids)["jobs"]}
        return jobs if all(j["status"] in ("SUCCEEDED", "FAILED") for j in jobs.values()) else None

    return wait_until(ended, f"jobs {ids} to end", timeout)


def test_array_children_their_index_exit_codes_and_parent(account):
    batch = account.server.client("batch")
    definition = _definition(
        batch, "index", command=["/bin/sh", "-c", 'exit "$AWS_BATCH_JOB_ARRAY_INDEX"']
    )
    parent = batch.submit_job(
        jobName="array",
        jobQueue=account.fallback_queue,
        jobDefinition=definition,
        arrayProperties={"size": 2},
    )["jobId"]
    children = _until_ended(batch, [f"{parent}:0", f"{parent}:1"])
    # each child saw its own index, and DescribeJobs gives the exit code it ended with
    assert children[f"{parent}:0"]["status"] == "SUCCEEDED"
    assert children[f"{parent}:1"]["status"] == "FAILED"
    assert children[f"{parent}:1"]["container"]["exitCode"] == 1
    (described,) = batch.describe_jobs(jobs=[parent])["jobs"]
    assert described["status"] == "FAILED"  # every child ended, one failed
    twice = [batch.describe_jobs(jobs=[f"{parent}:0"])["jobs"][0] for _ in range(2)]
    assert [len(j["container"]["environment"]) for j in twice] == [2, 2]  # JOB_ID, ARRAY_INDEX
    assert described["arrayProperties"]["statusSummary"]["SUCCEEDED"] == 1


def test_mount_point_without_read_only_is_writable(account, tmp_path):
    batch = account.server.client("batch")
    definition = _definition(
        batch,
        "mount",
        command=["/bin/sh", "-c", "touch /data/written"],
        volumes=[{"name": "data", "host": {"sourcePath": str(tmp_path)}}],
        mountPoints=[{"sourceVolume": "data", "containerPath": "/data"}],
    )
    job = batch.submit_job(
        jobName="mount-job", jobQueue=account.fallback_queue, jobDefinition=definition
    )
    assert _until_ended(batch, [job["jobId"]])[job["jobId"]]["status"] == "SUCCEEDED"
    assert (tmp_path / "written").exists()


def test_managed_environment_runs_at_most_its_max_vcpus(account):
    """maxvCpus 1: the second one-vCPU job starts only after the first stopped."""
    batch = account.server.client("batch")
    definition = _definition(batch, "nap", command=["/bin/sh", "-c", "sleep 2"])
    ids = [
        batch.submit_job(jobName=f"n{i}", jobQueue=account.queue, jobDefinition=definition)["jobId"]
        for i in range(2)
    ]
    first, second = sorted(_until_ended(batch, ids).values(), key=lambda j: j["startedAt"])
    assert second["startedAt"] >= first["stoppedAt"]


def test_proxy_throttles_without_retry_after(account):
    proxy = account.server.proxy
    proxy.fail_next("describejobs", 1)
    try:
        unretried = botocore.config.Config(retries={"total_max_attempts": 1})
        batch = account.server.client("batch", endpoint=proxy.endpoint, config=unretried)
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            batch.describe_jobs(jobs=["x"])
        response = raised.value.response
        assert response["Error"]["Code"] == "TooManyRequestsException"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert "retry-after" not in response["ResponseMetadata"]["HTTPHeaders"]
        assert batch.describe_jobs(jobs=["x"])["jobs"] == []  # the next call goes through
    finally:
        proxy.reset()


def test_proxy_relays_an_objects_size_on_head(account):
    """Processes reach S3 through the proxy too: HeadObject's ContentLength is the object's size
    (RFC 9110 9.3.2), not the length of the empty HEAD body."""
    direct = account.server.client("s3")
    direct.create_bucket(Bucket="proxy-head")
    direct.put_object(Bucket="proxy-head", Key="k", Body=b"fifteen bytes!\n")
    proxied = account.server.client("s3", endpoint=account.server.proxy.endpoint)
    assert proxied.head_object(Bucket="proxy-head", Key="k")["ContentLength"] == 15
    assert proxied.get_object(Bucket="proxy-head", Key="k")["Body"].read() == b"fifteen bytes!\n"


def test_proxy_holds_an_unplaceable_job_runnable_until_terminated(account):
    proxy = account.server.proxy
    proxy.hold_if = lambda request: "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - none fits"
    try:
        batch = account.server.client("batch", endpoint=proxy.endpoint)
        definition = _definition(batch, "held", command=["/bin/sh", "-c", "sleep 600"])
        job = batch.submit_job(
            jobName="held-job", jobQueue=account.fallback_queue, jobDefinition=definition
        )
        (held,) = batch.describe_jobs(jobs=[job["jobId"]])["jobs"]
        assert held["status"] == "RUNNABLE" and held["statusReason"].startswith("MISCONFIG")
        batch.terminate_job(jobId=job["jobId"], reason="stop")
        ended = _until_ended(batch, [job["jobId"]])[job["jobId"]]
        assert ended["status"] == "FAILED" and ended["statusReason"] == "stop"
    finally:
        proxy.reset()


def test_proxy_counts_every_request_by_service(account):
    proxy = account.server.proxy
    try:
        s3 = account.server.client("s3", endpoint=proxy.endpoint)
        s3.put_object(Bucket=account.bucket, Key="k", Body=b"x")
        s3.get_object(Bucket=account.bucket, Key="k")
        requests.get(proxy.endpoint + "/moto-api/data.json", timeout=30)
        assert proxy.calls["s3 PUT"] == 1 and proxy.calls["s3 GET"] == 1
        assert proxy.calls["unsigned GET"] == 1
    finally:
        proxy.reset()


def test_proxy_enforces_the_submitjob_and_ecs_override_limits(account):
    """Over 30 KiB SubmitJob is refused; under it, containerOverrides over 8192 characters fail
    the job before it runs; a job within both runs."""
    batch = account.server.client("batch", endpoint=account.server.proxy.endpoint)
    definition = _definition(batch, "sized", command=["true"])

    def submit(name: str, value_length: int) -> str:
        overrides = {"environment": [{"name": "V", "value": "v" * value_length}]}
        return batch.submit_job(
            jobName=name,
            jobQueue=account.fallback_queue,
            jobDefinition=definition,
            containerOverrides=overrides,
        )["jobId"]

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        submit("payload", 31 * 1024)
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ClientException"
    assert "Job size must be less than 30 KiB, got 32 KiB" in error["Error"]["Message"]
    too_long, fits = submit("overrides", 8200), submit("fits", 7000)
    jobs = _until_ended(batch, [too_long, fits])
    assert jobs[too_long]["status"] == "FAILED"
    assert jobs[too_long]["statusReason"] == "Container Overrides length must be at most 8192"
    assert "exitCode" not in jobs[too_long]["container"]
    assert jobs[fits]["status"] == "SUCCEEDED"


def _array(batch, account, name: str, size: int) -> str:
    definition = _definition(batch, name, command=["/bin/sh", "-c", "sleep 600"])
    return batch.submit_job(
        jobName=name,
        jobQueue=account.fallback_queue,
        jobDefinition=definition,
        arrayProperties={"size": size},
    )["jobId"]


def test_terminating_an_array_parent_terminates_its_children(account):
    batch = account.server.client("batch")
    parent = _array(batch, account, "whole", 2)
    batch.terminate_job(jobId=parent, reason="stop all")
    children = _until_ended(batch, [f"{parent}:0", f"{parent}:1"])
    assert {(j["status"], j["statusReason"]) for j in children.values()} == {("FAILED", "stop all")}


@pytest.mark.parametrize("hold_at", ["every", "parent", "head"])
def test_proxy_puts_a_blocked_arrays_reason_where_asked(account, hold_at):
    proxy = account.server.proxy
    proxy.hold_if = lambda request: "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - none fits"
    proxy.hold_at = hold_at
    try:
        batch = account.server.client("batch", endpoint=proxy.endpoint)
        parent = _array(batch, account, f"held-{hold_at}", 3)
        ids = [f"{parent}:{i}" for i in range(3)]
        described = {j["jobId"]: j for j in batch.describe_jobs(jobs=[parent, *ids])["jobs"]}
        listed = batch.list_jobs(arrayJobId=parent, jobStatus="RUNNABLE")["jobSummaryList"]
        assert sorted(j["jobId"] for j in listed) == ids
        assert described[parent]["status"] == "PENDING"
        assert described[parent]["arrayProperties"]["statusSummary"]["RUNNABLE"] == 3
        carriers = {
            "every": ids,
            "parent": [parent],
            "head": [ids[-1]],  # guess: the proxy's head child is the last
        }[hold_at]
        for answer in (described, {j["jobId"]: j for j in listed}):
            with_reason = sorted(i for i, j in answer.items() if j.get("statusReason"))
            assert with_reason == sorted(c for c in carriers if c in answer)
        assert batch.list_jobs(arrayJobId=parent, jobStatus="RUNNING")["jobSummaryList"] == []
        batch.terminate_job(jobId=parent, reason="stop")
        assert {j["status"] for j in _until_ended(batch, ids).values()} == {"FAILED"}
    finally:
        proxy.reset()


@pytest.mark.parametrize("unknown_job", ["error", "ignore"])
def test_proxy_lists_an_arrays_children_late(account, unknown_job):
    proxy = account.server.proxy
    proxy.late_children, proxy.unknown_job = 2, unknown_job
    try:
        batch = account.server.client("batch", endpoint=proxy.endpoint)
        parent = _array(batch, account, f"late-{unknown_job}", 2)
        child = f"{parent}:1"
        assert [j["jobId"] for j in batch.describe_jobs(jobs=[parent, child])["jobs"]] == [parent]
        if unknown_job == "error":
            with pytest.raises(botocore.exceptions.ClientError) as raised:
                batch.terminate_job(jobId=child, reason="too soon")
            assert raised.value.response["Error"]["Code"] == "ClientException"
        else:
            batch.terminate_job(jobId=child, reason="too soon")  # accepted, and nothing happens
        assert batch.list_jobs(arrayJobId=parent, jobStatus="RUNNING")["jobSummaryList"] == []
        (listed,) = batch.describe_jobs(jobs=[child])["jobs"]  # listed from the third listing
        assert listed["status"] != "FAILED"
        batch.terminate_job(jobId=parent, reason="stop")
        _until_ended(batch, [f"{parent}:0", child])
    finally:
        proxy.reset()
