"""How omnibio_azurebatch translates a TaskAttempt into a Batch task, and what a listed task's
state means (no service needed: both are pure)."""

import dataclasses
import logging
import os
import shlex
from datetime import datetime, timedelta, timezone

import pytest
from azure.batch import models as batch_models
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.engines.azurebatch.engine import AzureBatchEngine
from miniwdl_omnibio.engines.azurebatch.pool import credential, node_size
from miniwdl_omnibio.engines.azurebatch.settings import AzureBatchSettings
from miniwdl_omnibio.engines.azurebatch.status import sighting, task_status
from miniwdl_omnibio.engines.azurebatch.translate import batch_id
from miniwdl_omnibio.engines.base import QUEUED, Phase, Status, Submitted
from miniwdl_omnibio.engines.jobscript import exit_record
from miniwdl_omnibio.trace import attempt_row

NODE_ROOT = "/mnt/batch/tasks/fsmounts/omnibio"
LOG = logging.getLogger("test")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _engine(monkeypatch, **values: str) -> AzureBatchEngine:
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    values = {"account_url": "https://acct.westeurope.batch.azure.com", "pool_id": "p", **values}
    for key, value in values.items():
        monkeypatch.setenv(f"MINIWDL__OMNIBIO_AZUREBATCH__{key.upper()}", value)
    pool = batch_models.BatchPool({"id": "p", "vmSize": "STANDARD_D4S_V3", "taskSlotsPerNode": 4})
    return AzureBatchEngine(
        None,  # type: ignore[arg-type]  # translation never calls the service
        AzureBatchSettings.load(Loader(LOG, filenames=[])),
        "acct",
        pool,
        {"cpu": 4, "mem_bytes": 16 << 30},
        LOG,
    )


def _attempt(time_limit: int | None = 60, gpu: int = 0) -> TaskAttempt:
    return TaskAttempt(
        run_id="run.call-x.1",
        call="call-x",
        workflow_run="run",
        attempt=1,
        image="omnibio/runtime:latest",
        argv=(
            "/bin/sh",
            "-c",
            "bash /shared/run/call-x/command >> '/shared/run/call-x/stdout.txt'",
        ),
        workdir="/shared/run/call-x/work",
        env={"TOOL_ID": "x", "INPUTS_JSON": '{"a": "b c"}'},
        mounts=(Mount("/host/share", "/shared", False), Mount("/host/share", "/mnt/ro", True)),
        resources=Resources(
            cpu=2,
            memory_reservation=1 << 30,
            memory_limit=2 << 30,
            gpu=gpu,
            disk=None,
            time_limit=time_limit,
            max_interruptions=1,
        ),
        tags={"omnibio.run": "run"},
        stdout_path="/host/share/run/call-x/stdout.txt",
        stderr_path="/host/share/run/call-x/stderr.txt",
        host_dir="/host/share/run/call-x",
    )


def _shared(monkeypatch, **values: str) -> AzureBatchEngine:
    return _engine(
        monkeypatch,
        mount_path="/shared",
        host_mount_path="/host/share",
        readonly_mount_path="/mnt/ro",
        node_mount_path=NODE_ROOT,
        **values,
    )


