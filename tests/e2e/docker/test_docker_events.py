"""A container's end is pushed by the daemon's event stream: with a 30 s poll period a short task
is seen done within seconds; a broken stream is reopened (the gap replayed) and, while /events
is forbidden, polling notices the end. The daemon is reached through a socket proxy that breaks
/events as a test asks and passes everything else through unchanged."""

import os
import re
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import docker
import pytest

from tests.helpers import run_miniwdl, wait_until

pytestmark = pytest.mark.usefixtures("docker_rig")

DAEMON = "/var/run/docker.sock"
LONG_POLL = {"omnibio_docker": {"poll_seconds": "30"}}
# sleeps past the tracker's first full round, so only a later one or a push can see it end
TASK = """
version 1.1
task short {
  command <<< sleep 2; echo done >>>
  output { String out = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" }
}
"""
# Tecnativa's docker-socket-proxy answers 403 to an API section it is not told to allow
# (EVENTS=0 for /events), as this proxy does under "forbid"
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nForbidden"
)


class SocketProxy:
    """A unix socket in front of dockerd. Requests are read one by one (docker-py sends a head and
    a Content-Length body) so a kept-alive connection is inspected at each request; answers are
    piped back unchanged. ``events``: "forbid" (403 to every GET /events), or "cut-first" (the
    first GET /events gets no answer until a container of the run has exited, then its connection
    is closed: the die event falls in the gap; later ones pass)."""

    def __init__(self, path: str, events: str) -> None:
        self.path = path
        self.events = events
        self.events_requests = 0
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(path)
        self._server.listen(64)
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        daemon = socket.socket(socket.AF_UNIX)
        daemon.connect(DAEMON)
        threading.Thread(target=_pipe, args=(daemon, client), daemon=True).start()
        buffered = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                head, _sep, buffered = buffered.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                body_size = int(length[1]) if length else 0
                while len(buffered) < body_size:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                body, buffered = buffered[:body_size], buffered[body_size:]
                if b"/events" in head.split(b"\r\n", 1)[0] and self._break_events():
                    if self.events == "forbid":
                        client.sendall(FORBIDDEN)
                        continue
                    wait_until(_a_task_exited, "a task container of the run to exit")
                    return
                daemon.sendall(head + b"\r\n\r\n" + body)
        except OSError:
            return
        finally:
            for end in (client, daemon):
                end.close()

    def _break_events(self) -> bool:
        with self._lock:
            self.events_requests += 1
            return self.events == "forbid" or (
                self.events == "cut-first" and self.events_requests == 1
            )


def _a_task_exited() -> bool:
    exited = docker.from_env().containers.list(
        all=True, filters={"label": "omnibio.launcher", "status": "exited"}
    )
    return bool(exited)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            end.close()


@contextmanager
def proxy(events: str) -> Iterator[SocketProxy]:
    directory = tempfile.mkdtemp(prefix="omnibio-proxy-")  # short: a socket path has 107 bytes
    path = os.path.join(directory, "docker.sock")
    server = SocketProxy(path, events)
    try:
        yield server
    finally:
        server.close()
        os.unlink(path)
        os.rmdir(directory)


def _seconds_to_done(stderr: str) -> float:
    """From the task's submission to the log line saying it is done, by the log's own clock."""
    stamps = {}
    for line in stderr.splitlines():
        for what, pattern in (("submitted", "INFO submitted ::"), ("done", 'phase: "done"')):
            if pattern in line and what not in stamps:
                stamps[what] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
    assert set(stamps) == {"submitted", "done"}, stderr[-3000:]
    return (stamps["done"] - stamps["submitted"]).total_seconds()


def _run(workdir, config, env=None):
    wdl = workdir / "short.wdl"
    wdl.write_text(TASK)
    run = run_miniwdl(str(wdl), [], str(workdir), config=config, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["short.out"] == "done"
    return run


def test_an_end_is_seen_by_its_event_not_the_poll(workdir):
    run = _run(workdir, LONG_POLL)
    assert _seconds_to_done(run.stderr) < 20, "the end waited for a poll, not the die event"
    assert "event stream broken" not in run.stderr


def test_a_broken_event_stream_is_reopened_and_replays_the_gap(workdir):
    with proxy("cut-first") as server:
        run = _run(workdir, LONG_POLL, env={"DOCKER_HOST": f"unix://{server.path}"})
    assert "docker event stream broken" in run.stderr
    assert server.events_requests >= 2
    assert _seconds_to_done(run.stderr) < 20, "the reopened stream did not carry the end"


def test_a_forbidden_event_stream_falls_back_to_polling(workdir):
    config = {"omnibio_docker": {"poll_seconds": "1"}}
    with proxy("forbid") as server:
        run = _run(workdir, config, env={"DOCKER_HOST": f"unix://{server.path}"})
    broken = [line for line in run.stderr.splitlines() if "docker event stream broken" in line]
    assert len(broken) == 1 and "403" in broken[0], broken  # one warning, the daemon's reason
    assert server.events_requests >= 2  # it kept trying to reopen the stream
