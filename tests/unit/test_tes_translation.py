"""How omnibio_tes translates a TaskAttempt into a TES task and a TES task into a Status: pure
functions, no server."""

import logging
import os

import pytest
from WDL import Error
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.engines.base import Phase
from miniwdl_omnibio.engines.tes.client import TesClient
from miniwdl_omnibio.engines.tes.engine import TesEngine
from miniwdl_omnibio.engines.tes.settings import TesSettings
from miniwdl_omnibio.engines.tes.status import task_status
from miniwdl_omnibio.engines.tes.translate import (
    LAUNCHER_TAG,
    gigabytes,
    merge_parameters,
)

LOG = logging.getLogger("test")


def _engine(monkeypatch, info=None, **keys):
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    cfg = Loader(
        LOG,
        filenames=[],
        overrides={
            "omnibio_tes": {
                "url": "http://tes",
                "mount_path": "/shared",
                "host_mount_path": "/host/shared",
                "readonly_mount_path": "/ro",
                **keys,
            }
        },
    )
    settings = TesSettings.load(cfg)
    client = TesClient(settings.url, settings.credentials, 5, 0)
    return TesEngine(settings, client, info or {})


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
        info={"tesResources_backend_parameters": ["VmSize"]},
        backend_parameters='{"VmSize": "small", "spot": true}',
    )
    attempt = _attempt(omnibio_backend_parameters={"vmsize": "large"})
    request = engine.translate(attempt)
    assert request == engine.translate(attempt)  # pure: the same attempt, the same request
    document = request.task.as_dict()
    assert document["name"] == "wf.call-x.2"
    assert document["executors"] == [
        {
            "image": "ubuntu:22.04",
            "command": ["/bin/sh", "-c", "true"],
            "workdir": "/shared/wf/call-x/work",
            "env": {"TOOL_ID": "x"},
        }
    ]
    assert "inputs" not in document  # the workers mount both views themselves
    # the runtime key replaces the config key of another case: never two keys differing by case
    assert document["resources"] == {
        "cpu_cores": 2,
        "ram_gb": 3.222,
        "disk_gb": 10.0,
        "preemptible": True,
        "backend_parameters": {"spot": "true", "vmsize": "large"},
        "backend_parameters_strict": False,
    }
    assert document["tags"] == {"omnibio.run": "wf", LAUNCHER_TAG: engine.launcher}
    assert request.notes == (
        "the TES server at http://tes does not support backend_parameters spot (its service-info lists: vmsize)",
    )


def test_merge_parameters_is_case_insensitive():
    assert merge_parameters({"VmSize": "a", "Other": "b"}, {"VMSIZE": "c"}) == {
        "Other": "b",
        "VMSIZE": "c",
    }


def test_strict_backend_parameters_refused_per_task(monkeypatch):
    engine = _engine(monkeypatch, backend_parameters_strict="true")
    with pytest.raises(Error.RuntimeError, match="does not support backend_parameters gpu_type"):
        engine.translate(_attempt(omnibio_backend_parameters={"gpu_type": "a100"}))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("url", "ftp://x", "is not an http:// or https:// URL"),
        ("url", "http://u:p@tes", "must not contain credentials"),
        ("page_size", "4096", "at most 2047"),
        ("backend_parameters", "[1]", "should be a JSON dict"),
        ("token_env", "OMNIBIO_UNSET_VARIABLE_X", "which is not set"),
        ("staging_uri", "s3://bucket/prefix", "set together with mount_path"),
    ],
)
def test_settings_errors_name_the_key(monkeypatch, key, value, message):
    with pytest.raises(Error.RuntimeError, match=message) as caught:
        _engine(monkeypatch, **{key: value})
    assert f"[omnibio_tes] {key}" in str(caught.value)


def test_sizes():
    assert gigabytes(None) is None and gigabytes(1) == 0.001 and gigabytes(2 * 10**9) == 2.0


def _finished(state, exit_code=None, stderr=None, system_logs=None, **extra):
    executor_logs = (
        [{"exit_code": exit_code, "stderr": stderr, "some_new_field": 1}]
        if exit_code is not None or stderr
        else []
    )
    return {
        "id": "t1",
        "name": "wf.x.1",
        "state": state,
        "logs": [{"logs": executor_logs, "system_logs": system_logs, "vendor": {"x": 1}}],
        **extra,
    }


@pytest.mark.parametrize(
    "task, cancelled, expected",
    [
        (_finished("COMPLETE", 0, unknown_field={"a": 1}), False, dict(exit_code=0)),
        (_finished("EXECUTOR_ERROR", 9, stderr="x" * 5000), False, dict(exit_code=9, tail=2000)),
        (
            _finished("EXECUTOR_ERROR", system_logs=["oom?"]),
            False,
            dict(error="EXECUTOR_ERROR without an exit code: oom?"),
        ),
        (
            _finished("SYSTEM_ERROR", system_logs=["disk full", "  worker   lost "]),
            False,
            dict(error="ended in SYSTEM_ERROR: disk full; worker lost"),
        ),
        (_finished("PREEMPTED", system_logs=["spot reclaimed"]), False, dict(interrupted=True)),
        (
            _finished("CANCELED", system_logs=["by admin"]),
            False,
            dict(error="the TES server canceled TES task t1 (wf.x.1); this run did not: by admin"),
        ),
        (_finished("CANCELED"), True, dict(error="TES task t1 (wf.x.1) was canceled")),
    ],
)
def test_finished_states(task, cancelled, expected):
    status = task_status(task, cancelled)
    assert status.phase is Phase.DONE
    assert status.exit_code == expected.get("exit_code")
    assert status.interrupted is expected.get("interrupted", False)
    assert (expected["error"] in status.error) if "error" in expected else status.error is None
    if "tail" in expected:
        assert len(status.details["tes_stderr_tail"]) == expected["tail"]
        assert status.details["tes_state"] == "EXECUTOR_ERROR"


def test_tesks_executor_log_gives_stderr_as_its_stdout():
    """TESK's FULL executor log has no stderr; the pod's log is its stdout."""
    task = _finished("EXECUTOR_ERROR", 3)
    task["logs"][0]["logs"][0].update(stdout="going down\n")
    assert task_status(task, False).details["tes_stderr_tail"] == "going down\n"


@pytest.mark.parametrize(
    "state, phase",
    [
        ("QUEUED", Phase.QUEUED),
        ("UNKNOWN", Phase.QUEUED),
        (None, Phase.QUEUED),
        ("INITIALIZING", Phase.RUNNING),
        ("RUNNING", Phase.RUNNING),
        ("PAUSED", Phase.RUNNING),
        ("CANCELING", Phase.RUNNING),
        ("running", Phase.RUNNING),
    ],
)
def test_waiting_and_running_states(state, phase):
    status = task_status({"id": "t1", "state": state}, False)
    assert status.phase is phase and status.exit_code is None


def test_tes_usage_is_the_executors_timings_only():
    """TES reports no memory or CPU: the trace names what it has, the executors' timings."""
    task = _finished("COMPLETE", 0)
    task["logs"][0]["logs"][0].update(
        start_time="2026-12-06T10:00:00Z", end_time="2026-12-06T10:00:12.5+00:00"
    )
    usage = task_status(task, False).details["usage"]
    assert usage == {"source": "TES executor timings only", "executor_seconds": 12.5}
    del task["logs"][0]["logs"][0]["end_time"]
    assert task_status(task, False).details["usage"] == {"source": "TES: no executor timings"}