def test_attempt_becomes_a_container_task(monkeypatch):
    engine = _shared(monkeypatch)
    attempt = _attempt()
    task = engine.translate(attempt)
    assert task.id == "call-x-1" and task.display_name == "run.call-x.1"
    words = shlex.split(task.command_line)
    assert words[:2] == ["/bin/sh", "-c"] and words[4:] == list(attempt.argv)
    # the job script writes the exit record where the container sees the task's directory
    assert "EXIT=/shared/run/call-x/omnibio_exit.1\n" in words[2]
    options = shlex.split(task.container_settings.container_run_options)
    pairs = list(zip(options, options[1:], strict=False))
    assert ("-v", f"{NODE_ROOT}:/shared") in pairs and ("-v", f"{NODE_ROOT}:/mnt/ro:ro") in pairs
    assert ("--workdir", "/shared/run/call-x/work") in pairs and ("--cpus", "2") in pairs
    assert ("--memory", str(2 << 30)) in pairs and ("--memory-reservation", str(1 << 30)) in pairs
    assert ("--label", "omnibio.run=run") in pairs
    assert task.container_settings.working_directory == "containerImageDefault"
    assert {e.name: e.value for e in task.environment_settings} == dict(attempt.env)
    assert task.constraints.max_wall_clock_time == timedelta(seconds=60)
    assert task.constraints.max_task_retry_count == 0
    assert task.required_slots == 2  # 2 of the node's 4 vCPUs = 2 of its 4 slots
    assert engine.translate(attempt).as_dict() == task.as_dict()  # pure: same in, same out


def test_no_time_limit_means_no_max_wall_clock_time(monkeypatch):
    task = _shared(monkeypatch).translate(_attempt(time_limit=None))
    assert task.constraints.max_wall_clock_time is None


def test_extra_run_options_are_appended(monkeypatch):
    engine = _shared(monkeypatch, container_run_options="--shm-size 1g")
    options = shlex.split(engine.translate(_attempt()).container_settings.container_run_options)
    assert options[-2:] == ["--shm-size", "1g"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("call-align-3", "call-align-3"),
        ("call-sub/call-x-1", "call-sub-call-x-1"),
        ("a" * 70, None),
        ("call-Align-1", None),
    ],
)
def test_batch_ids(text, expected):
    result = batch_id(text)
    assert len(result) <= 64 and result.replace("-", "").replace("_", "").isalnum()
    if expected:
        assert result == expected
    else:  # shortened or case-marked: a hash keeps distinct texts distinct
        assert result != batch_id(text.lower() + "x")


def test_ids_differing_only_by_case_stay_distinct_case_insensitively():
    assert batch_id("call-Align-1").lower() != batch_id("call-align-1").lower()


def test_node_size_from_vm_size():
    assert node_size("Standard_D4s_v3") == (4, 16 << 30)
    assert node_size("STANDARD_E16DS_V5") == (16, 128 << 30)
    assert node_size("Standard_F72s_v2") == (72, 144 << 30)
    assert node_size("custom") is None


@pytest.mark.parametrize(
    "key, problem",
    [
        ("", "AZURE_BATCH_ACCOUNT_KEY (the account's shared key) is not set"),
        ("not base64!", "AZURE_BATCH_ACCOUNT_KEY does not hold a base64 Batch account key"),
    ],
)
def test_a_missing_or_malformed_shared_key_is_one_line(monkeypatch, key, problem):
    settings = _shared(monkeypatch).settings
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT_KEY", key)
    with pytest.raises(Exception, match="account_key_env") as raised:
        credential(settings)
    assert str(raised.value).endswith(f"environment variable {problem}")
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT_KEY", "a2V5")
    assert credential(settings)[0] == "acct"


# --- the status mapping -------------------------------------------------------------------


def _task(state, node=None, start=None, requeues=0, **execution):
    info = {"requeueCount": requeues, "retryCount": 0, **execution}
    if start:
        info["startTime"] = start.isoformat()
    doc = {"id": "call-x-1", "state": state, "executionInfo": info}
    if node:
        doc["nodeInfo"] = {"nodeId": node}
    return batch_models.BatchTask(doc)


def _seen(node, start):
    """The running Status of a task a listing showed started on ``node`` at ``start``."""
    return Status(Phase.RUNNING, details={"batch_node": node, "batch_started": start.isoformat()})


def _status(task, before=QUEUED, cancelled=False, time_limit=60):
    record = Submitted("x", _attempt(time_limit), LOG, 0.0, status=before, cancelled=cancelled)
    return task_status(task, record, "job")


