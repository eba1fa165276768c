"""How omnibio_docker translates a TaskAttempt into a container (stub API: GPUs are not here)."""

import dataclasses
import logging
import os
import re
import subprocess
import threading
import types

import docker
import pytest
from WDL import Error
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.engines.base import Phase
from miniwdl_omnibio.engines.docker.engine import DockerEngine, DockerSettings, _event_time
from miniwdl_omnibio.engines.docker.status import USAGE_SOURCE
from miniwdl_omnibio.engines.docker.translate import LAUNCHER_LABEL, RECORD_DIR
from miniwdl_omnibio.engines.jobscript import read_exit_record


class RecordingApi:
    """Records create_container/create_host_config calls; the real API client builds the config."""

    def __init__(self):
        self.real = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
        self.created = None

    def create_host_config(self, **kwargs):
        return self.real.create_host_config(**kwargs)

    def inspect_image(self, tag):
        return {"Id": "sha256:abc", "RepoDigests": []}

    def create_container(self, image, command, **kwargs):
        self.created = dict(image=image, command=command, **kwargs)
        return {"Id": "c0ffee"}

    def start(self, handle):
        pass


def _engine(api, monkeypatch):
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    cfg = Loader(logging.getLogger("test"), filenames=[])
    client = types.SimpleNamespace(api=api)
    settings = dataclasses.replace(DockerSettings.load(cfg), network="none")
    return DockerEngine(client, settings, {"cpu": 2, "mem_bytes": 4 << 30})


def _attempt(host_dir: str) -> TaskAttempt:
    return TaskAttempt(
        run_id="run.call-x.1",
        call="call-x",
        workflow_run="run",
        attempt=1,
        image="ubuntu:22.04",
        argv=("/bin/sh", "-c", "true"),
        workdir="/mnt/c/work",
        env={"TOOL_ID": "x"},
        mounts=(
            Mount("/data/in.txt", "/mnt/c/work/_miniwdl_inputs/0/in.txt", True),
            Mount("/runs/w", "/mnt/c/work", False),
        ),
        resources=Resources(
            cpu=2,
            memory_reservation=1 << 30,
            memory_limit=2 << 30,
            gpu=1,
            disk=None,
            time_limit=60,
            max_interruptions=0,
        ),
        tags={"omnibio.run": "run"},
        stdout_path=f"{host_dir}/stdout.txt",
        stderr_path=f"{host_dir}/stderr.txt",
        host_dir=host_dir,
        user="1000:1000",
    )


