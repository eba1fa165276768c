"""REST calls and poll cost of a scatter on omnibio_azurebatch, this engine beside its former
self, counted at the services.

    python benchmarks/azurebatch_api_calls.py                      # 1,000 simulated tasks
    python benchmarks/azurebatch_api_calls.py --containers --tasks 50
    python benchmarks/azurebatch_api_calls.py --former ''           # this engine only

Runs the scatter with miniwdl against the local Batch emulator --repeat times (default 3) on each
engine, the runs interleaved (this, former, this, former...) so a change of machine load falls on
both: "this" is the engine of this checkout; "former" is the package at git revision --former
(default fd0d123^, the last engine that polled every started task with ``state ne 'active'``
instead of the tasks changed since the previous poll), taken from git and put first on the run's
PYTHONPATH. Every request the services answer is counted by the emulator (retries included, by
route, with the bytes of the answers), not by the engine; the target (<= 1.5 Batch calls per task)
leaves out the blob calls of result checking. By default tasks are simulated (they succeed after
--task-seconds without a container), so a thousand fit on this machine; --containers runs each on
dockerd with the tool runtime, which uploads results.json to Azurite, and miniwdl verifies it as a
user runs it (blob requests are counted by a proxy in front of Azurite). Every run is printed,
failed ones too; the medians [min-max] per engine are of its runs that succeeded, and the count of
failed runs is printed beside them (any failed run makes the exit status 1).

No other miniwdl backend for Azure Batch runs against this emulator.
"""

import argparse
import collections
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from azure.storage.blob import BlobServiceClient  # noqa: E402

from tests.emulators.azurebatch_emulator import BatchEmulator  # noqa: E402
from tests.emulators.azurite import ACCOUNT, ACCOUNT_KEY, Azurite  # noqa: E402

TARGET = 1.5
FORMER = "fd0d123^"
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


def package_at(revision: str, into: str) -> str:
    """A directory holding miniwdl_omnibio as it was at git ``revision``, to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", "--format=tar", revision, "miniwdl_omnibio"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_scatter(
    batch: BatchEmulator,
    args: argparse.Namespace,
    blob: CountingProxy | None,
    package: str,
) -> dict[str, Any]:
    """One miniwdl run of the scatter with the miniwdl_omnibio found in ``package``."""
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
        PYTHONPATH=os.pathsep.join([package, *filter(None, [env.get("PYTHONPATH")])]),
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
    counts = batch.counts()
    requests = counts["requests"].get(LIST_TASKS, 0)
    polls = max(requests - counts["next_pages"].get(LIST_TASKS, 0), 1)  # first pages
    lines = proc.stderr.strip().splitlines()
    result = {
        "returncode": proc.returncode,
        "error": lines[-1][-300:] if proc.returncode and lines else "",
        "elapsed": elapsed,
        "counts": counts,
        "blob": dict(blob.counts) if blob else {},
        "blob_bytes": blob.bytes if blob else 0,
        "polls": polls,
        "requests_per_poll": requests / polls,
        "bytes_per_poll": counts["bytes"].get(LIST_TASKS, 0) / polls,
    }
    result["batch_per_task"] = counts["total"] / args.tasks
    result["per_task"] = (counts["total"] + sum(result["blob"].values())) / args.tasks
    return result


def summary(values: list[float], unit: str = "") -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):,.2f}{unit} [{min(values):,.2f}-{max(values):,.2f}]"


def print_run(number: int, engine: str, run: dict[str, Any]) -> None:
    counts = run["counts"]
    outcome = f"FAILED (exit {run['returncode']}: {run['error']})" if run["returncode"] else "ok"
    print(
        f"run {number} {engine}: {outcome}, {run['elapsed']:.1f} s, {counts['total']} Batch calls "
        f"+ {sum(run['blob'].values())} blob calls ({run['per_task']:.2f} per task)"
    )
    for route, calls in sorted(counts["requests"].items(), key=lambda i: -i[1]):
        print(f"  {calls:6d} calls {counts['bytes'].get(route, 0):10d} B  {route}")
    for method, calls in sorted(run["blob"].items()):
        print(f"  {calls:6d} calls {'':10s}    blob {method}")


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
    parser.add_argument(
        "--former",
        default=FORMER,
        help=f"git revision of the former engine ('' for none; {FORMER})",
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="omnibio_azb_engines_")
    engines = {"this": REPO}
    if args.former:
        engines["former"] = package_at(args.former, os.path.join(work, "former"))
    simulate = None if args.containers else args.task_seconds
    azurite = Azurite().start() if args.containers else None
    blob = CountingProxy(azurite.port) if azurite else None
    runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in engines}
    try:
        if blob:
            BlobServiceClient.from_connection_string(blob.connection_string).create_container(
                "omnibio"
            )
        with BatchEmulator(pools=(POOL,), simulate_seconds=simulate) as batch:
            for number in range(1, args.repeat + 1):
                for engine, package in engines.items():  # interleaved
                    run = run_scatter(batch, args, blob, package)
                    runs[engine].append(run)
                    print_run(number, engine, run)
    finally:
        if blob:
            blob.stop()
        if azurite:
            azurite.stop()
        shutil.rmtree(work, ignore_errors=True)
    kind = "containers, results verified" if args.containers else f"simulated {simulate} s tasks"
    print(
        f"\n{args.tasks}-task scatter, {kind}, poll_seconds {args.poll_seconds}: median [min-max]"
        f" of the runs that succeeded (former = {args.former or 'not run'})"
    )
    for engine, all_runs in runs.items():
        done = [r for r in all_runs if not r["returncode"]]
        print(f"  {engine}: {len(done)} of {len(all_runs)} runs succeeded")
        print(f"    elapsed                 {summary([r['elapsed'] for r in done], ' s')}")
        batch_calls = summary([r["batch_per_task"] for r in done])
        print(f"    Batch calls per task    {batch_calls} (target <= {TARGET})")
        print(f"    all calls per task      {summary([r['per_task'] for r in done])}")
        print(f"    polls                   {summary([r['polls'] for r in done])}")
        print(f"    requests per poll       {summary([r['requests_per_poll'] for r in done])}")
        print(f"    bytes per poll          {summary([r['bytes_per_poll'] for r in done], ' B')}")
    failed = any(r["returncode"] for all_runs in runs.values() for r in all_runs)
    worst = max((r["batch_per_task"] for r in runs["this"]), default=TARGET + 1)
    sys.exit(0 if worst <= TARGET and not failed else 1)


if __name__ == "__main__":
    main()
