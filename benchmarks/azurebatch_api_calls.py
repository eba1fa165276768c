"""REST calls and poll cost of a scatter on omnibio_azurebatch, counted at the services.

    python benchmarks/azurebatch_api_calls.py                      # 1,000 simulated tasks
    python benchmarks/azurebatch_api_calls.py --containers --tasks 50

Runs the scatter with miniwdl against the local Batch emulator, --repeat times (default 3), and
counts every request the services answer, retries included, by route, with the bytes of the
answers; the target (<= 1.5 Batch calls per task) leaves out the blob calls of result checking.
By default tasks are simulated (they succeed after --task-seconds without a container), so a
thousand fit on this machine; --containers runs each on dockerd with the tool runtime, which
uploads results.json to Azurite, and miniwdl verifies it as a user runs it (blob requests are
counted by a proxy in front of Azurite). Prints, per run and as median [min-max]: elapsed time,
calls per task, and the requests and bytes of one poll (a listing and its further pages),
beside one listing of every started task (the former ``state ne 'active'`` poll) at the end of
the run.

There is one side only: no other miniwdl backend for Azure Batch runs against this emulator.
"""

import argparse
import collections
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from azure.batch import BatchClient  # noqa: E402
from azure.core.credentials import AzureNamedKeyCredential  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402

from miniwdl_omnibio.engines.azurebatch import STATUS_FIELDS  # noqa: E402
from tests.emulators.azurebatch_emulator import BatchEmulator  # noqa: E402
from tests.emulators.azurite import ACCOUNT, ACCOUNT_KEY, Azurite  # noqa: E402

TARGET = 1.5
LIST_TASKS = "GET /jobs/{jobId}/tasks"
SCATTER = """
version 1.1
workflow bench {{
  scatter (i in range({tasks})) {{ call trivial {{ input: i = i }} }}
}}
task trivial {{
  input {{ Int i }}
  command <<< {command} >>>
  runtime {{ docker: "{image}" cpu: 1 }}
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


class CountingProxy:
    """Forwards HTTP to a service on 127.0.0.1 and counts requests and answer bytes by method."""

    def __init__(self, port: int) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.bytes = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                upstream.request(self.command, self.path, body, dict(self.headers.items()))
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                with proxy.lock:
                    proxy.counts[self.command] += 1
                    proxy.bytes += len(data)
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def connection_string(self) -> str:
        endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/{ACCOUNT}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={endpoint};"
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_scatter(
    batch: BatchEmulator, args: argparse.Namespace, blob: CountingProxy | None
) -> dict[str, Any]:
    shared = tempfile.mkdtemp(prefix="omnibio_azb_bench_")
    os.chmod(shared, 0o755)
    wdl = os.path.join(shared, "scatter.wdl")
    if blob:
        command = "python3 -m miniwdl_omnibio.runtime.echo_test > /dev/null"
        image = "omnibio/runtime:latest"
    else:
        command, image = "echo ~{i}", "ubuntu:22.04"
    with open(wdl, "w") as outfile:
        outfile.write(SCATTER.format(tasks=args.tasks, command=command, image=image))
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
    if blob:
        env.update(
            MINIWDL__OMNIBIO__RESULT_URI_PREFIX=f"azureblob://{ACCOUNT}/omnibio/results",
            MINIWDL__TASK_RUNTIME__ENV=json.dumps(
                {"AZURE_STORAGE_CONNECTION_STRING": blob.connection_string}
            ),
            AZURE_STORAGE_CONNECTION_STRING=blob.connection_string,
        )
    batch.reset_counts()
    if blob:
        blob.counts.clear()
        blob.bytes = 0
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "WDL", "run", wdl, "--dir", shared, "--no-cache"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    shutil.rmtree(shared, ignore_errors=True)
    if proc.returncode != 0:
        sys.exit(f"miniwdl run failed:\n{proc.stderr[-3000:]}")
    counts = batch.counts()
    requests = counts["requests"].get(LIST_TASKS, 0)
    polls = max(requests - counts["next_pages"].get(LIST_TASKS, 0), 1)  # first pages
    full_requests, full_bytes = full_listing(batch)
    result = {
        "elapsed": elapsed,
        "counts": counts,
        "blob": dict(blob.counts) if blob else {},
        "blob_bytes": blob.bytes if blob else 0,
        "polls": polls,
        "requests_per_poll": requests / polls,
        "bytes_per_poll": counts["bytes"].get(LIST_TASKS, 0) / polls,
        "full_requests": full_requests,
        "full_bytes": full_bytes,
    }
    result["batch_per_task"] = counts["total"] / args.tasks
    result["per_task"] = (counts["total"] + sum(result["blob"].values())) / args.tasks
    return result


def full_listing(batch: BatchEmulator) -> tuple[int, int]:
    """(requests, bytes) of one poll listing every started task of the latest run, all
    completed: what the former ``state ne 'active'`` poll paid each time at the run's end."""
    client = BatchClient(batch.url, AzureNamedKeyCredential(batch.account, batch.key))
    job_id = max(batch.state()["jobs"], key=lambda j: client.get_job(j).creation_time)
    before = batch.counts()
    list(client.list_tasks(job_id, filter="state ne 'active'", select=STATUS_FIELDS))
    after = batch.counts()
    return (
        after["requests"][LIST_TASKS] - before["requests"].get(LIST_TASKS, 0),
        after["bytes"][LIST_TASKS] - before["bytes"].get(LIST_TASKS, 0),
    )


