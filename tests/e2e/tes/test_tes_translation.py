"""How omnibio_tes translates a TaskAttempt into a TES task and TES states into a Status, with a
stub py-tes client (no server): the edge cases the end-to-end runs do not reach."""

import logging

import pytest
import tes
from WDL import Error
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.config import Settings
from miniwdl_omnibio.engines.base import Phase
from miniwdl_omnibio.engines.tes import (
    LAUNCHER_TAG,
    Credentials,
    TesEngine,
    Tracked,
    gigabytes,
    tes_inputs,
)
from miniwdl_omnibio.sharedfs import SharedFilesystem

LOG = logging.getLogger("test")
FS = SharedFilesystem(host_root="/host/shared", container_root="/shared", readonly_root="/ro")


class StubClient:
    """Answers get_task with a prepared task; records cancels."""

    timeout = 5
    token = user = password = None

    def __init__(self, task=None):
        self.task = task
        self.canceled = []

    def get_task(self, task_id, view="BASIC"):
        assert view == "FULL"
        return self.task

    def cancel_task(self, task_id):
        self.canceled.append(task_id)


def _engine(monkeypatch, client=None, info=None, **keys):
    for name in [n for n in __import__("os").environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    cfg = Loader(
        LOG,
        filenames=[],
        overrides={"omnibio_tes": {"url": "http://tes", "mount_path": "/shared", **keys}},
    )
    settings = Settings(cfg, "omnibio_tes")
    return TesEngine(
        client or StubClient(),
        "http://tes",
        Credentials(None, None, "-"),
        settings,
        FS,
        info or {},
        LOG,
    )


def _attempt(**runtime):
    return TaskAttempt(
        run_id="wf.call-x.2",
        call="call-x",
        workflow_run="wf",
        attempt=2,
        image="ubuntu:22.04",
        argv=("/bin/sh", "-c", "true"),
        workdir="/shared/wf/call-x/work",
        env={"TOOL_ID": "x"},
        mounts=(Mount("/host/shared", "/shared", False), Mount("/host/shared", "/ro", True)),
        resources=Resources(
            cpu=2,
            memory_reservation=1 << 30,
            memory_limit=3 << 30,
            gpu=0,
            disk=10**10,
            time_limit=None,
            max_interruptions=1,
        ),
        tags={"omnibio.run": "wf"},
        stdout_path="/host/shared/wf/call-x/stdout.txt",
        stderr_path="/host/shared/wf/call-x/stderr.txt",
        host_dir="/host/shared/wf/call-x",
        runtime=runtime,
    )


def test_task_document(monkeypatch):
    engine = _engine(
        monkeypatch,
        info={"tes_resources_backend_parameters": ["VmSize"]},
        backend_parameters='{"VmSize": "small", "spot": true}',
    )
    document = engine.task_document(
        _attempt(omnibio_backend_parameters={"vmsize": "large"}), LOG
    ).as_dict()
    assert document["name"] == "wf.call-x.2"
    assert document["executors"] == [
        {
            "image": "ubuntu:22.04",
            "command": ["/bin/sh", "-c", "true"],
            "workdir": "/shared/wf/call-x/work",
            "env": {"TOOL_ID": "x"},
        }
    ]
    assert document["inputs"] == [
        {
            "url": "file:///shared",
            "path": "/ro",
            "type": "DIRECTORY",
            "name": "omnibio-readonly-view",
            "description": "the shared filesystem, read-only, localized in place",
        }
    ]
    assert document["resources"] == {
        "cpu_cores": 2,
        "ram_gb": 3.222,
        "disk_gb": 10.0,
        "preemptible": True,
        "backend_parameters": {"VmSize": "small", "spot": "true", "vmsize": "large"},
        "backend_parameters_strict": False,
    }
    assert document["tags"] == {"omnibio.run": "wf", LAUNCHER_TAG: engine.launcher}


def test_strict_backend_parameters_refused_at_start_and_per_task(monkeypatch):
    with pytest.raises(Error.RuntimeError, match=r"\[omnibio_tes\] backend_parameters .*VmSize"):
        _engine(monkeypatch, backend_parameters='{"VmSize": "x"}', backend_parameters_strict="true")
    engine = _engine(monkeypatch, backend_parameters_strict="true")
    with pytest.raises(Error.RuntimeError, match="does not support backend_parameters gpu_type"):
        engine.task_document(_attempt(omnibio_backend_parameters={"gpu_type": "a100"}), LOG)


def test_mounts_and_sizes():
    assert tes_inputs((Mount("/host/shared", "/shared", False),), FS) == []
    with pytest.raises(Error.RuntimeError, match="only at \\[omnibio_tes\\] mount_path"):
        tes_inputs((Mount("/host/shared/wf", "/work", False),), FS)
    assert gigabytes(None) is None and gigabytes(1) == 0.001 and gigabytes(2 * 10**9) == 2.0


def _finished(state, exit_code=None, stderr=None, system_logs=None):
    executor_logs = (
        [tes.models.ExecutorLog(exit_code=exit_code, stderr=stderr)]
        if exit_code is not None or stderr
        else []
    )
    return tes.Task(
        id="t1", state=state, logs=[tes.models.TaskLog(logs=executor_logs, system_logs=system_logs)]
    )


@pytest.mark.parametrize(
    "task, canceled_by_us, expected",
    [
        (_finished("COMPLETE", 0), None, dict(exit_code=0)),
        (_finished("EXECUTOR_ERROR", 9, stderr="x" * 5000), None, dict(exit_code=9, tail=2000)),
        (
            _finished("EXECUTOR_ERROR", system_logs=["oom?"]),
            None,
            dict(error="EXECUTOR_ERROR without an exit code: oom?"),
        ),
        (
            _finished("SYSTEM_ERROR", system_logs=["disk full", "  worker   lost "]),
            None,
            dict(error="ended in SYSTEM_ERROR: disk full; worker lost"),
        ),
        (_finished("PREEMPTED", system_logs=["spot reclaimed"]), None, dict(interrupted=True)),
        (
            _finished("CANCELED", system_logs=["by admin"]),
            None,
            dict(error="the TES server canceled TES task t1 (wf.x.1); this run did not: by admin"),
        ),
        (_finished("CANCELED"), "time limit", dict(error="exceeded its time limit of 60 s")),
    ],
)
def test_finished_states(monkeypatch, task, canceled_by_us, expected):
    engine = _engine(monkeypatch, client=StubClient(task))
    track = Tracked("wf.x.1", "wf", 0.0, 60, canceled_by_us=canceled_by_us)
    status = engine._status("t1", track, task.state, 1.0)
    assert status.phase is Phase.DONE
    assert status.exit_code == expected.get("exit_code")
    assert status.interrupted is expected.get("interrupted", False)
    assert (expected["error"] in status.error) if "error" in expected else status.error is None
    if "tail" in expected:
        assert (
            len(status.details["tes_stderr_tail"]) == expected["tail"]
            and status.details["tes_state"] == "EXECUTOR_ERROR"
        )


def test_time_limit_counts_from_the_start_and_cancels_once(monkeypatch):
    client = StubClient()
    engine = _engine(monkeypatch, client=client)
    track = Tracked("wf.x.1", "wf", 0.0, 10)
    assert engine._status("t1", track, "QUEUED", 100.0).phase is Phase.QUEUED  # queued time is free
    assert engine._status("t1", track, "RUNNING", 105.0).phase is Phase.RUNNING
    assert (
        engine._status("t1", track, "RUNNING", 114.0).phase is Phase.RUNNING
        and client.canceled == []
    )
    engine._status("t1", track, "RUNNING", 116.0)
    engine._status("t1", track, "RUNNING", 117.0)
    assert client.canceled == ["t1"] and track.canceled_by_us == "time limit"
