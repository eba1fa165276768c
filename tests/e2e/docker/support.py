"""What the omnibio_docker tests share: small TCP servers, log lines, the run's containers."""

import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import docker

from tests.helpers import DEADLINE, Run, containers_with_label


@contextmanager
def tcp_server(host: str, reply: bytes) -> Iterator[int]:
    """A TCP server on ``host`` that sends ``reply`` to each connection; yields its port."""
    server = socket.create_server((host, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _peer = server.accept()
            except OSError:
                continue
            with connection:
                connection.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def free_port() -> int:
    """A TCP port nothing on this host listens on right now."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def connect(host: str, port: int, timeout: float = 5.0) -> str:
    """'refused', 'timeout', or what the server sent: one connection attempt from this host."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            return connection.recv(200).decode()
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge, where tasks' outbound traffic leaves."""
    config = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"]
    gateway = next((c["Gateway"] for c in config if c.get("Gateway")), None)
    return gateway or "172.17.0.1"  # dockerd leaves Gateway out of the default bridge's IPAM


class Lines:
    """The lines a subprocess writes to a pipe, read in a thread so a test can wait for one."""

    def __init__(self, pipe) -> None:
        self.seen: list[str] = []
        self.ended = False
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self._queue.put(line)
        self._queue.put(None)

    def _take(self, timeout: float | None) -> bool:
        """Move one line from the pipe to ``seen``; False at the end or when none came."""
        if self.ended:
            return False
        try:
            line = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except queue.Empty:
            return False
        if line is None:
            self.ended = True
            return False
        self.seen.append(line)
        return True

    def has(self, text: str) -> bool:
        """Whether a line read so far contains ``text`` (does not wait)."""
        while self._take(None):
            pass
        return any(text in line for line in self.seen)

    def wait_for(self, text: str, timeout: float = DEADLINE) -> str:
        """The first line containing ``text``; fails at the deadline or when the pipe closes."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for line in self.seen[checked:]:
                if text in line:
                    return line
            checked = len(self.seen)
            left = deadline - time.monotonic()
            if self.ended or left <= 0:
                raise AssertionError(f"no line with {text!r} (waited up to {timeout:.0f} s)")
            self._take(min(left, 1.0))

    def text(self) -> str:
        """Everything the process wrote, once it has ended."""
        while self._take(DEADLINE):
            pass
        return "".join(self.seen)


def run_dir(run: Run) -> str:
    """The run's directory (a run that made none fails the test here)."""
    assert run.dir, run.stderr[-3000:]
    return run.dir


def task_containers(run_name: str) -> list:
    """The run's task containers (its network sandbox aside)."""
    return [
        c
        for c in containers_with_label("omnibio.run", run_name)
        if "omnibio.sandbox" not in c.labels
    ]
