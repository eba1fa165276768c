"""Azure Batch REST calls per task for a trivial scatter on omnibio_azurebatch.

    python benchmarks/azurebatch_api_calls.py [--tasks 100] [--poll-seconds 5] \
        [--task-concurrency 100]

Runs the scatter with miniwdl against the local Batch emulator (tasks run on dockerd) and counts
every REST request the emulator serves, by route. Target: <= 1.5 calls per task (one create per
task or fewer thanks to addtaskcollection, plus one list per poll for the whole run).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.emulators.azurebatch_emulator import BatchEmulator  # noqa: E402

TARGET = 1.5
SCATTER = """
version 1.1
workflow bench {{
  scatter (i in range({tasks})) {{ call trivial {{ input: i = i }} }}
}}
task trivial {{
  input {{ Int i }}
  command <<< echo ~{{i}} >>>
  output {{ String out = read_string(stdout()) }}
  runtime {{ docker: "ubuntu:22.04" cpu: 1 }}
}}
"""
POOL = {
    "id": "bench-pool",
    "vmSize": "STANDARD_D8S_V3",
    "virtualMachineConfiguration": {
        "imageReference": {
            "publisher": "microsoft-dsvm",
            "offer": "ubuntu-hpc",
            "sku": "2204",
            "version": "latest",
        },
        "nodeAgentSKUId": "batch.node.ubuntu 22.04",
        "containerConfiguration": {"type": "dockerCompatible"},
    },
    "targetDedicatedNodes": 2,
    "taskSlotsPerNode": 8,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--poll-seconds", default="5", help="[omnibio_azurebatch] poll_seconds")
    parser.add_argument(
        "--task-concurrency",
        default="100",
        help="[scheduler] task_concurrency (miniwdl's default is nproc)",
    )
    args = parser.parse_args()
    shared = tempfile.mkdtemp(prefix="omnibio_azb_bench_")
    os.chmod(shared, 0o755)
    wdl = os.path.join(shared, "scatter.wdl")
    with open(wdl, "w") as outfile:
        outfile.write(SCATTER.format(tasks=args.tasks))
    with BatchEmulator(pools=(POOL,)) as batch:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIWDL__")}
        env.update(
            MINIWDL_CFG="/dev/null",
            MINIWDL__SCHEDULER__CONTAINER_BACKEND="omnibio_azurebatch",
            MINIWDL__SCHEDULER__TASK_CONCURRENCY=args.task_concurrency,
            MINIWDL__OMNIBIO_AZUREBATCH__ACCOUNT_URL=batch.url,
            MINIWDL__OMNIBIO_AZUREBATCH__ACCOUNT_NAME=batch.account,
            MINIWDL__OMNIBIO_AZUREBATCH__POOL_ID=POOL["id"],
            MINIWDL__OMNIBIO_AZUREBATCH__MOUNT_PATH=shared,
            MINIWDL__OMNIBIO_AZUREBATCH__POLL_SECONDS=args.poll_seconds,
            AZURE_BATCH_ACCOUNT_KEY=batch.key,
        )
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "WDL", "run", wdl, "--dir", shared, "--no-cache"],
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            sys.exit(f"miniwdl run failed:\n{proc.stderr[-3000:]}")
        counts = batch.counts()
    shutil.rmtree(shared, ignore_errors=True)
    per_task = counts["total"] / args.tasks
    print(
        f"{args.tasks}-task scatter on omnibio_azurebatch: {elapsed:.1f} s, "
        f"{counts['total']} Batch REST calls"
    )
    for route, number in sorted(counts["requests"].items(), key=lambda item: -item[1]):
        print(f"  {number:5d}  {route}")
    print(
        f"calls per task: {per_task:.2f} "
        f"(target <= {TARGET}: {'met' if per_task <= TARGET else 'MISSED'})"
    )
    sys.exit(0 if per_task <= TARGET else 1)


if __name__ == "__main__":
    main()
