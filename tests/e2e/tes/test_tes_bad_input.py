"""omnibio_tes bad input: one line naming the cause, at start where it can be, nothing left
behind on the server."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.e2e.tes.runs import run, run_tasks
from tests.e2e.tes.support import tes_config
from tests.emulators.tes_server import S3Access, TesServer
from tests.helpers import error_line

HELLO = """
version 1.1
task hello {
  command <<< echo hello >>>
  runtime { docker: "ubuntu:22.04" }
}
"""


class _NotTes(BaseHTTPRequestHandler):
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


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(server, moto, rundir, **keys):
    return run(server, moto, rundir, HELLO, config=tes_config(server.url, **keys))


class _Url:
    def __init__(self, url):
        self.url = url


def test_unreachable_url(moto, rundir):
    url = f"http://127.0.0.1:{_free_port()}"
    done = run(_Url(url), moto, rundir, HELLO, max_retries="0")
    assert done.returncode != 0
    assert f"no answer from the TES server at {url}" in error_line(done)


@pytest.mark.parametrize("kind", ["404", "json"])
def test_url_that_is_not_tes(moto, rundir, kind):
    handler = (
        _NotTes
        if kind == "json"
        else lambda *a, **k: SimpleHTTPRequestHandler(*a, directory=rundir, **k)
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        done = run(_Url(url), moto, rundir, HELLO)
    finally:
        httpd.shutdown()
    line = error_line(done)
    assert done.returncode != 0 and f"{url} is not a TES server" in line
    assert ("HTTP 404" if kind == "404" else "type.artifact") in line
    assert "/ga4gh/tes/v1/service-info" in line and "/v1/service-info" in line


@pytest.mark.parametrize("given", ["wrong", "none"])
def test_rejected_or_missing_token(moto, rundir, given):
    access = S3Access(moto.endpoint, "testing", "testing")
    with TesServer(s3=access, token="the-right-token", workers=1) as server:
        if given == "wrong":
            done = run(
                server,
                moto,
                rundir,
                HELLO,
                env={"OMNIBIO_TEST_TES_TOKEN": "a-wrong-token"},
                token_env="OMNIBIO_TEST_TES_TOKEN",
            )
        else:
            done = run(server, moto, rundir, HELLO)
        line = error_line(done)
        if given == "wrong":
            assert f"the TES server at {server.url} rejected our credentials (HTTP 401)" in line
            assert "OMNIBIO_TEST_TES_TOKEN" in line and "a-wrong-token" not in done.stderr
        else:
            assert f"the TES server at {server.url} requires credentials (HTTP 401)" in line
        assert server.tasks() == []


@pytest.mark.parametrize(
    "keys, words",
    [
        ({"token_env": "OMNIBIO_TEST_UNSET_VARIABLE"}, ["[omnibio_tes] token_env", "not set"]),
        ({"staging_uri": ""}, ["[omnibio_tes] staging_uri", "is required"]),
        ({"staging_uri": "ftp://x/y"}, ["[omnibio_tes] staging_uri", "neither s3"]),
        (
            {"staging_uri": "s3://omnibio-no-such-bucket/x"},
            ["[omnibio_tes] staging_uri", "cannot write there", "NoSuchBucket"],
        ),
    ],
)
def test_configuration_mistakes_name_the_key(tes_server, moto, rundir, keys, words):
    done = _start(tes_server, moto, rundir, **keys)
    line = error_line(done)
    assert done.returncode != 0 and all(w in line for w in words), line
    assert run_tasks(tes_server, done.dir) == []


def test_unreachable_staging_store(tes_server, moto, rundir):
    unreachable = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}
    done = run(tes_server, moto, rundir, HELLO, env=unreachable, max_retries="0")
    line = error_line(done)
    assert "[omnibio_tes] staging_uri" in line and "Could not connect" in line, line


def test_nonexistent_image(tes_server, moto, rundir):
    wdl = HELLO.replace("ubuntu:22.04", "omnibio/no-such-image:1")
    done = run(tes_server, moto, rundir, wdl)
    line = error_line(done)
    assert "SYSTEM_ERROR" in line and "omnibio/no-such-image:1" in line
    (task,) = run_tasks(tes_server, done.dir)
    assert task["state"] == "SYSTEM_ERROR" and not tes_server.containers()


def test_a_task_the_server_rejects(tes_server, moto, rundir):
    tes_server.fault("create", 400)
    done = run(tes_server, moto, rundir, HELLO)
    line = error_line(done)
    assert "answered HTTP 400 while trying to create the task" in line
    assert "injected fault for create" in line  # the server's own reason
    assert run_tasks(tes_server, done.dir) == []


def test_unsupported_backend_parameter(tes_server, moto, rundir):
    wdl = HELLO.replace(
        '"ubuntu:22.04"', '"ubuntu:22.04" omnibio_backend_parameters: {"VmSize": "huge"}'
    )
    done = run(tes_server, moto, rundir, wdl)  # not strict: a warning, and the task runs
    assert done.returncode == 0, done.stderr[-3000:]
    assert "does not support backend_parameters VmSize" in done.stderr
    done = run(tes_server, moto, rundir, wdl, backend_parameters_strict="true")
    assert "does not support backend_parameters VmSize" in error_line(done)
    assert run_tasks(tes_server, done.dir) == []  # refused before anything was submitted
