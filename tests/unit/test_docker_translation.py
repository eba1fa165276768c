"""How omnibio_docker translates a TaskAttempt into a container (stub API: GPUs are not here)."""

import dataclasses
import logging
import os
import types

import docker
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.config import Settings
from miniwdl_omnibio.engines.base import Phase
from miniwdl_omnibio.engines.docker import (
    INSPECT_AT_MOST,
    LAUNCHER_LABEL,
    DockerEngine,
    DockerSettings,
    _event_time,
)


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
    settings = Settings(Loader(logging.getLogger("test"), filenames=[]), "omnibio_docker")
    client = types.SimpleNamespace(api=api)
    settings = dataclasses.replace(DockerSettings.load(settings), network="none")
    return DockerEngine(client, settings, {"cpu": 2, "mem_bytes": 4 << 30})


def test_translation(monkeypatch):
    api = RecordingApi()
    attempt = TaskAttempt(
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
        stdout_path="/runs/stdout.txt",
        stderr_path="/runs/stderr.txt",
        host_dir="/runs",
        user="1000:1000",
    )
    engine = _engine(api, monkeypatch)
    request = engine.translate(attempt)
    assert request == engine.translate(attempt)  # pure: the same attempt, the same request
    assert api.created is None  # ... and no call to the daemon
    assert engine.submit(request, logging.getLogger("test")) == "c0ffee"
    created = api.created
    host = created["host_config"]
    assert (
        created["command"] == ["/bin/sh", "-c", "true"] and created["working_dir"] == "/mnt/c/work"
    )
    assert created["environment"] == {"TOOL_ID": "x"} and created["user"] == "1000:1000"
    assert created["labels"] == {"omnibio.run": "run", LAUNCHER_LABEL: engine.launcher}
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in host["Mounts"]] == [
        ("/data/in.txt", "/mnt/c/work/_miniwdl_inputs/0/in.txt", True),
        ("/runs/w", "/mnt/c/work", False),
    ]
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


def _records(handles):
    return [types.SimpleNamespace(handle=h) for h in handles]


def test_a_few_containers_are_inspected_since_the_listing_lags_the_die_event(monkeypatch):
    exited = {"Status": "exited", "ExitCode": 3, "OOMKilled": False}
    api = StateApi({"a": "running"}, {"a": exited})
    statuses = _engine(api, monkeypatch).fetch(_records(["a", "gone"]))
    assert statuses["a"].phase is Phase.DONE and statuses["a"].exit_code == 3
    assert statuses["gone"].phase is Phase.DONE and "was removed" in statuses["gone"].error
    assert "list" not in api.calls


def test_many_containers_are_answered_by_one_listing(monkeypatch):
    handles = [f"c{i}" for i in range(INSPECT_AT_MOST + 1)]
    exited = {"Status": "exited", "ExitCode": 0}
    api = StateApi({h: "running" for h in handles[1:]} | {"c0": "exited"}, {"c0": exited})
    statuses = _engine(api, monkeypatch).fetch(_records(handles + ["gone"]))
    assert api.calls == ["list", "inspect"]  # only the exited one is inspected
    assert statuses["c0"].exit_code == 0 and statuses["c1"].phase is Phase.RUNNING
    assert "was removed" in statuses["gone"].error


def test_the_daemons_clock_becomes_the_event_streams_since():
    assert _event_time("2026-12-06T20:13:29.986215354Z") == "1796588009.986215354"
    assert _event_time("2026-12-06T21:13:29.5+01:00") == "1796588009.500000000"
    assert _event_time("2026-12-06T20:13:29Z") == "1796588009.000000000"
    assert _event_time("") is None
