"""omnibio_awsbatch without a service: how an attempt becomes a SubmitJob request, and how Batch's
answers (including the failures moto cannot produce) become a Status."""

import json
import logging
import os
import re
import shlex
import subprocess
import types
from dataclasses import replace
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from WDL.runtime import config as miniwdl_config

from miniwdl_omnibio.attempt import (
    TAG_ATTEMPT,
    TAG_CALL,
    TAG_RUN,
    TAG_RUN_ID,
    TAG_TASK,
    Mount,
    Resources,
    TaskAttempt,
)
from miniwdl_omnibio.config import DEFAULTS, ConfigError, check_sections
from miniwdl_omnibio.engines.awsbatch import engine as awsbatch_engine
from miniwdl_omnibio.engines.awsbatch.arrays import array_groups, array_key, plan_array
from miniwdl_omnibio.engines.awsbatch.engine import AwsBatchEngine, SubmitRate
from miniwdl_omnibio.engines.awsbatch.limits import environment_limit, instance_type_filters
from miniwdl_omnibio.engines.awsbatch.settings import AwsBatchSettings, SharedVolume
from miniwdl_omnibio.engines.awsbatch.status import error_text, is_auth_error
from miniwdl_omnibio.engines.awsbatch.status import job_status as _job_status
from miniwdl_omnibio.engines.awsbatch.translate import (
    JOB_NAME_MAX,
    OVERRIDES_BUDGET,
    REQUEST_BUDGET,
    job_command,
    job_name,
)
from miniwdl_omnibio.engines.base import Phase, Submission, Submitted
from miniwdl_omnibio.engines.jobscript import (
    CGROUP_VARIABLE,
    MISSING_FILESYSTEM_EXIT,
    ExitRecord,
    exit_record,
    read_exit_record,
)
from miniwdl_omnibio.placement.sharedfs import SharedFilesystem
from tests.helpers import REPO

IMAGE = "quay.io/biocontainers/bwa:0.7.17"
FILESYSTEM = "the shared filesystem efs:fs-1 ([omnibio_awsbatch] efs_id)"
GiB = 1 << 30
LOG = logging.getLogger("test")


def job_status(job, image):
    return _job_status(job, image, FILESYSTEM)


