"""How omnibio_azurebatch translates a TaskAttempt into a Batch task (no service needed)."""

import logging
import os
import shlex
from datetime import timedelta

import pytest
from azure.batch import models as batch_models
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.config import Settings
from miniwdl_omnibio.engines.azurebatch import AzureBatchEngine, batch_id, node_size
from miniwdl_omnibio.sharedfs import SharedFilesystem

NODE_ROOT = "/mnt/batch/tasks/fsmounts/omnibio"


def _engine(monkeypatch, **values: str) -> AzureBatchEngine:
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    for key, value in values.items():
        monkeypatch.setenv(f"MINIWDL__OMNIBIO_AZUREBATCH__{key.upper()}", value)
    settings = Settings(Loader(logging.getLogger("test"), filenames=[]), "omnibio_azurebatch")
    pool = batch_models.BatchPool({"id": "p", "vmSize": "STANDARD_D4S_V3", "taskSlotsPerNode": 4})
    return AzureBatchEngine(
        None,
        settings,
        "acct",
        pool,
        SharedFilesystem.from_settings(settings),
        NODE_ROOT,  # type: ignore[arg-type]
        {"cpu": 4, "mem_bytes": 16 << 30},
        logging.getLogger("test"),
    )


def test_attempt_becomes_a_container_task(monkeypatch):
    engine = _engine(
        monkeypatch,
        mount_path="/shared",
        host_mount_path="/host/share",
        readonly_mount_path="/mnt/ro",
    )
    attempt = TaskAttempt(
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
            gpu=0,
            disk=None,
            time_limit=60,
            max_interruptions=1,
        ),
        tags={"omnibio.run": "run"},
        stdout_path="/host/share/run/call-x/stdout.txt",
        stderr_path="/host/share/run/call-x/stderr.txt",
        host_dir="/host/share/run/call-x",
    )
    task = engine.task_options(attempt)
    assert task.id == "call-x-1" and task.display_name == "run.call-x.1"
    words = shlex.split(task.command_line)
    assert words[:2] == ["/bin/sh", "-c"] and words[4:] == list(
        attempt.argv
    )  # argv after the filesystem check
    assert "[ -e /shared/run/call-x/stdout.txt ]" in words[2]
    options = shlex.split(task.container_settings.container_run_options)
    pairs = list(zip(options, options[1:], strict=False))
    assert ("-v", f"{NODE_ROOT}:/shared") in pairs and ("-v", f"{NODE_ROOT}:/mnt/ro:ro") in pairs
    assert ("--workdir", "/shared/run/call-x/work") in pairs and ("--cpus", "2") in pairs
    assert ("--memory", str(2 << 30)) in pairs and ("--memory-reservation", str(1 << 30)) in pairs
    assert ("--label", "omnibio.run=run") in pairs
    assert task.container_settings.working_directory == "containerImageDefault"
    assert {e.name: e.value for e in task.environment_settings} == dict(attempt.env)
    assert (
        task.constraints.max_wall_clock_time == timedelta(seconds=60)
        and task.constraints.max_task_retry_count == 0
    )
    assert task.required_slots == 2  # 2 of the node's 4 vCPUs = 2 of its 4 slots


def test_extra_run_options_are_appended(monkeypatch):
    engine = _engine(monkeypatch, mount_path="/shared", container_run_options="--shm-size 1g")
    assert engine.extra_run_options == ["--shm-size", "1g"]


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


def test_node_size_from_vm_size():
    assert node_size("Standard_D4s_v3") == (4, 16 << 30)
    assert node_size("STANDARD_E16DS_V5") == (16, 128 << 30)
    assert node_size("Standard_F72s_v2") == (72, 144 << 30)
    assert node_size("custom") is None