def test_states_map_to_phases():
    assert _status(_task("active")).phase is Phase.QUEUED
    assert _status(_task("preparing", "n1")).phase is Phase.RUNNING
    assert _status(_task("running", "n1", T0)).phase is Phase.RUNNING
    done = _status(
        _task("completed", "n1", T0, exitCode=3, endTime=(T0 + timedelta(seconds=2)).isoformat())
    )
    assert done.phase is Phase.DONE and done.exit_code == 3 and not done.timed_out
    assert done.details == {"batch_job": "job", "batch_task": "call-x-1", "batch_node": "n1"}


@pytest.mark.parametrize(
    "before, task",
    [
        (QUEUED, _task("running", "n1", T0, requeues=1)),  # requeueCount counts it
        (_seen("n1", T0), _task("active")),  # back in the queue, uncounted
        (_seen("n1", T0), _task("running", "n2", T0 + timedelta(seconds=30))),  # another node
        (_seen("n1", T0), _task("running", "n1", T0 + timedelta(seconds=30))),  # restarted
    ],
)
def test_a_rerun_is_an_interruption_the_tracker_terminates(before, task):
    status = _status(task, before)
    assert status.phase is Phase.DONE and status.interrupted and status.lingering
    assert "Azure Batch" in status.reason


def test_the_same_run_seen_again_is_no_rerun():
    before = Status(Phase.RUNNING, details=sighting(_task("preparing", "n1")))
    assert _status(_task("running", "n1", T0), before).phase is Phase.RUNNING
    assert _status(_task("running", "n1", T0), _seen("n1", T0)).phase is Phase.RUNNING
    # the sighting rides in the running Status, which the tracker keeps in its record
    assert _status(_task("running", "n1", T0)) == _seen("n1", T0)


def test_a_rerun_that_completed_is_the_result():
    task = _task("completed", "n2", T0, requeues=1, exitCode=0, endTime=T0.isoformat())
    status = _status(task, _seen("n1", T0 - timedelta(seconds=60)))
    assert status.phase is Phase.DONE and status.exit_code == 0 and not status.interrupted


def _ended(seconds, code="TaskEnded", exit_code=137):
    exit_codes = {} if exit_code is None else {"exitCode": exit_code}
    return _task(
        "completed",
        "n1",
        T0,
        endTime=(T0 + timedelta(seconds=seconds)).isoformat(),
        failureInfo={"category": "UserError", "code": code, "message": "ended"},
        **exit_codes,
    )


def test_max_wall_clock_time_is_a_time_limit_under_any_failure_code():
    for code in ("TaskEnded", "FailureExitCode", "SomethingUndocumented"):
        assert _status(_ended(60, code)).timed_out
    # the spec: a task the service terminated "may" show an exit code; without one, still so
    assert _status(_ended(60, exit_code=None)).timed_out
    assert not _status(_ended(60), cancelled=True).timed_out  # this process ended it
    assert not _status(_ended(5)).timed_out  # ended early: by someone, not by the limit
    assert not _status(_ended(60), time_limit=None).timed_out


def test_a_task_that_never_ran_is_one_line_naming_the_image():
    task = _task(
        "completed",
        failureInfo={
            "category": "UserError",
            "code": "ContainerInvalidImage",
            "message": "One or more container images specified are invalid",
            "details": [{"name": "Message", "value": "pull access denied"}],
        },
    )
    status = _status(task)
    assert status.phase is Phase.DONE and status.error
    assert "image omnibio/runtime:latest" in status.error and "pull access denied" in status.error


def test_tasks_run_as_the_pool_admin_auto_user_unless_opted_out(monkeypatch):
    task = _shared(monkeypatch).translate(_attempt())
    assert task.user_identity.as_dict() == {
        "autoUser": {"scope": "pool", "elevationLevel": "admin"}
    }
    task = _shared(monkeypatch, auto_user_admin="false").translate(_attempt())
    assert task.user_identity is None  # Batch's default: the non-admin auto-user


