"""`python -m WDL ...` runs forked from a process that has already imported miniwdl and the plugin.

A `miniwdl run` spends most of a short example's CPU time importing miniwdl, the plugin and the
SDKs; the conformance suite starts hundreds of them on a 2-core machine. Each run here is a fresh
process forked from a multiprocessing forkserver that imported those modules once: from
``WDL.CLI.main`` on, it executes exactly what `python -m WDL` does (entry points, config, the
backend's global_init), in its own session, with its own environment, working directory and
output files, and its atexit handlers (the plugin's shutdown) run before it exits.
"""

import atexit
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PRELOAD = ["WDL", "WDL.CLI", "WDL.runtime", "miniwdl_omnibio.backends", "miniwdl_omnibio.container"]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


@dataclass(frozen=True)
class Finished:
    returncode: int | None  # None: still running when it was killed
    stdout: str
    stderr: str
    timed_out: bool


def _miniwdl(args: Sequence[str], cwd: str, env: Mapping[str, str], out: str, err: str) -> None:
    """The child: `python -m WDL *args` as its own session, then exit with its status."""
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
    child = _context.Process(target=_miniwdl, args=(list(args), cwd, dict(env), out, err))
    child.start()
    child.join(timeout)
    timed_out = child.is_alive()
    if timed_out:
        os.kill(child.pid, signal.SIGTERM)
        child.join(term_grace)
        if child.is_alive():
            child.kill()
            child.join()
    with open(out, errors="replace") as stdout, open(err, errors="replace") as stderr:
        return Finished(
            None if timed_out else child.exitcode, stdout.read(), stderr.read(), timed_out
        )