def test_translation(monkeypatch, tmp_path):
    api = RecordingApi()
    attempt = _attempt(str(tmp_path))
    engine = _engine(api, monkeypatch)
    request = engine.translate(attempt)
    assert request == engine.translate(attempt)  # pure: the same attempt, the same request
    assert api.created is None  # ... and no call to the daemon
    accepted = engine.submit(request, logging.getLogger("test"))
    assert accepted.handle == "c0ffee" and accepted.memo == "sha256:abc"  # the image it runs
    created = api.created
    host = created["host_config"]
    # the task's argv, run by the job script that writes the exit record (see below)
    assert created["command"][:2] == ["/bin/sh", "-c"]
    assert created["command"][3:] == ["omnibio", "/bin/sh", "-c", "true"]
    assert created["working_dir"] == "/mnt/c/work"
    assert created["environment"] == {"TOOL_ID": "x"} and created["user"] == "1000:1000"
    assert created["labels"] == {"omnibio.run": "run", LAUNCHER_LABEL: engine.launcher}
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in host["Mounts"]] == [
        ("/data/in.txt", "/mnt/c/work/_miniwdl_inputs/0/in.txt", True),
        ("/runs/w", "/mnt/c/work", False),
        (str(tmp_path / RECORD_DIR), f"/mnt/c/{RECORD_DIR}", False),
    ]
    assert os.stat(tmp_path / RECORD_DIR).st_mode & 0o777 == 0o770  # for the image's user too
    assert (
        host["NanoCpus"] == 2_000_000_000
        and host["Memory"] == 2 << 30
        and host["MemoryReservation"] == 1 << 30
    )
    assert host["DeviceRequests"] == [
        {"Driver": "", "Count": 1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert host["NetworkMode"] == "none"


class StateApi(RecordingApi):
    """Answers as dockerd just after a die event: the listing still says running, an inspect
    (which waits for the exit to be handled) says exited."""

    def __init__(self, listed, inspected):
        super().__init__()
        self.listed, self.inspected = listed, inspected
        self.calls = []

    def containers(self, **kwargs):
        self.calls.append("list")
        return [{"Id": h, "State": state} for h, state in self.listed.items()]

    def inspect_container(self, handle):
        self.calls.append("inspect")
        if handle not in self.inspected:
            raise docker.errors.NotFound("gone")
        return {"State": self.inspected[handle]}


def _records(engine, handles, host_dir="/nonexistent"):
    """The tracker's records, the image id the container runs as the engine's memo."""
    attempt = _attempt(host_dir)
    request = engine.translate(attempt)
    return [
        types.SimpleNamespace(handle=h, attempt=attempt, request=request, memo=f"sha256:{h}")
        for h in handles
    ]


class SandboxApi(RecordingApi):
    """A daemon whose containers run until ``kill``; one joining a container that does not run
    fails to start, as dockerd's "cannot join network of a non running container"."""

    def __init__(self):
        super().__init__()
        self.running, self.calls = set(), []

    def create_container(self, image, command, **kwargs):
        handle = f"c{sum(call == 'create' for call, _h, _m in self.calls)}"
        self.calls.append(("create", handle, kwargs["host_config"]["NetworkMode"]))
        return {"Id": handle}

    def start(self, handle):
        mode = next(m for call, h, m in self.calls if h == handle)
        if mode.startswith("container:") and mode[len("container:") :] not in self.running:
            raise docker.errors.APIError("cannot join network of a non running container")
        self.running.add(handle)

    def inspect_container(self, handle):
        self.calls.append(("inspect", handle, ""))
        return {"State": {"Running": handle in self.running}}

    def remove_container(self, handle, force=False):
        self.calls.append(("remove", handle, ""))
        self.running.discard(handle)


def _sandboxed(monkeypatch):
    api = SandboxApi()
    engine = _engine(api, monkeypatch)
    engine.settings = dataclasses.replace(engine.settings, network="sandbox")
    return api, engine


def test_tasks_join_one_sandbox_without_a_look_at_it_each(monkeypatch, tmp_path):
    api, engine = _sandboxed(monkeypatch)
    request = engine.translate(_attempt(str(tmp_path)))
    for _ in range(3):
        engine.submit(request, logging.getLogger("test"))
    creates = [(h, m) for call, h, m in api.calls if call == "create"]
    assert creates == [("c0", "bridge")] + [(h, "container:c0") for h in ("c1", "c2", "c3")]
    assert not [call for call in api.calls if call[0] == "inspect"]


def test_a_task_that_cannot_join_a_dead_sandbox_makes_a_new_one(monkeypatch, tmp_path):
    api, engine = _sandboxed(monkeypatch)
    request = engine.translate(_attempt(str(tmp_path)))
    engine.submit(request, logging.getLogger("test"))  # sandbox c0, task c1
    api.running.discard("c0")  # killed, or dockerd restarted
    assert engine.submit(request, logging.getLogger("test")).handle == "c4"
    assert api.calls[-6:] == [
        ("create", "c2", "container:c0"),
        ("remove", "c2", ""),  # it could not start: no container is left
        ("inspect", "c0", ""),  # the verdict: its sandbox no longer runs, so try again
        ("remove", "omnibio-sandbox-" + re.sub(r"[:/]", "-", engine.launcher), ""),
        ("create", "c3", "bridge"),
        ("create", "c4", "container:c3"),
    ]

    def fails(handle):
        raise docker.errors.APIError("could not select device driver")

    api.start = fails  # the sandbox, c3, runs: the verdict gives up at once
    with pytest.raises(Error.RuntimeError, match="could not start the container of ubuntu"):
        engine.submit(request, logging.getLogger("test"))
    assert api.calls[-3:] == [
        ("create", "c5", "container:c3"),
        ("remove", "c5", ""),
        ("inspect", "c3", ""),
    ]


def test_the_wrapped_command_keeps_its_exit_code_and_records_the_cgroup(monkeypatch, tmp_path):
    """The container's command, run here by sh with the record's directory mapped to tmp_path
    and a cgroup v2 directory of made-up figures (OMNIBIO_CGROUP)."""
    api = RecordingApi()
    attempt = dataclasses.replace(_attempt(str(tmp_path)), argv=("/bin/sh", "-c", "exit 3"))
    engine = _engine(api, monkeypatch)
    engine.submit(engine.translate(attempt), logging.getLogger("test"))
    command = [
        a.replace(f"/mnt/c/{RECORD_DIR}", str(tmp_path / RECORD_DIR))
        for a in api.created["command"]
    ]
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.peak").write_text("209715200\n")
    (cgroup / "cpu.stat").write_text("usage_usec 2100000\nuser_usec 2000000\n")
    (cgroup / "memory.events").write_text("oom 0\noom_kill 0\n")
    # written as root, the record goes to the launcher's user (miniwdl chmods the run dir), unless
    # the launcher is root itself
    handed_back = f'chown {os.geteuid()}:{os.getegid()} "$EXIT"' in command[2]
    assert handed_back == (os.geteuid() != 0)
    ran = subprocess.run(command, env={"OMNIBIO_CGROUP": str(cgroup)})
    assert ran.returncode == 3
    started, record = read_exit_record(str(tmp_path / RECORD_DIR / "omnibio_exit.1"))
    assert started and record is not None and record.exit_code == 3
    assert record.memory_peak == 200 << 20 and record.cpu_seconds == 2.1 and not record.oom


def test_an_exited_container_is_read_from_its_record_without_an_inspect(monkeypatch, tmp_path):
    (tmp_path / RECORD_DIR).mkdir()
    (tmp_path / RECORD_DIR / "omnibio_exit.1").write_text(
        "exit_code=137\nmemory_peak=104857600\ncpu_usec=500000\noom=true\n"
    )
    api = StateApi({"a": "exited", "b": "running"}, {})
    engine = _engine(api, monkeypatch)
    statuses = engine.fetch(_records(engine, ["a", "b"], str(tmp_path)), True)
    done = statuses["a"]
    assert done.exit_code == 137 and done.oom  # the command's code, the cgroup's oom_kill
    assert done.details["usage"] == {
        "memory_peak": 100 << 20,
        "cpu_seconds": 0.5,
        "source": USAGE_SOURCE,
    }
    assert statuses["b"].phase is Phase.RUNNING and not statuses["b"].details
    assert done.details["image_id"] == "sha256:a"  # the image it ran (the memo), for the trace
    assert api.calls == ["list"]


def test_a_die_event_is_answered_by_the_record_or_else_one_inspect(monkeypatch, tmp_path):
    """Not full: the tracker asks about the containers of die events, which ended though the
    listing may still say running; "a" has no record (its job script was killed)."""
    exited = {"Status": "exited", "ExitCode": 3, "OOMKilled": True}
    api = StateApi({"a": "running"}, {"a": exited})
    engine = _engine(api, monkeypatch)
    statuses = engine.fetch(_records(engine, ["a", "gone"], str(tmp_path)), False)
    assert statuses["a"].phase is Phase.DONE and statuses["a"].exit_code == 3
    assert statuses["a"].oom and statuses["a"].details == {"image_id": "sha256:a"}
    assert statuses["gone"].phase is Phase.DONE and "was removed" in statuses["gone"].error
    assert api.calls == ["inspect", "inspect"]


def test_a_full_round_is_one_listing(monkeypatch, tmp_path):
    handles = [f"c{i}" for i in range(10)]
    exited = {"Status": "exited", "ExitCode": 0}
    api = StateApi({h: "running" for h in handles[1:]} | {"c0": "exited"}, {"c0": exited})
    engine = _engine(api, monkeypatch)
    statuses = engine.fetch(_records(engine, handles + ["gone"], str(tmp_path)), True)
    assert api.calls == ["list", "inspect"]  # only the exited one without a record is inspected
    assert statuses["c0"].exit_code == 0 and statuses["c1"].phase is Phase.RUNNING
    assert "was removed" in statuses["gone"].error


def test_a_container_is_removed_in_the_background_and_shutdown_waits(monkeypatch):
    api, gate, removed = StateApi({}, {}), threading.Event(), []

    def remove_container(handle, force=False):
        gate.wait(10)
        removed.append(handle)

    api.remove_container = remove_container
    engine = _engine(api, monkeypatch)
    engine.release(_records(engine, ["a"])[0], logging.getLogger("test"))
    assert removed == []  # the task goes on meanwhile
    threading.Timer(0.2, gate.set).start()
    engine.shutdown(logging.getLogger("test"))
    assert removed == ["a"]


def test_the_daemons_clock_becomes_the_event_streams_since():
    assert _event_time("2026-12-06T20:13:29.986215354Z") == "1796588009.986215354"
    assert _event_time("2026-12-06T21:13:29.5+01:00") == "1796588009.500000000"
    assert _event_time("2026-12-06T20:13:29Z") == "1796588009.000000000"
    assert _event_time("") is None