def test_the_image_entrypoint_is_cleared_and_gpus_are_left_to_batch(monkeypatch):
    engine = _shared(monkeypatch)
    engine.pool = batch_models.BatchPool({"id": "gpus", "vmSize": "Standard_NC6s_v3"})
    options = shlex.split(
        engine.translate(_attempt(gpu=1)).container_settings.container_run_options
    )
    assert options[0] == "--entrypoint=" and "--gpus" not in options


def test_a_gpu_task_on_a_pool_without_gpus_is_one_line(monkeypatch):
    with pytest.raises(Exception) as raised:
        _shared(monkeypatch).translate(_attempt(gpu=1))
    message = str(raised.value)
    assert "pool p" in message and "STANDARD_D4S_V3" in message and "\n" not in message


# --- fetch: the exit records first, Batch when they cannot tell ---------------------------------


class _Listings:
    """A client whose list_tasks answers with ``tasks`` and keeps the filters it was given."""

    def __init__(self) -> None:
        self.filters: list[str | None] = []
        self.tasks: list[batch_models.BatchTask] = []

    @property
    def calls(self) -> int:
        return len(self.filters)

    def list_tasks(self, job_id, filter=None, select=None):
        self.filters.append(filter)
        return list(self.tasks)


def _polling(monkeypatch, tmp_path, handles=("call-x-1",)):
    """An engine with a submitted task per handle (host dir under tmp_path), created at T0 by the
    service's clock, and a counting client."""
    engine = _shared(monkeypatch)
    engine.client = _Listings()  # type: ignore[assignment]
    engine.job_id = "job"
    records = []
    for handle in handles:
        host_dir = tmp_path / handle
        host_dir.mkdir()
        attempt = dataclasses.replace(_attempt(), host_dir=str(host_dir))
        task = batch_models.BatchTaskCreateOptions(id=handle, command_line="true")
        records.append(Submitted(handle, attempt, LOG, 0.0, task, memo=T0))
    return engine, records


def _poll(engine, records, full):
    """One fetch, its statuses kept in the records as the tracker keeps them."""
    statuses = engine.fetch(records, full)
    for record in records:
        record.status = statuses[record.handle]
    return statuses


def _write(record, text):
    with open(exit_record(record.attempt.host_dir, 1), "w") as outfile:
        outfile.write(text)


def test_exit_0_in_the_record_ends_the_attempt_without_a_listing(monkeypatch, tmp_path):
    engine, records = _polling(monkeypatch, tmp_path, ("a-1", "b-1"))
    assert _poll(engine, records, True) == {"a-1": QUEUED, "b-1": QUEUED}
    assert engine.client.calls == 1  # a full round lists: nothing is known yet
    _write(records[0], "")  # a-1 runs
    _write(records[1], "exit_code=0\nmemory_peak=209715200\ncpu_usec=1500000\noom=false\n")
    statuses = _poll(engine, records, False)
    assert engine.client.calls == 1  # neither needed Batch
    assert statuses["a-1"].phase is Phase.RUNNING
    done = statuses["b-1"]
    assert done.phase is Phase.DONE and done.exit_code == 0 and not done.oom
    assert done.details["usage"] == {
        "memory_peak": 209715200,
        "cpu_seconds": 1.5,
        "source": "cgroup, read by the job script",
    }
    assert done.details["batch_task"] == "b-1" and done.details["batch_job"] == "job"
    engine.fetch(records[1:], True)
    assert engine.client.calls == 1  # exit status 0 is final: not even a full round asks


