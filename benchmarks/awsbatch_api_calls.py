"""AWS Batch API calls per task of omnibio_awsbatch, against moto server on this host.

    python benchmarks/awsbatch_api_calls.py [--tasks 100]

Runs a trivial scatter in this process (miniwdl's CLI, so configuration and plugins load as for a
user) with the engine's default poll_seconds and submit_rate, counts every Batch call through
botocore's ``before-call.batch.*`` event on each client the process creates, and prints the calls
per task (target <= 1.5; miniwdl-aws spends >= 3: a job definition per task, then DescribeJobs
per job). moto runs the jobs as containers on the local dockerd.
"""

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time

import botocore.session

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.emulators.moto_server import MotoBatch, MotoServer  # noqa: E402

SCATTER = """
version 1.1
workflow bench {{
  scatter (i in range({tasks})) {{ call trivial {{ input: i }} }}
}}
task trivial {{
  input {{ Int i }}
  command <<< echo ~{{i}} >>>
  runtime {{ docker: "ubuntu:22.04" cpu: 1 omnibio_result_check: "off" }}
}}
"""

calls: "collections.Counter[str]" = collections.Counter()


def count_batch_calls() -> None:
    """Hook every botocore client this process creates from now on."""
    create_client = botocore.session.Session.create_client

    def counting_create_client(self, service_name, *args, **kwargs):
        client = create_client(self, service_name, *args, **kwargs)
        if service_name == "batch":
            client.meta.events.register(
                "before-call.batch.*", lambda model, **_: calls.update([model.name])
            )
        return client

    botocore.session.Session.create_client = counting_create_client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="omnibio-aws-bench-")
    os.chmod(work, 0o755)
    server = MotoServer(os.path.join(work, "moto.log")).start()
    try:
        account = MotoBatch(server).create()
        wdl = os.path.join(work, "scatter.wdl")
        with open(wdl, "w") as outfile:
            outfile.write(SCATTER.format(tasks=args.tasks))
        os.environ.update(server.env())
        os.environ.update(
            MINIWDL_CFG="/dev/null",
            MINIWDL__SCHEDULER__CONTAINER_BACKEND="omnibio_awsbatch",
            MINIWDL__SCHEDULER__TASK_CONCURRENCY=str(args.tasks),
            MINIWDL__OMNIBIO_AWSBATCH__JOB_QUEUE=account.queue,
            MINIWDL__OMNIBIO_AWSBATCH__HOST_PATH=work,
            MINIWDL__OMNIBIO_AWSBATCH__MOUNT_PATH=work,
        )
        count_batch_calls()
        from WDL import CLI

        started = time.monotonic()
        try:
            CLI.main(["run", wdl, "--dir", work, "--no-cache"])
        except SystemExit as exn:
            if exn.code:
                sys.exit(f"miniwdl run failed ({exn.code}); see {work}")
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    total = sum(calls.values())
    per_task = total / args.tasks
    breakdown = ", ".join(f"{name} {count}" for name, count in calls.most_common())
    print(
        f"omnibio_awsbatch: {per_task:.2f} Batch API calls per task ({total} for {args.tasks} "
        f"tasks in {elapsed:.0f} s: {breakdown}; target <= 1.5)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
