"""omnibio_tes end to end: real miniwdl runs against the fixture TES v1.1 server (HTTP on
127.0.0.1, executors on the local dockerd), with the run directory on a shared directory the
server's worker mounts at the same path."""

import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import tes

from tests.e2e.tes.support import READONLY_VIEW, tes_config
from tests.emulators.tes_server import TesServer
from tests.helpers import miniwdl_env, popen_miniwdl, run_miniwdl

ACTIVE = ("QUEUED", "INITIALIZING", "RUNNING", "CANCELING")


def _write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as outfile:
        outfile.write(text)
    return path


def _read(path):
    with open(path) as infile:
        return infile.read()


def _read_json(path):
    return json.loads(_read(path))


def _run(server, shared_dir, rundir, wdl_text, inputs=(), env=None, results=False, **tes_keys):
    wdl = _write(rundir, "test.wdl", wdl_text)
    config = tes_config(server.url, shared_dir, results, **tes_keys)
    return run_miniwdl(
        wdl, list(inputs), rundir, backend="omnibio_tes", config=config, env=env, timeout=180
    )


def _run_tasks(server, run_dir):
    """The fixture's tasks (FULL view) of one workflow run, oldest first."""
    name = os.path.basename(run_dir or "")
    return [t for t in server.tasks() if (t.get("tags") or {}).get("omnibio.run") == name]


def _error_line(run):
    """miniwdl's final error line: the one line a user reads."""
    lines = [line for line in run.stderr.splitlines() if "miniwdl-run ERROR" in line]
    assert lines, run.stderr[-3000:]
    return lines[-1]


SCATTER = r"""
version 1.1
workflow fan {
  input { Int n = 4 }
  scatter (i in range(n)) {
    call echo { input: i = i }
  }
  output { Array[File] results = echo.result }
}
task echo {
  input { Int i }
  command <<< sleep 2; python3 -m miniwdl_omnibio.runtime.echo_test >&2 >>>
  output { File result = "omnibio_result.json" }
  runtime {
    docker: "omnibio/runtime:latest"
    cpu: 1
    memory: "256 MiB"
    omnibio_backend_parameters: {"shm_size": "64m"}
  }
}
"""


def test_scatter_results_verified_and_polling_batched(tes_server, shared_dir, rundir):
    requests.post(f"{tes_server.url}/_fixture/counters:reset").raise_for_status()
    run = _run(tes_server, shared_dir, rundir, SCATTER, results=True, page_size="1")  # paged lists
    assert run.returncode == 0, run.stderr[-3000:]
    workflow_run = os.path.basename(run.dir)
    results = [_read_json(path) for path in run.outputs["fan.results"]]
    assert sorted(r["run_id"] for r in results) == [
        f"{workflow_run}.call-echo-{i}.1" for i in range(4)
    ]
    assert all(r["ok"] for r in results)
    for i in range(
        4
    ):  # written by the tool at RESULT_URI on the shared filesystem, read back by the plugin
        assert os.path.exists(
            os.path.join(shared_dir, "results", workflow_run, f"call-echo-{i}", "results.json")
        )

    tasks = _run_tasks(tes_server, run.dir)
    assert len(tasks) == 4 and {t["state"] for t in tasks} == {"COMPLETE"}
    task = tasks[0]
    assert task["name"].startswith(workflow_run + ".call-echo-")
    assert task["tags"]["omnibio.task"] == "echo" and "omnibio.launcher" in task["tags"]
    assert task["resources"]["cpu_cores"] == 1 and task["resources"]["ram_gb"] == pytest.approx(
        0.269
    )
    assert task["resources"]["backend_parameters"] == {"shm_size": "64m"}
    (executor,) = task["executors"]
    assert executor["image"] == "omnibio/runtime:latest" and executor["workdir"].endswith("/work")
    assert executor["env"]["RUN_ID"].startswith(workflow_run) and executor["env"][
        "RESULT_URI"
    ].startswith("file://")
    assert task["inputs"] == [
        {
            "url": f"file://{shared_dir}",
            "path": READONLY_VIEW,
            "type": "DIRECTORY",
            "name": "omnibio-readonly-view",
            "description": "the shared filesystem, read-only, localized in place",
        }
    ]

    counters = requests.get(f"{tes_server.url}/_fixture/counters").json()["counters"]
    # status comes from list calls; a task is fetched alone once, in FULL view, when it has finished
    assert counters.get("get:FULL") == 4, counters
    assert counters.get("get:MINIMAL", 0) == 0 and counters.get("get:BASIC", 0) == 0, counters
    assert counters["list"] >= 4, counters
    assert not tes_server.containers()