def summary(values: list[float], unit: str = "") -> str:
    return f"{statistics.median(values):,.2f}{unit} [{min(values):,.2f}-{max(values):,.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--poll-seconds", default="5", help="[omnibio_azurebatch] poll_seconds")
    parser.add_argument("--task-concurrency", default="200", help="[scheduler] task_concurrency")
    parser.add_argument("--task-seconds", type=float, default=10.0, help="a simulated task's run")
    parser.add_argument(
        "--containers", action="store_true", help="run tasks on dockerd, results in Azurite"
    )
    args = parser.parse_args()
    simulate = None if args.containers else args.task_seconds
    azurite = Azurite().start() if args.containers else None
    blob = CountingProxy(azurite.port) if azurite else None
    runs = []
    try:
        if blob:
            BlobServiceClient.from_connection_string(blob.connection_string).create_container(
                "omnibio"
            )
        with BatchEmulator(pools=(POOL,), simulate_seconds=simulate) as batch:
            for number in range(1, args.repeat + 1):
                run = run_scatter(batch, args, blob)
                runs.append(run)
                counts = run["counts"]
                print(
                    f"run {number}: {run['elapsed']:.1f} s, {counts['total']} Batch calls "
                    f"+ {sum(run['blob'].values())} blob calls ({run['per_task']:.2f} per task)"
                )
                for route, calls in sorted(counts["requests"].items(), key=lambda i: -i[1]):
                    print(f"  {calls:6d} calls {counts['bytes'].get(route, 0):10d} B  {route}")
                for method, calls in sorted(run["blob"].items()):
                    print(f"  {calls:6d} calls {'':10s}    blob {method}")
    finally:
        if blob:
            blob.stop()
        if azurite:
            azurite.stop()
    kind = "containers, results verified" if args.containers else f"simulated {simulate} s tasks"
    print(
        f"\n{args.tasks}-task scatter, {kind}, poll_seconds {args.poll_seconds}, "
        f"median [min-max] of {len(runs)} runs:"
    )
    print(f"  elapsed                 {summary([r['elapsed'] for r in runs], ' s')}")
    batch_calls = summary([r["batch_per_task"] for r in runs])
    print(f"  Batch calls per task    {batch_calls} (target <= {TARGET})")
    print(f"  all calls per task      {summary([r['per_task'] for r in runs])}")
    print(f"  polls                   {summary([r['polls'] for r in runs])}")
    print("  per poll                requests                    bytes")
    print(
        f"    changed tasks only    {summary([r['requests_per_poll'] for r in runs]):27s} "
        f"{summary([r['bytes_per_poll'] for r in runs], ' B')}"
    )
    print(
        f"    every started task    {summary([r['full_requests'] for r in runs]):27s} "
        f"{summary([r['full_bytes'] for r in runs], ' B')}  (state ne 'active', at the end)"
    )
    worst = max(r["batch_per_task"] for r in runs)
    sys.exit(0 if worst <= TARGET else 1)


if __name__ == "__main__":
    main()
