"""`python -m WDL ...` runs forked from a process that has already imported miniwdl and the plugin.

A `miniwdl run` spends most of a short example's CPU time importing miniwdl, the plugin and the
SDKs; the conformance suite starts hundreds of them on a 2-core machine. Each run here is a fresh
process forked from a multiprocessing forkserver that imported those modules once (and built
what tests/forkserver_warmup.py names): from ``WDL.CLI.main`` on, it executes exactly what
`python -m WDL` does (entry points, config, the backend's global_init), in its own session, with
its own environment, working directory and output files, and its atexit handlers (the plugin's
shutdown) run before it exits.
"""

import atexit
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ENGINES = ("docker", "awsbatch", "azurebatch", "tes", "slurm")
PRELOAD = [
    "WDL",
    "WDL.CLI",
    "WDL.runtime",
    "miniwdl_omnibio.backends",
    "miniwdl_omnibio.container",
    *(f"miniwdl_omnibio.engines.{engine}.engine" for engine in ENGINES),
    "tests.forkserver_warmup",
]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # None: still running when it was killed
    stdout: str
    stderr: str
    timed_out: bool


def _miniwdl(
    args: Sequence[str], cwd: str, env: Mapping[str, str], out: str, err: str, status_file: str
) -> None:
    """The child: `python -m WDL *args` as its own session, then exit with its status (also
    written to ``status_file``: the forkserver's report of it can be lost, see ``run_wdl``)."""
    os.setsid()  # a Ctrl-C of the test reaches miniwdl only through the test
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for path, fd in ((out, 1), (err, 2)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    status = 0
    try:
        from WDL import CLI

        CLI.main(list(args))
    except SystemExit as exn:
        status = exn.code if isinstance(exn.code, int) else (0 if exn.code is None else 1)
    except BaseException:
        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()  # the plugin cancels and releases at exit, as after python -m WDL
    sys.stdout.flush()
    sys.stderr.flush()
    with open(status_file, "w") as outfile:
        outfile.write(str(status % 256))  # as a process exit status reads
    os._exit(status)


def run_wdl(
    args: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    output_prefix: str,
    timeout: float,
    term_grace: float,
) -> Finished:
    """Run `python -m WDL *args`; after ``timeout`` s it gets SIGTERM (miniwdl cancels its
    containers and jobs), after ``term_grace`` more SIGKILL. Its streams go to
    ``output_prefix``.stdout / .stderr and are returned."""
    out, err = output_prefix + ".stdout", output_prefix + ".stderr"
    status_file = output_prefix + ".status"
    child = _context.Process(
        target=_miniwdl, args=(list(args), cwd, dict(env), out, err, status_file)
    )
    deadline = time.monotonic() + timeout
    child.start()
    assert child.pid is not None
    child.join(timeout)
    status = _read_status(status_file)
    if status is None and not child.is_alive():
        # multiprocessing reports 255 when it loses the forkserver's word on the child (EOF on
        # the status pipe): follow the process itself to its end
        while _running(child.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        status = _read_status(status_file)
    timed_out = child.is_alive() or (status is None and _running(child.pid))
    if timed_out:
        os.kill(child.pid, signal.SIGTERM)
        end = time.monotonic() + term_grace
        while _running(child.pid) and time.monotonic() < end:
            time.sleep(0.2)
        if _running(child.pid):
            os.kill(child.pid, signal.SIGKILL)
    returncode = None if timed_out else (status if status is not None else child.exitcode)
    return Finished(returncode, _read(out), _read(err), timed_out)


def _read(path: str) -> str:
    """A stream the child wrote; "" if it never started (multiprocessing printed why)."""
    try:
        with open(path, errors="replace") as infile:
            return infile.read()
    except FileNotFoundError:
        return ""


def _read_status(path: str) -> int | None:
    try:
        with open(path) as infile:
            return int(infile.read())
    except (OSError, ValueError):
        return None


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as infile:
            return infile.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