def test_another_exit_is_asked_of_batch_until_it_lists_the_task_completed(monkeypatch, tmp_path):
    engine, records = _polling(monkeypatch, tmp_path)
    _poll(engine, records, True)
    _write(records[0], "exit_code=137\nmemory_peak=300\noom=true\n")
    engine.client.tasks = [_task("running", "n1", T0)]  # Batch has not seen it end yet
    assert _poll(engine, records, False)["call-x-1"].phase is Phase.RUNNING
    assert engine.client.calls == 2
    engine.client.tasks = [
        _task("completed", "n1", T0, exitCode=137, endTime=(T0 + timedelta(seconds=2)).isoformat())
    ]
    status = _poll(engine, records, False)["call-x-1"]
    assert engine.client.calls == 3
    assert status.phase is Phase.DONE and status.exit_code == 137
    assert status.oom  # Batch says nothing of memory: the record's oom_kill does
    assert status.details["batch_node"] == "n1" and status.details["usage"]["memory_peak"] == 300


def test_silent_records_are_listed_in_full_rounds_only(monkeypatch, tmp_path):
    """A task that never starts, or whose container is killed (time limit, preemption, lost
    node), leaves its record absent or empty: Batch's listing says what happened."""
    engine, records = _polling(monkeypatch, tmp_path)
    _poll(engine, records, True)
    for _ in range(5):
        _poll(engine, records, False)
    assert engine.client.calls == 1  # the rounds between two full ones read the records only
    _write(records[0], "")
    engine.client.tasks = [_ended(60)]  # killed at maxWallClockTime: the record stays empty
    status = _poll(engine, records, True)["call-x-1"]
    assert engine.client.calls == 2
    assert status.phase is Phase.DONE and status.timed_out and "usage" not in status.details


def test_a_cancelled_attempt_is_asked_of_batch_at_each_poll(monkeypatch, tmp_path):
    engine, records = _polling(monkeypatch, tmp_path)
    _poll(engine, records, True)
    records[0].cancelled = True
    _poll(engine, records, False)
    assert engine.client.calls == 2


def test_a_rerun_is_still_batch_s_word(monkeypatch, tmp_path):
    """Preemption requeues the task: its record (rewritten empty by the rerun) cannot say so."""
    engine, records = _polling(monkeypatch, tmp_path)
    _write(records[0], "")
    engine.client.tasks = [_task("running", "n1", T0)]
    assert _poll(engine, records, True)["call-x-1"].phase is Phase.RUNNING
    assert _poll(engine, records, False)["call-x-1"].details["batch_node"] == "n1"  # kept
    engine.client.tasks = [_task("running", "n2", T0 + timedelta(seconds=40))]
    status = _poll(engine, records, True)["call-x-1"]
    assert status.interrupted and engine.client.calls == 2


def test_a_listing_reaches_back_to_the_oldest_creation_it_must_cover(monkeypatch, tmp_path):
    """No memory of earlier listings: a task entered its present state at or after its
    creation, so the tasks changed since the oldest asked one was created hold them all."""
    engine, records = _polling(monkeypatch, tmp_path, ("a-1", "b-1"))
    records[1].memo = T0 + timedelta(minutes=5)
    _poll(engine, records, True)
    assert engine.client.filters == ["stateTransitionTime ge datetime'2026-01-02T03:03:50.000Z'"]
    records[0].memo = None  # its creation time unknown (an earlier try had added it)
    _poll(engine, records, True)
    assert engine.client.filters[-1] is None  # the whole job


def test_the_trace_row_carries_the_measured_usage(monkeypatch, tmp_path):
    engine, records = _polling(monkeypatch, tmp_path)
    _write(records[0], "exit_code=0\nmemory_peak=5000\ncpu_usec=250000\n")
    status = engine.fetch(records, False)["call-x-1"]
    times = (0.0, 1.0, 2.0)
    row = attempt_row(
        records[0].attempt,
        task="x",
        backend="omnibio_azurebatch",
        handle="call-x-1",
        times=times,
        status=status,
        end="ok",
        reason=None,
        verified=None,
    )
    assert (row["peak_memory"], row["cpu_seconds"]) == (5000, 0.25)
    assert row["usage"] == "cgroup, read by the job script"