def _job(status, reason=None, exit_code=None, attempt_reason=None, **extra):
    job = {
        "jobId": extra.pop("jobId", "j-1"),
        "jobName": "omnibio-1234abcd-call-x-1",
        "jobQueue": "arn:aws:batch:us-east-1:123456789012:job-queue/spot",
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


# --- answers -------------------------------------------------------------------------------


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
    assert job_status(_job(state), IMAGE).phase is phase


def test_succeeded_without_exit_code_is_zero():
    status = job_status(_job("SUCCEEDED"), IMAGE)
    assert status.phase is Phase.DONE and status.exit_code == 0


def test_failed_exit_code():
    assert job_status(_job("FAILED", exit_code=3), IMAGE).exit_code == 3


@pytest.mark.parametrize(
    "reason",
    [
        "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - All compute environments have no connected "
        "instances that meet the job requirements.",
        "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE - CE(s) associated with the job queue "
        "cannot meet the CPU requirement of the job.",
        "ACTION_REQUIRED - CE(s) associated with the job queue are invalid.",
    ],
)
def test_a_job_batch_can_never_place_fails_and_is_terminated(reason):
    status = job_status(_job("RUNNABLE", reason=reason), IMAGE)
    assert status.phase is Phase.DONE and status.lingering  # the tracker terminates it
    assert status.error == f"AWS Batch cannot run job j-1 on queue spot: {reason}"


def test_a_job_waiting_for_capacity_keeps_waiting():
    reason = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity"
    status = job_status(_job("RUNNABLE", reason=reason), IMAGE)
    assert status.phase is Phase.QUEUED and status.reason == reason


# ResourceInitializationError as ECS words it ("failed to invoke EFS utils commands to set up EFS
# volumes: stderr: b'...' : unsuccessful EFS utils command execution; code: 32"), with the
# mount.nfs4 texts of AWS's EFS troubleshooting page (eks-troubleshoot-efs-volume-mount-issues)
EFS_UTILS = (
    "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes: "
)
EFS_CODE = "' : unsuccessful EFS utils command execution; code: 32"
# docker's answer when a volume does not mount (aws/efs-utils#39), as ECS on EC2 reports it
DOCKER_MOUNT = (
    "CannotStartContainerError: Error response from daemon: error while mounting volume "
    "'/var/lib/docker/volumes/ecs-omnibio-fs/_data': failed to mount local volume: mount "
    "fs-12345678:/:/var/lib/docker/volumes/ecs-omnibio-fs/_data, data: tls: "
)


@pytest.mark.parametrize(
    "reason,cause",
    [
        (EFS_UTILS + "stderr: b'mount.nfs4: Connection timed out" + EFS_CODE, "TCP 2049"),
        (
            EFS_UTILS + 'stderr: b\'Failed to resolve "fs-12345678.efs.us-east-1.amazonaws.com" '
            "- check that your file system ID is correct." + EFS_CODE,
            "mount target in the Availability Zone",
        ),
        (
            EFS_UTILS
            + "stderr: b'mount.nfs4: access denied by server while mounting 127.0.0.1:/"
            + EFS_CODE,
            "the access point",
        ),
        (
            EFS_UTILS + "stderr: b'mount.nfs4: mounting fs-12345678.efs.us-east-1.amazonaws.com:"
            "/runs failed, reason given by server: No such file or directory" + EFS_CODE,
            "does not exist on the file system",
        ),
        (DOCKER_MOUNT + "connection timed out", "TCP 2049"),
        (DOCKER_MOUNT + "no such device", None),
        ("DockerTimeoutError: Could not transition to created; timed out after waiting 4m0s", None),
    ],
)
@pytest.mark.parametrize("where", ["statusReason", "container"])
def test_filesystem_setup_failures_name_the_filesystem_not_the_image(reason, cause, where):
    job = _job("FAILED", reason=reason if where == "statusReason" else None)
    if where == "container":
        job["container"]["reason"] = reason
    status = job_status(job, IMAGE)
    prefix = f"AWS Batch job j-1 could not start: {reason}; "
    assert status.error and status.error.startswith(prefix), status.error
    assert status.error.endswith(f"; check {FILESYSTEM}")
    if cause:
        assert cause in status.error
    else:
        assert status.error == prefix + f"check {FILESYSTEM}"
    assert IMAGE not in status.error


def test_a_container_that_cannot_start_for_its_own_reasons_names_the_image():
    reason = (
        "CannotStartContainerError: Error response from daemon: failed to create shim task: OCI "
        'runtime create failed: exec: "bwa": executable file not found in $PATH'
    )
    status = job_status(_job("FAILED", reason=reason), IMAGE)
    assert status.error == (
        f"AWS Batch could not start a container from image {IMAGE} for job j-1: {reason}"
    )


def test_overrides_too_long_is_not_blamed_on_the_image():
    reason = "Container Overrides length must be at most 8192"
    status = job_status(_job("FAILED", reason=reason), IMAGE)
    assert (
        status.error == f"AWS Batch could not start job j-1: {reason} (its command and environment)"
    )


def test_spot_host_loss_in_attempt_reason_is_an_interruption():
    status = job_status(
        _job("FAILED", attempt_reason="Host EC2 (instance i-0abc) terminated."), IMAGE
    )
    assert status.interrupted and status.error is None


def test_cannot_pull_names_the_image():
    reason = "CannotPullContainerError: pull image manifest has been retried 5 time(s): not found"
    status = job_status(_job("FAILED", reason=reason), IMAGE)
    assert status.error and f"could not pull image {IMAGE}" in status.error
    assert reason in status.error


def test_out_of_memory():
    reason = "OutOfMemoryError: Container killed due to memory usage"
    status = job_status(_job("FAILED", reason=reason, exit_code=137), IMAGE)
    assert status.oom and status.exit_code == 137
    assert job_status(_job("FAILED", reason=reason), IMAGE).oom


def test_time_limit_from_reason_or_duration():
    status = job_status(
        _job("FAILED", reason="Job attempt duration exceeded timeout", exit_code=137), IMAGE
    )
    assert status.timed_out and status.phase is Phase.DONE and status.error is None
    timeout = {"attemptDurationSeconds": 120}
    moto_style = _job("FAILED", startedAt=1_000, stoppedAt=1_000 + 121_000, timeout=timeout)
    assert job_status(moto_style, IMAGE).timed_out
    early = _job("FAILED", startedAt=1_000, stoppedAt=1_000 + 30_000, timeout=timeout)
    assert not job_status(early, IMAGE).timed_out
    killed = _job("FAILED", exit_code=137, startedAt=0, stoppedAt=125_000, timeout=timeout)
    assert job_status(killed, IMAGE).timed_out  # SIGKILL at the limit, whatever the words


def test_log_stream_from_the_last_attempt():
    job = _job("FAILED", exit_code=1)
    job["attempts"][-1]["container"]["logStreamName"] = "omnibio-x/default/j-1"
    details = job_status(job, IMAGE).details
    assert details["log_stream"] == "omnibio-x/default/j-1"
    assert details["log_group"] == "/aws/batch/job"


def test_moto_xml_errors_and_auth_detection():
    body = (
        '<?xml version="1.0"?><ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code>'
        "<Message>The security token included in the request is invalid.</Message></Error>"
        "</Errors></ErrorResponse>"
    )
    exn = botocore.exceptions.ClientError(
        {"Error": {"Code": "403", "Message": body}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        "DescribeJobQueues",
    )
    assert error_text(exn) == (
        "InvalidClientTokenId: The security token included in the request is invalid."
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


def test_learned_limits_from_a_compute_environment():
    sizes = {"m5.2xlarge": (8, 32768), "c5.24xlarge": (96, 196608), "c5.large": (2, 4096)}
    resources = {"maxvCpus": 16, "instanceTypes": ["m5.2xlarge", "c5"]}
    # vCPUs: the largest instance, but no more than maxvCpus; memory: 95% of the largest
    assert environment_limit(resources, sizes) == (16, int(196608 * 0.95) * (1 << 20))
    assert environment_limit({"maxvCpus": 256, "instanceTypes": ["optimal"]}, sizes) == (
        96,
        int(196608 * 0.95) * (1 << 20),
    )
    assert environment_limit({"maxvCpus": 4, "instanceTypes": ["r5"]}, sizes) is None
    assert instance_type_filters(["m5.2xlarge", "c5", "default_arm64"]) == [
        "c5.*",
        "c6g.*",
        "c7g.*",
        "m5.2xlarge",
        "m6g.*",
        "r6g.*",
    ]


# --- requests ------------------------------------------------------------------------------


def _settings(monkeypatch, **values):
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    section = {
        "job_queue": "spot",
        "fallback_queue": "ondemand",
        "host_path": "/fsx",
        "mount_path": "/fsx",
        **values,
    }
    for key, value in section.items():
        monkeypatch.setenv(f"MINIWDL__OMNIBIO_AWSBATCH__{key.upper()}", value)
    cfg = miniwdl_config.Loader(logging.getLogger("test"), filenames=[])
    return AwsBatchSettings.load(cfg)


def engine_session():
    return boto3.session.Session(
        region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def _engine(monkeypatch, **values):
    return AwsBatchEngine(engine_session(), _settings(monkeypatch, **values))


def _attempt(
    cpu=2, memory=3 * GiB, gpu=0, time_limit=None, env=None, preemptible=0, interruptions=0
):
    return TaskAttempt(
        run_id="run.call-x.1",
        call="call-x",
        workflow_run="run",
        attempt=1,
        image=IMAGE,
        argv=("/bin/sh", "-c", "bwa mem"),
        workdir="/fsx/run/call-x/work",
        env=env or {"TOOL_ID": "x"},
        mounts=(Mount("/fsx", "/fsx", False), Mount("/fsx", "/mnt/omnibio_inputs", True)),
        resources=Resources(
            cpu=cpu,
            memory_reservation=memory,
            memory_limit=memory,
            gpu=gpu,
            disk=None,
            time_limit=time_limit,
            max_interruptions=preemptible,
        ),
        tags={"omnibio.run": "run", "omnibio.call": "call-x"},
        stdout_path="/fsx/run/call-x/stdout.txt",
        stderr_path="/fsx/run/call-x/stderr.txt",
        host_dir="/fsx/run/call-x",
        interruptions=interruptions,
    )


def test_translation_is_pure_and_sizes_the_job(monkeypatch):
    engine = _engine(monkeypatch)
    attempt = _attempt(cpu=2, memory=3 * GiB + 1, gpu=1, time_limit=3600)
    request = engine.translate(attempt)
    assert request == engine.translate(attempt) and not request.files
    arguments = request.arguments("arn:def")
    overrides = arguments["containerOverrides"]
    assert overrides["resourceRequirements"] == [
        {"type": "VCPU", "value": "2"},
        {"type": "MEMORY", "value": "3073"},  # MiB, rounded up
        {"type": "GPU", "value": "1"},
    ]
    assert arguments["timeout"] == {"attemptDurationSeconds": 3600}
    assert arguments["retryStrategy"] == {"attempts": 1} and arguments["propagateTags"]
    assert arguments["jobDefinition"] == "arn:def" and arguments["jobQueue"] == "ondemand"
    assert overrides["environment"] == [{"name": "TOOL_ID", "value": "x"}]
    assert overrides["command"][-3:] == ["/bin/sh", "-c", "bwa mem"]
    properties = json.loads(request.definition.properties)
    assert properties["image"] == IMAGE
    assert properties["volumes"] == [{"name": "omnibio-fs", "host": {"sourcePath": "/fsx"}}]
    assert [p["readOnly"] for p in properties["mountPoints"]] == [False, True]


def test_time_limit_has_batch_minimum_and_memory_a_default(monkeypatch):
    engine = _engine(monkeypatch, default_memory="1 GiB")
    request = engine.translate(_attempt(memory=0, time_limit=5))
    assert request.timeout == 60  # Batch refuses attemptDurationSeconds below 60
    assert ("MEMORY", "1024") in request.resources
    assert engine.translate(_attempt()).timeout is None
    # max_cpu / max_memory unset and nothing learned: the fallback limits
    assert engine.settings.max_cpu is None and engine.limits == {"cpu": 64, "mem_bytes": 256 * GiB}
    learned = AwsBatchEngine(engine_session(), engine.settings, {"cpu": 16, "mem_bytes": GiB})
    assert learned.limits == {"cpu": 16, "mem_bytes": GiB}


def test_queue_choice(monkeypatch):
    engine = _engine(monkeypatch)
    assert engine.translate(_attempt()).queue == "ondemand"  # not preemptible
    assert engine.translate(_attempt(preemptible=1)).queue == "spot"
    assert engine.translate(_attempt(preemptible=1, interruptions=1)).queue == "ondemand"


def test_the_whole_request_fits_the_submitjob_limit(monkeypatch):
    engine = _engine(monkeypatch)
    env = {"INPUTS_JSON": "x" * 25_000, "OTHER": "é" * 2_000, "RUN_ID": "r", "TOOL_ID": "t"}
    request = engine.translate(_attempt(env=env))
    size, overrides = request.sizes()
    assert size <= REQUEST_BUDGET and overrides <= OVERRIDES_BUDGET
    (path,) = request.files
    assert path == "/fsx/run/call-x/awsbatch_env.1.sh"
    # "é" is sent as \u00e9: 2,000 of them are 12 KB of JSON, over the ECS overrides limit too
    assert "export INPUTS_JSON=" in request.files[path] and "export OTHER=" in request.files[path]
    assert f"\n. {path}\n" in request.command[2]  # the job script sources it
    assert set(request.environment) == {"RUN_ID", "TOOL_ID"}
    small = engine.translate(_attempt(env={"INPUTS_JSON": "x" * 4_000}))
    assert not small.files and "awsbatch_env" not in small.command[2]


def test_the_ecs_overrides_fit_though_the_request_is_small(monkeypatch):
    """8 KB of environment is far below SubmitJob's 30 KiB, but over ECS's 8192 characters of
    overrides: the largest values move to the env file, the small ones stay."""
    engine = _engine(monkeypatch)
    env = {"INPUTS_JSON": "x" * 5_000, "RESOURCES_JSON": "y" * 3_000, "RUN_ID": "r"}
    request = engine.translate(_attempt(env=env))
    size, overrides = request.sizes()
    assert size < 10 * 1024 and overrides <= OVERRIDES_BUDGET
    (text,) = request.files.values()
    assert text == "export INPUTS_JSON=" + "x" * 5_000 + "\n"
    assert set(request.environment) == {"RESOURCES_JSON", "RUN_ID"}


def test_job_definition_is_shared_by_content(monkeypatch):
    engine = _engine(monkeypatch)
    first = engine.translate(_attempt(cpu=1)).definition
    assert first == engine.translate(_attempt(cpu=8, time_limit=100)).definition
    assert re.fullmatch(r"omnibio-[0-9a-f]{32}", first.name)


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


def test_example_configuration_is_valid():
    """examples/awsbatch.cfg: only known keys, and every value parses (no AWS call)."""
    cfg = miniwdl_config.Loader(
        logging.getLogger("test"), [os.path.join(REPO, "examples", "awsbatch.cfg")]
    )
    check_sections(cfg, ("omnibio", "omnibio_awsbatch"))
    settings = AwsBatchSettings.load(cfg)
    assert settings.job_queue == "omnibio-spot" and settings.tags["project"] == "omnibio"
    assert settings.filesystem == SharedFilesystem("/mnt/efs", "/mnt/efs", "/mnt/omnibio_inputs")
    assert settings.volume.source(".")["efsVolumeConfiguration"]["transitEncryption"] == "ENABLED"
    assert settings.max_memory == 384 * 10**9 and settings.submit_rate == 10
    assert set(DEFAULTS["omnibio_awsbatch"]) >= set(
        cfg.get_all(defaults=False).get("omnibio_awsbatch", {})
    )


# --- array jobs ----------------------------------------------------------------------------


def _requests(monkeypatch, count, **attempt):
    engine = _engine(monkeypatch)
    requests = []
    for i in range(count):
        base = _attempt(**attempt)
        requests.append(
            engine.translate(
                replace(
                    base,
                    call=f"call-x-{i}",
                    host_dir=f"/fsx/run/call-x-{i}",
                    env={"TOOL_ID": "x", "RUN_ID": f"run.call-x-{i}.1"},
                    tags={**base.tags, "omnibio.call": f"call-x-{i}"},
                )
            )
        )
    return requests


def test_array_of_attempts(monkeypatch):
    requests = _requests(monkeypatch, 3, time_limit=600)
    assert len({array_key(r) for r in requests}) == 1
    plan, directory = plan_array(requests, "omnibio-1-x-array1-3", lambda path: "/c" + path)
    assert directory == "/fsx/run/omnibio_arrays/omnibio-1-x-array1-3"
    arguments = plan.arguments("arn:def")
    assert arguments["arrayProperties"] == {"size": 3}
    assert arguments["containerOverrides"]["environment"] == []
    assert arguments["containerOverrides"]["command"][-1] == "/c" + directory
    assert arguments["timeout"] == {"attemptDurationSeconds": 600}
    assert arguments["tags"] == {"omnibio.run": "run"}  # the tags every member shares
    script = plan.files[directory + "/1.sh"]
    assert "export RUN_ID=run.call-x-1.1\n" in script
    assert script.rstrip().endswith("exec " + shlex.join(requests[1].command))
    other = _requests(monkeypatch, 1, cpu=4)[0]
    assert array_key(other) != array_key(requests[0])  # other resources: another array


class RecordingBatch:
    """SubmitJob and DescribeJobDefinitions as Batch answers them, the requests recorded."""

    def __init__(self):
        self.submitted = []

    def describe_job_definitions(self, jobDefinitionName, status):
        return {"jobDefinitions": [{"revision": 1, "jobDefinitionArn": "arn:def"}]}

    def submit_job(self, **arguments):
        self.submitted.append(arguments)
        return {"jobId": f"job{len(self.submitted)}"}


def test_more_than_10000_attempts_split_into_arrays_of_10000(monkeypatch, tmp_path):
    """SubmitJob: an array size "between 2 and 10,000". 10,001 attempts gathered together go as
    one array of 10,000 and a plain job, through the engine's own submission; each child's group
    is its array's parent."""
    engine = _engine(monkeypatch, host_mount_path=str(tmp_path), submit_rate="100")
    engine.batch = RecordingBatch()
    host_dir = str(tmp_path / "run" / "call-x")
    attempt = replace(
        _attempt(),
        host_dir=host_dir,
        stdout_path=host_dir + "/stdout.txt",
        stderr_path=host_dir + "/stderr.txt",
        mounts=(Mount(str(tmp_path), "/fsx", False),),
    )
    first = engine.translate(attempt)
    burst = [
        Submission(attempt, replace(first, host_dir=str(tmp_path / "run" / f"call-x-{i}")), LOG)
        for i in range(10_001)
    ]
    accepted = engine.submit_many(burst)
    sizes = [(r.get("arrayProperties") or {}).get("size") for r in engine.batch.submitted]
    assert sizes == [10_000, None]
    assert [a.handle for a in accepted[:2]] == ["job1:0", "job1:1"]
    assert accepted[9_999].handle == "job1:9999" and accepted[10_000].handle == "job2"
    assert {a.group for a in accepted[:10_000]} == {"job1"} and accepted[10_000].group is None
    assert len(os.listdir(tmp_path / "run" / "omnibio_arrays")) == 1


LONG_TAGS = {**{f"k{i}": "v" for i in range(43)}, "long": "x" * 300, "y" * 200: "v"}


@pytest.mark.parametrize(
    "tags,error",
    [
        (LONG_TAGS, None),
        ({f"k{i}": "v" for i in range(46)}, "at most 45 tags"),
        ({"aws:createdBy": "me"}, "none starting with aws:"),
        ({"AWS:createdBy": "me"}, "none starting with aws:"),
    ],
)
def test_tags_at_most_45_none_starting_with_aws(monkeypatch, tags, error):
    """SubmitJob tags: at most 50 a resource, "aws:" reserved; the engine adds five of its own."""
    if error:
        with pytest.raises(ConfigError, match=f"tags.*{error}"):
            _settings(monkeypatch, tags=json.dumps(tags))
        return
    engine = _engine(monkeypatch, tags=json.dumps(tags))
    own = {TAG_RUN: "run", TAG_CALL: "call-x", TAG_TASK: "x", TAG_ATTEMPT: "1", TAG_RUN_ID: "r"}
    sent = engine.translate(replace(_attempt(), tags=own)).arguments("arn:def")["tags"]
    assert len(sent) == 50 and set(sent) >= set(own)
    assert sent["long"] == "x" * 256 and "y" * 128 in sent  # Batch's value and key lengths


def test_a_burst_makes_one_array_per_shared_key():
    """The tracker gathers a burst for array_linger_seconds (at most ten times that) and hands
    it to submit_many, which sends one array per array_key, in the order the burst came."""
    key = types.SimpleNamespace(queue="q", definition=types.SimpleNamespace(name="d"))
    timeouts = (1, 2, 1, 1)
    requests = [types.SimpleNamespace(**vars(key), resources=(), timeout=t) for t in timeouts]
    assert array_groups(requests) == [[0, 2, 3], [1]]  # the other timeout goes alone
    assert array_groups(requests, 1) == [[0], [2], [3], [1]]  # array_jobs = false


@pytest.mark.parametrize(
    "values,gather",
    [
        ({}, (0.2, 2.0)),
        ({"array_linger_seconds": "3"}, (3.0, 30.0)),
        ({"array_jobs": "false"}, (0, 0)),
    ],
)
def test_the_tracker_gathers_and_sweeps_for_the_engine(monkeypatch, values, gather):
    engine = _engine(monkeypatch, describe_seconds="45", **values)
    assert (engine.gather_seconds, engine.gather_max_seconds) == gather
    assert engine.cancel_gather_seconds == 1.5 and engine.sweep_seconds == 45


class ScriptedBatch:
    """DescribeJobs, ListJobs and TerminateJob answering from a dict, recording what was asked
    (the e2e suite has moto). ListJobs gives an array's children in ``status``, ``page`` a call."""

    def __init__(self, answers, page=1000):
        self.answers = answers
        self.page = page
        self.asked = []  # DescribeJobs: the ids of each call
        self.listed = []  # ListJobs: (arrayJobId, jobStatus, nextToken) of each call
        self.terminated = []

    def describe_jobs(self, jobs):
        self.asked.append(list(jobs))
        return {"jobs": [self.answers[j] for j in jobs if j in self.answers]}

    def list_jobs(self, arrayJobId, jobStatus, nextToken="0"):
        self.listed.append((arrayJobId, jobStatus, nextToken))
        found = [
            job
            for handle, job in sorted(self.answers.items())
            if handle.startswith(arrayJobId + ":") and job.get("status") == jobStatus
        ]
        start = int(nextToken)
        answer = {"jobSummaryList": found[start : start + self.page]}
        if start + self.page < len(found):
            answer["nextToken"] = str(start + self.page)
        return answer

    def get_paginator(self, operation):
        """botocore's paginator for list_jobs: every page, following nextToken."""
        assert operation == "list_jobs"

        def paginate(**arguments):
            while True:
                page = self.list_jobs(**arguments)
                yield page
                if "nextToken" not in page:
                    return
                arguments["nextToken"] = page["nextToken"]

        return types.SimpleNamespace(paginate=paginate)

    def terminate_job(self, jobId, reason):
        self.terminated.append(jobId)
        assert reason == "cancelled by miniwdl (omnibio_awsbatch)"


def _records(tmp_path, handles):
    """Submitted attempts, each with its own directory for its exit file; an array's children
    grouped by their parent, as submit_many gives them."""
    found = []
    for handle in handles:
        directory = tmp_path / handle.replace(":", "_")
        directory.mkdir()
        request = types.SimpleNamespace(exit_record=exit_record(str(directory), 1))
        parent = handle.split(":")[0] if ":" in handle else None
        attempt = replace(_attempt(), host_dir=str(directory))
        found.append(Submitted(handle, attempt, LOG, 0.0, request, group=parent))
    return found


def _write_exit(record, text):
    (Path(record.attempt.host_dir) / f"omnibio_exit.{record.attempt.attempt}").write_text(text)


def _apply(records, statuses):
    for record in records:
        record.status = statuses[record.handle]


def test_exit_files_end_jobs_without_asking_batch(monkeypatch, tmp_path):
    engine = _engine(monkeypatch)
    answers = {
        "p": {"jobId": "p", "status": "PENDING", "arrayProperties": {"size": 3}},
        "p:0": _job("RUNNABLE", jobId="p:0"),
        "j": _job("RUNNABLE", jobId="j"),
    }
    engine.batch = ScriptedBatch(answers)
    records = _records(tmp_path, ["p:0", "p:1", "p:2", "j"])
    _apply(records, engine.fetch(records, True))  # the first round asks Batch
    assert engine.batch.asked == [["p"], ["j"]]  # the array's waiting children: one ListJobs
    assert engine.batch.listed == [("p", "RUNNABLE", "0")]
    engine.batch.asked.clear()
    _write_exit(records[0], "")  # started
    _write_exit(records[1], "exit_code=0\nmemory_peak=209715200\ncpu_usec=2000000\n")
    _write_exit(records[2], "exit_code=137\nmemory_peak=104857600\noom=true\n")
    answers["p:2"] = _job("FAILED", exit_code=137, jobId="p:2")  # Batch names no OOM here
    statuses = engine.fetch(records, False)
    assert engine.batch.asked == [["p:2"]]  # between sweeps only the failure is asked about
    assert statuses["p:0"].phase is Phase.RUNNING
    assert statuses["p:1"].phase is Phase.DONE and statuses["p:1"].exit_code == 0
    usage = {
        "memory_peak": 200 << 20,
        "cpu_seconds": 2.0,
        "source": "cgroup, read by the job script",
    }
    assert statuses["p:1"].details["usage"] == usage
    # Batch's verdict, with the record's typed OOM (the cgroup's oom_kill) and usage
    failed = statuses["p:2"]
    assert failed.exit_code == 137 and failed.oom and failed.details["job_name"]
    assert failed.details["usage"]["memory_peak"] == 100 << 20
    assert statuses["j"].phase is Phase.QUEUED


def test_batch_is_asked_about_silent_children_when_it_counts_more_finished(monkeypatch, tmp_path):
    """A child that ended without writing its exit status (host lost, container never started)
    shows in the array's counts; then every silent child is asked about."""
    engine = _engine(monkeypatch)
    summary = {"SUCCEEDED": 1, "FAILED": 1, "RUNNING": 1}
    answers = {
        "p": {"jobId": "p", "arrayProperties": {"size": 3, "statusSummary": summary}},
        "p:1": _job("FAILED", attempt_reason="Host EC2 (instance i-1) terminated.", jobId="p:1"),
        "p:2": _job("RUNNING", jobId="p:2"),
    }
    engine.batch = ScriptedBatch(answers)
    records = _records(tmp_path, ["p:0", "p:1", "p:2"])
    _write_exit(records[0], "exit_code=0\n")
    statuses = engine.fetch(records, True)
    assert engine.batch.asked == [["p"], ["p:1", "p:2"]]
    assert statuses["p:1"].interrupted and statuses["p:2"].phase is Phase.RUNNING
    engine.batch.asked.clear()
    engine.fetch(records, False)  # within describe_seconds (the tracker's sweep): the files only
    assert engine.batch.asked == []


NEVER = "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - no compute environment fits"


@pytest.mark.parametrize("where", ["parent", "head child", "every child"])
def test_a_reason_batch_gives_the_array_is_read_where_batch_puts_it(monkeypatch, tmp_path, where):
    """ "Jobs stuck in a RUNNABLE status": the job at the head of the queue carries the reason;
    for an array that may be the parent or any child (here the last), not the one sampled."""
    engine = _engine(monkeypatch)
    summary = {"RUNNABLE": 3}
    parent = {"jobId": "p", "status": "PENDING", "jobQueue": "arn:aws:batch:q/spot"}
    parent["arrayProperties"] = {"size": 3, "statusSummary": summary}
    answers = {"p": parent, **{f"p:{i}": _job("RUNNABLE", jobId=f"p:{i}") for i in range(3)}}
    if where == "parent":
        parent["statusReason"] = NEVER
    for i in {"head child": [2], "every child": [0, 1, 2]}.get(where, []):
        answers[f"p:{i}"]["statusReason"] = NEVER
    engine.batch = ScriptedBatch(answers, page=2)
    records = _records(tmp_path, ["p:0", "p:1", "p:2"])
    statuses = engine.fetch(records, True)
    for handle, status in statuses.items():
        assert status.phase is Phase.DONE and status.lingering  # the tracker terminates it
        assert status.error == f"AWS Batch cannot run job {handle} on queue spot: {NEVER}"
    assert engine.batch.asked == [["p"]]
    pages = [] if where == "parent" else [("p", "RUNNABLE", "0"), ("p", "RUNNABLE", "2")]
    assert engine.batch.listed == pages  # every page while none gave the reason


def test_an_array_waiting_for_capacity_keeps_waiting(monkeypatch, tmp_path):
    engine = _engine(monkeypatch)
    capacity = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Service cannot fulfill the capacity"
    parent = {"jobId": "p", "status": "PENDING", "arrayProperties": {"size": 2}}
    answers = {"p": parent, "p:0": _job("RUNNABLE", capacity, jobId="p:0")}
    answers["p:1"] = _job("RUNNABLE", jobId="p:1")
    engine.batch = ScriptedBatch(answers)
    records = _records(tmp_path, ["p:0", "p:1"])
    statuses = engine.fetch(records, True)
    assert statuses["p:0"].phase is Phase.QUEUED and statuses["p:0"].reason == capacity
    assert statuses["p:1"].phase is Phase.QUEUED and not statuses["p:1"].reason
    # nothing RUNNABLE by Batch's counts: no ListJobs
    parent["arrayProperties"]["statusSummary"] = {"PENDING": 2}
    engine.batch.listed.clear()
    engine.fetch(records, True)
    assert engine.batch.listed == []


# --- cancelling ----------------------------------------------------------------------------


@pytest.fixture
def cancelling(monkeypatch, tmp_path):
    """An engine whose Batch answers DescribeJobs from ``answers``, retrying at once, 3 times."""
    monkeypatch.setattr(awsbatch_engine, "CHILD_RETRY", 0)
    monkeypatch.setattr(awsbatch_engine, "CHILD_TRIES", 3)

    def start(answers, handles):
        engine = _engine(monkeypatch)
        engine.batch = ScriptedBatch(answers)
        return engine, _records(tmp_path, handles)

    return start


def test_a_whole_array_is_terminated_by_its_parent_in_one_call(cancelling, caplog):
    """p:0 finished before the Ctrl-C: the tracker says the others cover the array whole."""
    engine, records = cancelling({}, ["p:0", "p:1", "p:2", "j"])
    with caplog.at_level(logging.INFO):
        engine.cancel_many(records[1:], frozenset({"p"}), LOG)
    assert sorted(engine.batch.terminated) == ["j", "p"] and engine.batch.asked == []
    assert caplog.text.count('by: "p"') == 2


def test_one_child_is_terminated_by_its_id_once_batch_lists_it(cancelling):
    """Right after the parent's SubmitJob Batch may not list the child yet: it is asked about
    again until it is (the other children run on)."""
    engine, records = cancelling({"p": {"jobId": "p", "status": "PENDING"}}, ["p:0", "p:1"])
    batch, late = engine.batch, iter([False, True])

    def describe(ids):
        if next(late):
            batch.answers["p:1"] = _job("RUNNABLE", jobId="p:1")
        return batch.describe_jobs(ids)["jobs"]

    engine._describe = describe
    engine.cancel_many(records[1:], frozenset(), LOG)
    assert batch.asked == [["p:1", "p"], ["p:1", "p"]] and batch.terminated == ["p:1"]


@pytest.mark.parametrize("parent_state", ["PENDING", "FAILED"])
def test_a_child_never_listed_is_given_up(cancelling, parent_state, caplog):
    engine, records = cancelling({"p": {"jobId": "p", "status": parent_state}}, ["p:0", "p:1"])
    with caplog.at_level(logging.WARNING):
        engine.cancel_many(records[:1], frozenset(), LOG)
    assert engine.batch.terminated == []
    if parent_state == "FAILED":  # ended with its parent: nothing left to stop
        assert len(engine.batch.asked) == 1 and not caplog.records
    else:
        assert len(engine.batch.asked) == 3  # bounded
        assert "does not list the array child" in caplog.text


def _job_script(monkeypatch, tmp_path, script, env_file=None, visible=True):
    """The job's command, as translate makes it, run by /bin/sh with tmp_path as the shared
    filesystem (at the same path in the container), with a fake cgroup v2 directory."""
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.peak").write_text("209715200\n")
    (cgroup / "cpu.stat").write_text("usage_usec 2000000\n")
    (cgroup / "memory.events").write_text("oom 0\noom_kill 0\n")
    workdir, stdout = tmp_path / "work", tmp_path / "stdout.txt"
    workdir.mkdir()
    if visible:
        stdout.touch()
    settings = _settings(monkeypatch, host_path=str(tmp_path), mount_path=str(tmp_path))
    attempt = replace(
        _attempt(),
        argv=("/bin/sh", "-c", script),
        workdir=str(workdir),
        host_dir=str(tmp_path),
        stdout_path=str(stdout),
        stderr_path=str(tmp_path / "stderr.txt"),
    )
    env = {"PATH": os.environ["PATH"], CGROUP_VARIABLE: str(cgroup), "AWS_BATCH_CE_NAME": "ce"}
    argv = job_command(attempt, settings, env_file)
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    return done, tmp_path / "omnibio_exit.1"


@pytest.mark.parametrize("code", [0, 3])
def test_the_job_script_keeps_the_exit_record(monkeypatch, tmp_path, code):
    seen = tmp_path / "seen"
    script = f'cat ../omnibio_exit.1 >"{seen}"; echo oops >>../stderr.txt; pwd; exit {code}'
    done, record = _job_script(monkeypatch, tmp_path, script)
    assert done.returncode == code
    assert done.stdout == f"{tmp_path / 'work'}\n"  # in the working directory
    assert seen.read_text() == ""  # empty while the command runs
    assert ("oops" in done.stderr) == bool(code)  # a failure's stderr tail goes to the job log
    ended = ExitRecord(code, memory_peak=200 << 20, cpu_seconds=2.0)
    assert read_exit_record(str(record)) == (True, ended)
    assert read_exit_record(str(tmp_path / "none")) == (False, None)


def test_the_job_script_sources_the_env_file(monkeypatch, tmp_path):
    env_file = tmp_path / "awsbatch_env.1.sh"
    env_file.write_text("export INPUTS_JSON='{\"a\": 1}'\n")
    done, _record = _job_script(monkeypatch, tmp_path, 'echo "$INPUTS_JSON"', str(env_file))
    assert (done.returncode, done.stdout) == (0, '{"a": 1}\n')


def test_a_host_without_the_shared_filesystem_exits_97_and_says_where(monkeypatch, tmp_path):
    done, record = _job_script(monkeypatch, tmp_path, "true", visible=False)
    assert done.returncode == MISSING_FILESYSTEM_EXIT == 97
    assert done.stderr == (
        f"omnibio: {tmp_path}/stdout.txt is not visible on this host (compute environment ce); "
        f"check the shared filesystem host:{tmp_path} (every Batch host must mount it; "
        "[omnibio_awsbatch] host_path, mount_path)\n"
    )
    assert read_exit_record(str(record)) == (False, None)
