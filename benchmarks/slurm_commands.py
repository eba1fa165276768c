"""Slurm client commands per task of omnibio_slurm, on the rig's one-node cluster.

    python benchmarks/slurm_commands.py [--tasks 200]

Runs a trivial scatter in this process (miniwdl's CLI, so configuration and plugins load as for
a user) with the engine's default poll_seconds and submit_linger_seconds, then reads the
engine's count of every Slurm command it ran (sbatch, squeue, scancel, sinfo, scontrol, sacct)
and prints them per task, beside what a blocking ``sbatch --wait`` per task costs (one command
and one waiting process per task, as miniwdl-slurm does). Target: at most 0.1 per task.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="omnibio-slurm-bench-", dir="/var/tmp")
    os.chmod(work, 0o755)
    wdl = os.path.join(work, "scatter.wdl")
    with open(wdl, "w") as outfile:
        outfile.write(SCATTER.format(tasks=args.tasks))
    os.environ.update(
        MINIWDL_CFG="/dev/null",
        MINIWDL__SCHEDULER__CONTAINER_BACKEND="omnibio_slurm",
        MINIWDL__SCHEDULER__TASK_CONCURRENCY=str(args.tasks),
        MINIWDL__OMNIBIO_SLURM__MOUNT_PATH=work,
    )
    from WDL import CLI

    from miniwdl_omnibio.backends import SlurmContainer

    started = time.monotonic()
    try:
        CLI.main(["run", wdl, "--dir", work, "--no-cache"])
    except SystemExit as exn:
        if exn.code:
            sys.exit(f"miniwdl run failed ({exn.code}); see {work}")
    elapsed = time.monotonic() - started
    counts = SlurmContainer._engine.cli.counts
    total = sum(counts.values())
    breakdown = ", ".join(f"{name} {count}" for name, count in counts.most_common())
    print(
        f"omnibio_slurm: {total / args.tasks:.3f} Slurm commands per task ({total} for "
        f"{args.tasks} tasks in {elapsed:.0f} s: {breakdown}; target <= 0.1)\n"
        f"sbatch --wait per task: 1.000 Slurm commands per task ({args.tasks} commands, "
        f"{args.tasks} processes waiting)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
