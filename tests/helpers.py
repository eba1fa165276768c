"""Running miniwdl as a user would (a subprocess), and reading what it left behind."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import docker

from miniwdl_omnibio.contract import workflow_run_name
from tests.preloaded import run_wdl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the WDL spec examples: shared/ beside the checkout, or where OMNIBIO_CONFORMANCE_DIR says (a
# git worktree elsewhere)
CONFORMANCE = os.environ.get(
    "OMNIBIO_CONFORMANCE_DIR", os.path.join(os.path.dirname(REPO), "shared", "conformance")
)
DEADLINE = 120.0  # seconds: generous, for a loaded 2-core machine; only a failing test waits it

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = DEADLINE) -> T:
    """``condition()``'s first true value: tests synchronise on the state they await, never on a
    sleep. Fails naming ``what`` once ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(0.25)


def docker_available() -> bool:
    try:
        docker.from_env().ping()
        return True
    except Exception:
        return False


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict
    dir: str | None

    def error_json(self) -> dict:
        path = os.path.join(self.dir or "", "error.json")
        if self.dir and os.path.exists(path):
            with open(path) as infile:
                return json.load(infile)
        return {}


def config_env(config: dict[str, dict[str, str]] | None) -> dict[str, str]:
    """MINIWDL__SECTION__KEY variables for a {section: {key: value}} configuration."""
    return {
        f"MINIWDL__{section.upper()}__{key.upper()}": str(value)
        for section, values in (config or {}).items()
        for key, value in values.items()
    }


def miniwdl_env(
    backend: str, config: dict[str, dict[str, str]] | None = None, env: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment selecting ``backend`` plus MINIWDL__SECTION__KEY for each config value."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("MINIWDL__")}
    out["MINIWDL_CFG"] = "/dev/null"  # ignore any user config file
    out["MINIWDL__SCHEDULER__CONTAINER_BACKEND"] = backend
    out.update(config_env(config))
    out.update(env or {})
    return out


def _argv(wdl: str, args: list[str], cwd: str, task: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "WDL", "run", wdl, *args, "--dir", cwd, "--verbose"]
    return argv + (["--task", task] if task else [])


def run_miniwdl(
    wdl: str,
    args: list[str],
    cwd: str,
    backend: str = "omnibio_docker",
    config: dict[str, dict[str, str]] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    task: str | None = None,
) -> Run:
    """``python -m WDL run``; forked from the preloaded forkserver (tests/preloaded.py) unless
    ``env`` sets PYTHONPATH: what a process imports then is what the test is about."""
    argv, environment = _argv(wdl, args, cwd, task), miniwdl_env(backend, config, env)
    if "PYTHONPATH" in (env or {}):
        fresh = subprocess.run(
            argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout
        )
        return _finished(cwd, fresh.returncode, fresh.stdout, fresh.stderr)
    with tempfile.TemporaryDirectory(prefix="omnibio-streams-") as streams:
        proc = run_wdl(argv[3:], cwd, environment, f"{streams}/run", timeout, 30)
    if proc.timed_out or proc.returncode is None:
        raise subprocess.TimeoutExpired(argv, timeout, proc.stdout, proc.stderr)
    return _finished(cwd, proc.returncode, proc.stdout, proc.stderr)


def _finished(cwd: str, returncode: int, stdout: str, stderr: str) -> Run:
    outputs, run_dir = {}, None
    try:
        doc = json.loads(stdout)
        outputs, run_dir = doc.get("outputs", {}), doc.get("dir")
    except ValueError:
        pass
    if run_dir is None:
        # on failure miniwdl prints no JSON; the newest run directory is the one
        dirs = [
            os.path.join(cwd, d)
            for d in os.listdir(cwd)
            if d[:8].isdigit() and os.path.isdir(os.path.join(cwd, d))
        ]
        run_dir = max(dirs, key=os.path.getmtime) if dirs else None
    return Run(returncode, stdout, stderr, outputs, run_dir)


def popen_miniwdl(
    wdl: str,
    args: list[str],
    cwd: str,
    backend: str = "omnibio_docker",
    config: dict[str, dict[str, str]] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start miniwdl without waiting, for tests that act on a run while it goes (signals)."""
    return subprocess.Popen(
        _argv(wdl, args, cwd),
        cwd=cwd,
        env=miniwdl_env(backend, config, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_dir_name(cwd: str, timeout: float = 60) -> str:
    """The name of the run directory miniwdl creates under ``cwd`` (it tags the run's work)."""
    runs = wait_until(
        lambda: [d for d in os.listdir(cwd) if d[:8].isdigit()],
        f"miniwdl to create a run directory under {cwd}",
        timeout,
    )
    return runs[0]


def workflow_run_of(run_dir: str) -> str:
    """The run's name, as its tags, RUN_ID and RESULT_URI carry it (the run directory's name and
    a digest of where it is)."""
    return workflow_run_name(run_dir, ("run",))


def run_name(cwd: str, timeout: float = 60) -> str:
    """The name of the run miniwdl starts under ``cwd``, once it made the run directory."""
    return workflow_run_of(os.path.join(cwd, run_dir_name(cwd, timeout)))


def error_line(run: Run) -> str:
    """The one line a user reads: the failure's message in error.json (or miniwdl's last line)."""
    error = run.error_json()
    message = (error.get("cause") or error).get("message") if error else None
    return message or run.stderr.strip().splitlines()[-1]


def containers_with_label(label: str, value: str) -> list:
    return docker.from_env().containers.list(
        all=True, filters={"label": f"{label}={value}"}, ignore_removed=True
    )


def source_copy(dest: str) -> str:
    """This checkout's files without build artefacts, at ``dest``: a wheel built in place would
    take a stale build/ along, and two pytest workers building in place at once collide."""
    shutil.copytree(
        REPO,
        dest,
        ignore=shutil.ignore_patterns(
            ".git", "build", "*.egg-info", "__pycache__", ".*_cache", ".venv", "examples"
        ),
    )
    return dest


# allocates and touches 200 MiB, then burns CPU until the process has used 2 s of it: the task
# the measured-usage tests run on every backend whose job script reads the container's cgroup
USAGE_WDL = r"""
version 1.1
task use {
  command <<<
    python3 - <<'PY'
    import time
    block = b"\x01" * (200 << 20)
    while time.process_time() < 2.0:
        pass
    print(len(block))
    PY
  >>>
  output { Int n = read_int(stdout()) }
  runtime { docker: "omnibio/runtime:latest" cpu: 1 memory: "512 MiB" omnibio_result_check: "off" }
}
"""
