"""Slurm client commands per task: omnibio_slurm beside a blocking ``sbatch --wait`` per task.

    python benchmarks/slurm_commands.py [--tasks 200] [--runs 3]

Counts from outside the engine: every Slurm client command (sbatch, squeue, scancel, sinfo,
scontrol, sacct, sacctmgr, ...) is found on PATH through a shim that appends its name to a log
and execs the real command, so whatever runs it (the engine, miniwdl, a job) is counted.

Each run is one of two ways to run the same trivial scatter of ``--tasks`` tasks on the rig's
cluster, interleaved (omnibio, sbatch --wait, omnibio, ...) ``--runs`` times each:

* omnibio: ``miniwdl run`` with ``omnibio_slurm`` and its default settings (probe, polls, linger);
* sbatch --wait: one blocking ``sbatch --wait`` per task, all at once (one waiting process per
  task, as miniwdl-slurm does), each job running the task's container with docker.

Every run is printed, failed ones included, then each way's medians over all its runs.
Target for omnibio: at most 0.1 commands per task.
"""

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

SLURM_COMMANDS = (
    "sbatch",
    "squeue",
    "scancel",
    "sinfo",
    "scontrol",
    "sacct",
    "sacctmgr",
    "srun",
    "salloc",
    "sstat",
    "sprio",
    "sshare",
)

SCATTER = """
version 1.1
workflow bench {{
  scatter (i in range({tasks})) {{ call trivial {{ input: i }} }}
}}
task trivial {{
  input {{ Int i }}
  command <<< echo ~{{i}} >>>
  runtime {{ docker: "ubuntu:22.04" cpu: 1 memory: "64 MiB" omnibio_result_check: "off" }}
}}
"""


@dataclass
class Run:
    way: str
    ok: bool
    seconds: float
    counts: collections.Counter[str]
    note: str = ""


def install_shims(directory: str) -> str:
    """A directory of shims, one per Slurm command on PATH; the log they append to."""
    log = os.path.join(directory, "calls.log")
    for name in SLURM_COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        shim = os.path.join(directory, name)
        with open(shim, "w") as out:
            # one short line per call, appended (O_APPEND: concurrent calls do not interleave)
            out.write(f'#!/bin/sh\necho {name} >>"{log}"\nexec {real} "$@"\n')
        os.chmod(shim, 0o755)
    return log


def counted(log: str) -> collections.Counter[str]:
    try:
        with open(log) as infile:
            return collections.Counter(line.strip() for line in infile if line.strip())
    except FileNotFoundError:
        return collections.Counter()


def run_omnibio(tasks: int, work: str, env: dict[str, str]) -> tuple[bool, str]:
    wdl = os.path.join(work, "scatter.wdl")
    with open(wdl, "w") as outfile:
        outfile.write(SCATTER.format(tasks=tasks))
    env = {k: v for k, v in env.items() if not k.startswith("MINIWDL__")}
    env.update(
        MINIWDL_CFG="/dev/null",
        MINIWDL__SCHEDULER__CONTAINER_BACKEND="omnibio_slurm",
        MINIWDL__SCHEDULER__TASK_CONCURRENCY=str(tasks),
        MINIWDL__OMNIBIO_SLURM__MOUNT_PATH=work,
    )
    done = subprocess.run(
        [sys.executable, "-m", "WDL", "run", wdl, "--dir", work, "--no-cache"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = done.stderr.strip().splitlines()
    return done.returncode == 0, "" if done.returncode == 0 else (lines[-1] if lines else "")[:200]


def run_sbatch_wait(tasks: int, work: str, env: dict[str, str]) -> tuple[bool, str]:
    def one(i: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sbatch", "--wait", "--quiet", "--cpus-per-task=1", "--mem=64M"]
            + [f"--chdir={work}", "--output=/dev/null", "--error=/dev/null"]
            + [f"--job-name=bench-wait-{i}", f"--wrap=docker run --rm ubuntu:22.04 echo {i}"],
            env=env,
            capture_output=True,
            text=True,
        )

    with ThreadPoolExecutor(max_workers=tasks) as pool:
        results = list(pool.map(one, range(tasks)))
    failed = [r for r in results if r.returncode != 0]
    if not failed:
        return True, ""
    return False, f"{len(failed)} jobs failed: {failed[0].stderr.strip()[:200]}"


WAYS = {"omnibio": run_omnibio, "sbatch --wait": run_sbatch_wait}


def measure(way: str, tasks: int) -> Run:
    work = tempfile.mkdtemp(prefix="omnibio-slurm-bench-", dir="/var/tmp")
    os.chmod(work, 0o755)
    shims = os.path.join(work, "shims")
    os.mkdir(shims)
    log = install_shims(shims)
    env = dict(os.environ, PATH=f"{shims}:{os.environ.get('PATH', '')}")
    started = time.monotonic()
    try:
        ok, note = WAYS[way](tasks, work, env)
    except Exception as exn:  # a run that breaks is reported, not dropped
        ok, note = False, f"{type(exn).__name__}: {exn}"[:200]
    run = Run(way, ok, time.monotonic() - started, counted(log), note)
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        run.note += f" (kept: {work})"
    return run


def describe(run: Run, tasks: int) -> str:
    total = sum(run.counts.values())
    breakdown = ", ".join(f"{name} {count}" for name, count in run.counts.most_common())
    status = "ok" if run.ok else "FAILED"
    return (
        f"{run.way:14} {status:6} {total / tasks:6.3f} per task ({total} commands: "
        f"{breakdown or 'none'}) in {run.seconds:.0f} s{'  ' + run.note if run.note else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="runs of each way, interleaved")
    args = parser.parse_args()
    runs: list[Run] = []
    for index in range(args.runs):
        for way in WAYS:
            run = measure(way, args.tasks)
            runs.append(run)
            print(f"run {index + 1}/{args.runs}: {describe(run, args.tasks)}", flush=True)
    print(f"\nmedians over every run ({args.tasks} tasks each; failed runs included):")
    for way in WAYS:
        mine = [r for r in runs if r.way == way]
        per_task = statistics.median(sum(r.counts.values()) / args.tasks for r in mine)
        seconds = statistics.median(r.seconds for r in mine)
        failed = sum(not r.ok for r in mine)
        print(
            f"{way:14} {per_task:.3f} Slurm commands per task, {seconds:.0f} s "
            f"({len(mine)} runs, {failed} failed)"
            + ("; target <= 0.1" if way == "omnibio" else f"; {args.tasks} processes waiting")
        )


if __name__ == "__main__":
    main()