PROBE = r"""
version 1.1
task probe {
  input { File data }
  command <<<
    stat -L -c %i '~{data}' > inode.txt
    if echo overwrite >> '~{data}' 2> /dev/null; then echo writable; else echo read-only; fi > write.txt
    echo '~{data}' > target.txt
    exit 3
  >>>
  output {
    Int inode = read_int("inode.txt")
    String write = read_string("write.txt")
    String target = read_string("target.txt")
  }
  runtime { docker: "ubuntu:22.04" returnCodes: [0, 3] }
}
"""


def test_inputs_in_situ_read_only_and_return_codes(tes_server, shared_dir, rundir):
    data = _write(rundir, "data.txt", "precious\n")
    run = _run(tes_server, shared_dir, rundir, PROBE, [f"data={data}"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["probe.inode"] == os.stat(data).st_ino  # the same file, not a copy
    assert run.outputs["probe.write"] == "read-only"
    assert run.outputs["probe.target"] == READONLY_VIEW + data[len(shared_dir) :]
    assert _read(data) == "precious\n"
    (task,) = _run_tasks(tes_server, run.dir)
    assert (
        task["state"] == "EXECUTOR_ERROR" and task["logs"][-1]["logs"][-1]["exit_code"] == 3
    )  # accepted by returnCodes


def test_nonzero_exit_fails_with_the_exit_code(tes_server, shared_dir, rundir):
    wdl = 'version 1.1\ntask boom { command <<< echo going down >&2; exit 7 >>> runtime { docker: "ubuntu:22.04" } }\n'
    run = _run(tes_server, shared_dir, rundir, wdl)
    assert run.returncode != 0
    cause = run.error_json()["cause"]
    assert cause["error"] == "CommandFailed" and cause["exit_status"] == 7, cause
    assert (
        cause["engine"] == "omnibio_tes" and cause["tes_state"] == "EXECUTOR_ERROR"
    )  # the failure_info
    assert "going down" in _read(cause["stderr_file"])
    (task,) = _run_tasks(tes_server, run.dir)
    assert task["state"] == "EXECUTOR_ERROR"


WHERE = r"""
version 1.1
task where {
  input { File data }
  command <<<
    pwd > pwd.txt
    stat -L -c %i '~{data}' > inode.txt
    python3 -m miniwdl_omnibio.runtime.echo_test >&2
  >>>
  output { String pwd = read_string("pwd.txt") Int inode = read_int("inode.txt") File result = "omnibio_result.json" }
  runtime { docker: "omnibio/runtime:latest" }
}
"""


def test_workers_mount_the_shared_filesystem_elsewhere(shared_dir, rundir):
    """host_mount_path (this host) differs from mount_path (the workers): paths are translated."""
    with TesServer([f"{shared_dir}:/omnibio-shared"]) as server:
        data = _write(rundir, "data.txt", "x\n")
        run = _run(
            server,
            shared_dir,
            rundir,
            WHERE,
            [f"data={data}"],
            results=True,
            mount_path="/omnibio-shared",
            host_mount_path=shared_dir,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        (task,) = _run_tasks(server, run.dir)
    assert run.outputs["where.pwd"] == "/omnibio-shared" + run.dir[len(shared_dir) :] + "/work"
    assert run.outputs["where.inode"] == os.stat(data).st_ino
    assert task["inputs"][0]["url"] == "file:///omnibio-shared"
    assert task["executors"][0]["env"]["RESULT_URI"].startswith("file:///omnibio-shared/results/")
    with open(run.outputs["where.result"]) as infile:
        assert json.load(infile)["ok"] is True


def test_a_task_the_server_canceled_fails_saying_so(tes_server, shared_dir, rundir):
    wdl = 'version 1.1\ntask victim { command <<< sleep 120 >>> runtime { docker: "ubuntu:22.04" } }\n'
    proc = _start_miniwdl(tes_server, shared_dir, rundir, wdl)
    try:
        (task,) = _wait_for(lambda: _running_tasks_in(tes_server, rundir, 1), "the task to run")
        tes.HTTPClient(tes_server.url).cancel_task(task["id"])  # an operator, not this run
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert (
        f"the TES server canceled TES task {task['id']}"
        in [line for line in stderr.splitlines() if "miniwdl-run ERROR" in line][-1]
    )


PREEMPTIBLE = r"""
version 1.1
task nap {
  command <<< sleep 3; python3 -m miniwdl_omnibio.runtime.echo_test >&2 >>>
  output { File result = "omnibio_result.json" }
  runtime { docker: "omnibio/runtime:latest" preemptible: 1 }
}
"""


def _wait_for(condition, what, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _start_miniwdl(server, shared_dir, rundir, wdl_text, results=False, task_concurrency=None):
    wdl = _write(rundir, "test.wdl", wdl_text)
    config = tes_config(server.url, shared_dir, results)
    if task_concurrency:
        config["scheduler"] = {"task_concurrency": str(task_concurrency)}
    return popen_miniwdl(wdl, [], rundir, "omnibio_tes", config)


def _running_tasks_in(server, rundir, count):
    runs = [d for d in os.listdir(rundir) if d[:8].isdigit()]
    if not runs:
        return None
    tasks = [
        t for t in _run_tasks(server, os.path.join(rundir, runs[0])) if t["state"] == "RUNNING"
    ]
    return tasks if len(tasks) >= count else None


def test_preemption_is_retried(tes_server, shared_dir, rundir):
    proc = _start_miniwdl(tes_server, shared_dir, rundir, PREEMPTIBLE, results=True)
    try:
        (first,) = _wait_for(lambda: _running_tasks_in(tes_server, rundir, 1), "the task to run")
        requests.post(f"{tes_server.url}/_fixture/tasks/{first['id']}:preempt").raise_for_status()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    run_dir = json.loads(stdout)["dir"]
    tasks = _run_tasks(tes_server, run_dir)
    assert [t["state"] for t in tasks] == ["PREEMPTED", "COMPLETE"]
    assert [t["tags"]["omnibio.attempt"] for t in tasks] == ["1", "2"]
    assert "interrupted task will be retried" in stderr
    with open(json.loads(stdout)["outputs"]["nap.result"]) as infile:
        assert json.load(infile)["run_id"].endswith(".nap.2")


SLEEPY = r"""
version 1.1
workflow sleepy {
  scatter (i in range(3)) { call nap { input: i = i } }
}
task nap {
  input { Int i }
  command <<< sleep 300 >>>
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_sigint_cancels_every_task_of_the_run(tes_server, shared_dir, rundir):
    proc = _start_miniwdl(tes_server, shared_dir, rundir, SLEEPY, task_concurrency=3)
    try:
        _wait_for(lambda: _running_tasks_in(tes_server, rundir, 3), "three tasks to run")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    run_dir = os.path.join(rundir, next(d for d in os.listdir(rundir) if d[:8].isdigit()))
    tasks = _run_tasks(tes_server, run_dir)
    assert tasks and all(t["state"] not in ACTIVE for t in tasks), [t["state"] for t in tasks]
    assert {t["state"] for t in tasks} == {"CANCELED"}
    assert not tes_server.containers()


def test_time_limit_cancels_the_task(tes_server, shared_dir, rundir):
    wdl = 'version 1.1\ntask slow { command <<< sleep 120 >>> runtime { docker: "ubuntu:22.04" omnibio_time_limit: "2s" } }\n'
    started = time.time()
    run = _run(tes_server, shared_dir, rundir, wdl)
    assert run.returncode != 0 and time.time() - started < 60
    assert "exceeded its time limit of 2 s" in _error_line(run)
    (task,) = _run_tasks(tes_server, run.dir)
    assert task["state"] == "CANCELED"
    assert not tes_server.containers()


HELLO = 'version 1.1\ntask hello { command <<< echo hello >>> output { String out = read_string(stdout()) } runtime { docker: "ubuntu:22.04" } }\n'


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_credentials_accepted_and_never_logged(shared_dir, rundir, auth):
    secret = f"s3cr3t-{auth}-value"
    if auth == "bearer":
        server_args, keys, env = (
            {"token": secret},
            {"token_env": "OMNIBIO_TEST_TES_TOKEN"},
            {"OMNIBIO_TEST_TES_TOKEN": secret},
        )
    else:
        server_args, keys = (
            {"user": "alice", "password": secret},
            {"user": "alice", "password_env": "OMNIBIO_TEST_TES_PASSWORD"},
        )
        env = {"OMNIBIO_TEST_TES_PASSWORD": secret}
    with TesServer([shared_dir], **server_args) as server:
        run = _run(server, shared_dir, rundir, HELLO, env=env, **keys)
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.outputs["hello.out"] == "hello"
        assert server.count("unauthorized") == 0
    logs = run.stderr + "".join(
        _read(os.path.join(d, f)) for d, _, fs in os.walk(run.dir) for f in fs if f.endswith(".log")
    )
    assert f'auth: "{auth}"' in logs
    assert secret not in logs


# --- bad input: one clear line each, nothing left behind ---------------------------------------


class _Reply(BaseHTTPRequestHandler):
    """Any GET: HTTP 200 with JSON that is not a TES service-info."""

    def do_GET(self):
        body = json.dumps({"status": "ok", "service": "not tes"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_url(shared_dir, rundir):
    url = f"http://127.0.0.1:{_free_port()}"
    run = run_miniwdl(
        _write(rundir, "t.wdl", HELLO),
        [],
        rundir,
        backend="omnibio_tes",
        config=tes_config(url, shared_dir),
    )
    assert run.returncode != 0
    assert f"no answer from the TES server at {url}" in _error_line(run)


@pytest.mark.parametrize("kind", ["404", "json"])
def test_url_that_is_not_tes(shared_dir, rundir, kind):
    handler = (
        _Reply
        if kind == "json"
        else lambda *a, **k: SimpleHTTPRequestHandler(*a, directory=rundir, **k)
    )
    server = _serve(handler)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        run = run_miniwdl(
            _write(rundir, "t.wdl", HELLO),
            [],
            rundir,
            backend="omnibio_tes",
            config=tes_config(url, shared_dir),
        )
    finally:
        server.shutdown()
    assert run.returncode != 0
    line = _error_line(run)
    assert f"{url} is not a TES server" in line
    assert ("HTTP 404" if kind == "404" else "type.artifact") in line


@pytest.mark.parametrize("given", ["wrong", "none"])
def test_rejected_token(shared_dir, rundir, given):
    with TesServer([shared_dir], token="the-right-token") as server:
        if given == "wrong":
            run = _run(
                server,
                shared_dir,
                rundir,
                HELLO,
                env={"OMNIBIO_TEST_TES_TOKEN": "a-wrong-token"},
                token_env="OMNIBIO_TEST_TES_TOKEN",
            )
        else:
            run = _run(server, shared_dir, rundir, HELLO)
        assert run.returncode != 0
        line = _error_line(run)
        if given == "wrong":
            assert f"the TES server at {server.url} rejected our credentials (HTTP 401)" in line
            assert "token_env" in line and "OMNIBIO_TEST_TES_TOKEN" in line
            assert "a-wrong-token" not in run.stderr
        else:
            assert (
                f"the TES server at {server.url} requires credentials (HTTP 401)" in line
                and "token_env" in line
            )
        assert server.tasks() == []


def test_unset_token_variable_names_the_key(tes_server, shared_dir, rundir):
    run = _run(tes_server, shared_dir, rundir, HELLO, token_env="OMNIBIO_TEST_UNSET_VARIABLE")
    assert run.returncode != 0
    line = _error_line(run)
    assert "[omnibio_tes] token_env" in line and "OMNIBIO_TEST_UNSET_VARIABLE" in line


def test_nonexistent_image(tes_server, shared_dir, rundir):
    wdl = 'version 1.1\ntask ghost { command <<< true >>> runtime { docker: "omnibio/no-such-image:1" } }\n'
    run = _run(tes_server, shared_dir, rundir, wdl)
    assert run.returncode != 0
    line = _error_line(run)
    assert "SYSTEM_ERROR" in line and "omnibio/no-such-image:1" in line
    (task,) = _run_tasks(tes_server, run.dir)
    assert task["state"] == "SYSTEM_ERROR"
    assert not tes_server.containers()


def test_unsupported_backend_parameter(tes_server, shared_dir, rundir):
    wdl = 'version 1.1\ntask big { command <<< true >>> runtime { docker: "ubuntu:22.04" omnibio_backend_parameters: {"VmSize": "huge"} } }\n'
    run = _run(tes_server, shared_dir, rundir, wdl)  # not strict: a warning, and the task runs
    assert run.returncode == 0, run.stderr[-3000:]
    assert "does not support backend_parameters VmSize" in run.stderr
    run = _run(tes_server, shared_dir, rundir, wdl, backend_parameters_strict="true")
    assert run.returncode != 0
    assert "does not support backend_parameters VmSize" in _error_line(run)
    assert _run_tasks(tes_server, run.dir) == []  # refused before anything was submitted


def test_offline_selftest_passes(tes_server, shared_dir, rundir):
    from miniwdl_omnibio.selftest import run as selftest

    env = miniwdl_env("omnibio_tes", tes_config(tes_server.url, shared_dir, results=True))
    assert selftest("omnibio_tes", rundir, env=env) == []
