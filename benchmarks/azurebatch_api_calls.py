"""Azure Batch REST calls and poll cost of a scatter on omnibio_azurebatch.

    python benchmarks/azurebatch_api_calls.py [--tasks 1000] [--poll-seconds 5] \\
        [--task-concurrency 200] [--containers]

Runs the scatter with miniwdl against the local Batch emulator and counts every REST request it
serves, by route, with the bytes of its answers. Tasks are simulated (they succeed after
--task-seconds without a container) unless --containers runs each on dockerd. Prints calls per
task (target <= 1.5) and, per poll, the requests and bytes of the task listings, beside what one
poll listing every started task (the former ``state ne 'active'`` filter) costs at the end.
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

from azure.batch import BatchClient  # noqa: E402
from azure.core.credentials import AzureNamedKeyCredential  # noqa: E402

from miniwdl_omnibio.engines.azurebatch import STATUS_FIELDS  # noqa: E402
from tests.emulators.azurebatch_emulator import BatchEmulator  # noqa: E402

TARGET = 1.5
LIST_TASKS = "GET /jobs/{jobId}/tasks"
SCATTER = """
version 1.1
workflow bench {{
  scatter (i in range({tasks})) {{ call trivial {{ input: i = i }} }}
}}
task trivial {{
  input {{ Int i }}
  command <<< echo ~{{i}} >>>
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
    "targetDedicatedNodes": 8,
    "taskSlotsPerNode": 8,
}


def run_scatter(batch: BatchEmulator, args: argparse.Namespace, shared: str) -> float:
    wdl = os.path.join(shared, "scatter.wdl")
    with open(wdl, "w") as outfile:
        outfile.write(SCATTER.format(tasks=args.tasks))
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
    if proc.returncode != 0:
        sys.exit(f"miniwdl run failed:\n{proc.stderr[-3000:]}")
    return time.monotonic() - started


def full_listing_bytes(batch: BatchEmulator) -> int:
    """The bytes of one poll that lists every started task of the run, once all completed."""
    client = BatchClient(batch.url, AzureNamedKeyCredential(batch.account, batch.key))
    (job_id,) = batch.state()["jobs"]
    before = batch.counts()["bytes"].get(LIST_TASKS, 0)
    list(client.list_tasks(job_id, filter="state ne 'active'", select=STATUS_FIELDS))
    return batch.counts()["bytes"][LIST_TASKS] - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--poll-seconds", default="5", help="[omnibio_azurebatch] poll_seconds")
    parser.add_argument("--task-concurrency", default="200", help="[scheduler] task_concurrency")
    parser.add_argument("--task-seconds", type=float, default=10.0, help="a simulated task's run")
    parser.add_argument("--containers", action="store_true", help="run tasks on dockerd")
    args = parser.parse_args()
    shared = tempfile.mkdtemp(prefix="omnibio_azb_bench_")
    os.chmod(shared, 0o755)
    simulate = None if args.containers else args.task_seconds
    with BatchEmulator(pools=(POOL,), simulate_seconds=simulate) as batch:
        elapsed = run_scatter(batch, args, shared)
        counts = batch.counts()
        full = full_listing_bytes(batch)
    shutil.rmtree(shared, ignore_errors=True)
    print(
        f"{args.tasks}-task scatter on omnibio_azurebatch "
        f"({'containers' if args.containers else f'simulated {args.task_seconds} s tasks'}, "
        f"poll_seconds {args.poll_seconds}): {elapsed:.1f} s, {counts['total']} REST calls"
    )
    for route, number in sorted(counts["requests"].items(), key=lambda item: -item[1]):
        print(f"  {number:6d} calls {counts['bytes'].get(route, 0):10d} bytes  {route}")
    polls = counts["requests"].get(LIST_TASKS, 0)
    listed = counts["bytes"].get(LIST_TASKS, 0)
    print(
        f"polls: {polls} task listings, {listed / max(polls, 1):,.0f} bytes each on average "
        f"(changed tasks only); one listing of every started task: {full:,} bytes at the end"
    )
    per_task = counts["total"] / args.tasks
    verdict = "met" if per_task <= TARGET else "MISSED"
    print(f"calls per task: {per_task:.2f} (target <= {TARGET}: {verdict})")
    sys.exit(0 if per_task <= TARGET else 1)


if __name__ == "__main__":
    main()
