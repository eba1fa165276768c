"""A task while it runs on omnibio_docker: live stderr, admission, fail_fast, time limit, signals
and what a killed run leaves. Every wait is on a condition the test can see (a log line, a
container's state, a file the task waits for), with a generous deadline: never on a sleep."""

import json
import os
import re
import signal
from datetime import datetime

import docker
import pytest

from tests.e2e.docker.support import Lines, run_dir, task_containers
from tests.helpers import (
    DEADLINE,
    containers_with_label,
    popen_miniwdl,
    run_miniwdl,
    run_name,
    wait_until,
    workflow_run_of,
)

pytestmark = pytest.mark.usefixtures("docker_rig")

# Waits in the task for a file the test creates (polling a bind-mounted input directory); the
# cap only ends a task whose test has died.
WAIT_FOR = "for _ in $(seq 3000); do [ -e '~{control}/%s' ] && break; sleep 0.2; done"


def _write(path, text):
    path.write_text(text)
    return str(path)


def _start(workdir, wdl_text: str):
    """Start a run whose tasks wait for files in its input ``control`` directory."""
    wdl = _write(workdir / "w.wdl", wdl_text)
    control = workdir / "control"
    control.mkdir()
    proc = popen_miniwdl(wdl, [f"control={control}"], str(workdir))
    return proc, Lines(proc.stderr), control


def _finish(proc, control) -> None:
    """Let the tasks end (or stop miniwdl if the test failed) and reap the process."""
    (control / "go").touch()
    try:
        proc.wait(timeout=DEADLINE)
    except BaseException:
        proc.terminate()
        proc.wait(timeout=DEADLINE)
        raise


def test_stderr_is_streamed_while_the_task_runs(workdir):
    wdl = f"""
version 1.2
task talk {{
  input {{ Directory control }}
  command <<<
    echo "halfway there" >&2
    {WAIT_FOR % "go"}
  >>>
  requirements {{ container: "ubuntu:22.04" }}
}}
"""
    proc, lines, control = _start(workdir, wdl)
    try:
        line = lines.wait_for("halfway there")
        # the task cannot end before the test says go: the line came while it ran
        assert ".stderr" in line  # miniwdl's per-task stderr logger, as with docker_swarm
        (running,) = task_containers(run_name(str(workdir)))
        assert running.status == "running"
    finally:
        _finish(proc, control)
    assert proc.returncode == 0, lines.text()[-3000:]


HOGS = f"""
version 1.2
workflow big {{
  input {{
    Directory control
    Int cpus
    String mem
  }}
  scatter (i in range(2)) {{ call hog {{ input: i, control, cpus, mem }} }}
}}
task hog {{
  input {{
    Int i
    Directory control
    Int cpus
    String mem
  }}
  command <<< {WAIT_FOR % "go"} >>>
  requirements {{ container: "ubuntu:22.04" cpu: cpus memory: mem }}
}}
"""


def _start_hogs(workdir, admission: bool, by: str = "cpu"):
    """Two tasks each asking for every cpu (``by`` cpu) or 60% of the memory (``by`` memory)
    the engine counts on this host (dockerd's NCPU and MemTotal, the admission limits): they can
    only run side by side without admission."""
    info = docker.from_env().info()
    cpus = info["NCPU"] if by == "cpu" else 1
    memory = f"{int(info['MemTotal'] * (0.6 if by == 'memory' else 0.01)) >> 20} MiB"
    wdl = _write(workdir / "w.wdl", HOGS)
    control = workdir / "control"
    control.mkdir()
    env = {"MINIWDL__OMNIBIO_DOCKER__ADMISSION": str(admission).lower()}
    args = [f"control={control}", f"cpus={cpus}", f"mem={memory}"]
    proc = popen_miniwdl(wdl, args, str(workdir), env=env)
    return proc, Lines(proc.stderr), control


@pytest.mark.parametrize("by", ["cpu", "memory"])
def test_admission_queues_tasks_that_do_not_fit(workdir, by):
    proc, lines, control = _start_hogs(workdir, admission=True, by=by)
    try:
        name = run_name(str(workdir))
        # while the first holds every cpu, the second waits uncreated
        wait_until(
            lambda: lines.has("waiting for host resources") or len(task_containers(name)) > 1,
            "the second task to queue (or to start beside the first)",
        )
        wait_until(lambda: task_containers(name), "the first task's container")
        assert lines.has("waiting for host resources")
        assert len(task_containers(name)) == 1
    finally:
        _finish(proc, control)
    assert proc.returncode == 0, lines.text()[-3000:]


