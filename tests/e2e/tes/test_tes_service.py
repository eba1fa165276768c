"""omnibio_tes against servers that answer as real ones sometimes do: throttling without
Retry-After, the API at /v1 only, credentials. A lost create answer and cancellation at exit
run against every server profile in test_tes_profiles.py."""

import re
from datetime import datetime

import pytest

from tests.e2e.tes.runs import logs_of, run, run_tasks
from tests.e2e.tes.support import tes_config
from tests.emulators.tes_server import S3Access, TesServer

HELLO = """
version 1.1
task hello {
  command <<< echo hello >>>
  output { String out = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_throttling_without_retry_after_on_create_and_polls(tes_server, moto, rundir):
    tes_server.fault("create", 429, count=2)
    tes_server.fault("list:QUEUED", 429, count=3)  # the polls' lists
    before = {k: tes_server.count(k) for k in ("create", "fault:create", "fault:list:QUEUED")}
    done = run(tes_server, moto, rundir, HELLO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.outputs["hello.out"] == "hello"
    assert tes_server.count("fault:create") - before["fault:create"] == 2
    assert tes_server.count("fault:list:QUEUED") - before["fault:list:QUEUED"] == 3
    assert tes_server.count("create") - before["create"] == 3  # 2 refused, 1 accepted
    assert len(run_tasks(tes_server, done.dir)) == 1
    # no Retry-After: each pause doubles, and the next request waits it out
    assert _pauses(done.stderr, "TES task creation failed; retrying") == [1.0, 2.0]
    assert _pauses(done.stderr, "status poll failed; backing off") == [1.0, 2.0, 4.0]


def _pauses(stderr: str, message: str) -> list[float]:
    """The pauses announced by ``message`` lines, each checked against the time until the next
    such line (the retry it announced came no sooner)."""
    found = re.findall(rf"^(\S+ \S+) .*{re.escape(message)} :: .*seconds: ([0-9.]+)", stderr, re.M)
    times = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f") for stamp, _seconds in found]
    pauses = [float(seconds) for _stamp, seconds in found]
    for pause, before, after in zip(pauses[:-1], times[:-1], times[1:], strict=True):
        assert (after - before).total_seconds() >= pause - 0.01, (message, pause, before, after)
    return pauses


@pytest.mark.parametrize("base", ["/v1", "/custom/tes"])
def test_the_base_path_that_answered_is_used_for_every_call(moto, rundir, base):
    """TES on Azure routes /v1/...; a URL may also name the base path itself."""
    access = S3Access(moto.endpoint, "testing", "testing")
    with TesServer(s3=access, base_paths=(base,), workers=1) as server:
        url = server.url if base == "/v1" else server.url + base
        done = run(server, moto, rundir, HELLO, config=tes_config(url))
        assert done.returncode == 0, done.stderr[-3000:]
        assert len(run_tasks(server, done.dir)) == 1
    assert f'url: "{server.url}{base}"' in done.stderr


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_credentials_accepted_and_never_logged(moto, rundir, auth):
    secret = f"s3cr3t-{auth}-value"
    access = S3Access(moto.endpoint, "testing", "testing")
    if auth == "bearer":
        server_args, keys = {"token": secret}, {"token_env": "OMNIBIO_TEST_TES_SECRET"}
    else:
        server_args = {"user": "alice", "password": secret}
        keys = {"user": "alice", "password_env": "OMNIBIO_TEST_TES_SECRET"}
    with TesServer(s3=access, workers=1, **server_args) as server:
        done = run(server, moto, rundir, HELLO, env={"OMNIBIO_TEST_TES_SECRET": secret}, **keys)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.count("unauthorized") == 0
    logs = logs_of(done)
    assert f'auth: "{auth}"' in logs and secret not in logs


GPU_SCATTER = """
version 1.1
workflow gpus {
  scatter (i in range(2)) { call gpu { input: i } }
}
task gpu {
  input { Int i }
  command <<< echo ~{i} >>>
  runtime { docker: "ubuntu:22.04" gpu: true }
}
"""


def test_what_tes_cannot_honour_is_warned_once_per_run(tes_server, moto, rundir):
    """A request's notes (engines/base.Engine.translate): two tasks asking for a GPU, which TES
    1.1 has no resource for, run without one and the run says so once."""
    done = run(tes_server, moto, rundir, GPU_SCATTER)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("TES 1.1 has no GPU resource") == 1
    assert len(run_tasks(tes_server, done.dir)) == 2