def test_admission_false_runs_tasks_that_do_not_fit_side_by_side(workdir):
    proc, lines, control = _start_hogs(workdir, admission=False)
    try:
        name = run_name(str(workdir))
        wait_until(
            lambda: len([c for c in task_containers(name) if c.status == "running"]) == 2,
            "both tasks running at once",
        )
        assert not lines.has("waiting for host resources")
    finally:
        _finish(proc, control)
    assert proc.returncode == 0, lines.text()[-3000:]


def test_fail_fast_stops_a_running_sibling(workdir):
    """boom fails only once nap is running (it connects to nap's port on the run's shared
    localhost); miniwdl's fail_fast must then remove nap's container, not wait out its sleep."""
    wdl = _write(
        workdir / "ff.wdl",
        """
version 1.1
workflow ff {
  call nap
  call boom
}
task nap {
  command <<<
    python3 -c 'import socket, time; s = socket.create_server(("127.0.0.1", 4321)); time.sleep(600)'
  >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 }
}
task boom {
  command <<<
    python3 - <<'PY'
    import socket, sys, time
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", 4321), timeout=5).close()
            sys.exit(3)
        except ConnectionRefusedError:
            time.sleep(0.2)
    PY
  >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 }
}
""",
    )
    run = run_miniwdl(wdl, [], str(workdir), timeout=300)  # nap alone would take 600 s
    assert run.returncode != 0
    assert run.error_json()["cause"]["exit_status"] == 3, run.error_json()
    nap_log = os.path.join(run_dir(run), "call-nap", "task.log")
    with open(nap_log) as infile:
        assert "cancelling" in infile.read()
    assert containers_with_label("omnibio.run", workflow_run_of(run_dir(run))) == []


def _log_time(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")


def test_task_time_limit_stops_the_task_not_before_its_limit(workdir):
    wdl = _write(
        workdir / "slow.wdl",
        'version 1.1\ntask slow { command <<< sleep 600 >>> runtime { docker: "ubuntu:22.04" omnibio_time_limit: "2s" } }\n',
    )
    run = run_miniwdl(wdl, [], str(workdir), timeout=300)  # the task alone would take 600 s
    assert run.returncode != 0
    assert "exceeded its time limit of 2 s (runtime.omnibio_time_limit)" in json.dumps(
        run.error_json()
    )
    lines = run.stderr.splitlines()
    running = next(x for x in lines if re.search(r'engine status :: .*phase: "running"', x))
    stopped = next(x for x in lines if "task exceeded its time limit" in x)
    assert (_log_time(stopped) - _log_time(running)).total_seconds() >= 2
    assert containers_with_label("omnibio.run", workflow_run_of(run_dir(run))) == []


SLEEPY_SCATTER = """
version 1.1
workflow sleepy {
  scatter (i in range(4)) { call nap { input: i } }
}
task nap {
  input { Int i }
  command <<< sleep 600 >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 }
}
"""


def _running_tasks(run: str, count: int) -> None:
    wait_until(
        lambda: len([c for c in task_containers(run) if c.status == "running"]) >= count,
        f"{count} running containers of {run}",
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_container_of_the_run(workdir, sig):
    wdl = _write(workdir / "sleepy.wdl", SLEEPY_SCATTER)
    proc = popen_miniwdl(wdl, [], str(workdir))
    try:
        name = run_name(str(workdir))
        _running_tasks(name, 2)
        proc.send_signal(sig)
        proc.wait(timeout=DEADLINE)  # the tasks alone would take 600 s
        assert proc.returncode != 0
        left = [
            (c.name, c.status, dict(c.labels)) for c in containers_with_label("omnibio.run", name)
        ]
        assert left == [], (left, proc.communicate()[1][-3000:])
    finally:
        if proc.poll() is None:
            proc.kill()


def test_next_run_removes_what_a_killed_run_left(workdir):
    """SIGKILL leaves no chance to clean up; the next run on this host removes those containers."""
    wdl = _write(workdir / "sleepy.wdl", SLEEPY_SCATTER)
    proc = popen_miniwdl(wdl, [], str(workdir))
    try:
        name = run_name(str(workdir))
        _running_tasks(name, 2)
    finally:
        proc.kill()
        proc.wait()
    assert containers_with_label("omnibio.run", name)  # left behind ...
    tiny = _write(
        workdir / "tiny.wdl",
        'version 1.1\ntask tiny { command <<< true >>> runtime { docker: "ubuntu:22.04" } }\n',
    )
    later = workdir / "later"
    later.mkdir()
    assert run_miniwdl(tiny, [], str(later)).returncode == 0
    assert containers_with_label("omnibio.run", name) == []  # ... and gone after the next run
