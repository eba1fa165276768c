"""API calls per task of a scatter on omnibio_awsbatch (array jobs, and one job per attempt) and
on miniwdl-aws, against the same moto server on this host.

    python benchmarks/awsbatch_api_calls.py [--tasks 1000] [--repeats 3] [--sides ...]

Each run gets a fresh moto server (moto's DescribeJobs slows with every job it holds) and runs
the scatter through miniwdl's CLI as a user would: the engine's default poll_seconds,
describe_seconds and submit_rate, task_concurrency = tasks, results.json uploaded by the tool
runtime and verified.
Every request reaches moto through the proxy of tests/emulators/moto_proxy.py, which counts it
by service and operation, retries and throttled answers included. The sides run interleaved,
``--repeats`` (at least 3) times each. Every run is reported, a failed one with its cause (miniwdl
failed, or fewer results verified than tasks) and its directory kept; the table shows, per side,
how many runs succeeded and the median and range of those.

"ready to submitted": from the first task miniwdl reports ready to the last job submitted, read
from the run's log. miniwdl-aws (its ``aws_batch_job_no_efs`` backend, from its own virtualenv:
``--miniwdl-aws-python``) has no result contract: its tasks only echo, and it reads nothing back.
"""

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.emulators.moto_server import MotoBatch, MotoServer  # noqa: E402

SCATTER = """
version 1.1
workflow bench {{
  scatter (i in range({tasks})) {{ call echo {{ input: i }} }}
}}
task echo {{
  input {{ Int i }}
  command <<<
    if [ -n "${{RESULT_URI:-}}" ]; then python3 -m miniwdl_omnibio.runtime.echo_test; fi
    echo ~{{i}}
  >>>
  runtime {{ docker: "omnibio/runtime:latest" cpu: 1 }}
}}
"""
SIDES = ("arrays", "one-job-per-attempt", "miniwdl-aws")
READY = re.compile(r"^(\S+ \S+) .* NOTICE ready :: job: \"call-echo-")
SUBMITTED = re.compile(r"^(\S+ \S+) .* (submitted :: engine: |AWS Batch job submitted)")


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def ready_to_submitted(log_path: str) -> float:
    """Seconds from the first task ready to the last job submitted, from a miniwdl log."""
    ready, submitted = [], []
    with open(log_path, errors="replace") as log:
        for line in log:
            if match := READY.match(line):
                ready.append(_stamp(match.group(1)))
            elif match := SUBMITTED.match(line):
                submitted.append(_stamp(match.group(1)))
    return max(submitted) - min(ready)


def run_once(side: str, tasks: int, miniwdl_aws_python: str) -> dict:
    """One run's figures; ``failed`` says why a run failed (its directory is then kept)."""
    work = tempfile.mkdtemp(prefix="omnibio-aws-bench-")
    os.chmod(work, 0o755)
    server = MotoServer(os.path.join(work, "moto.log")).start()
    try:
        # a managed compute environment: moto runs at most its maxvCpus of jobs at once, as Batch
        account = MotoBatch(server, max_vcpus=32).create()
        wdl = os.path.join(work, "scatter.wdl")
        with open(wdl, "w") as outfile:
            outfile.write(SCATTER.format(tasks=tasks))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIWDL__")}
        env.update(server.env(), MINIWDL_CFG="/dev/null")
        env["MINIWDL__SCHEDULER__TASK_CONCURRENCY"] = str(tasks)
        python = sys.executable
        if side == "miniwdl-aws":
            python = miniwdl_aws_python
            env.update(
                MINIWDL__SCHEDULER__CONTAINER_BACKEND="aws_batch_job_no_efs",
                MINIWDL__AWS__TASK_QUEUE=account.queue,
                MINIWDL__FILE_IO__ROOT=work,
            )
        else:
            env.update(
                MINIWDL__SCHEDULER__CONTAINER_BACKEND="omnibio_awsbatch",
                MINIWDL__OMNIBIO__RESULT_URI_PREFIX=f"s3://{account.bucket}/results",
                MINIWDL__OMNIBIO_AWSBATCH__JOB_QUEUE=account.queue,
                MINIWDL__OMNIBIO_AWSBATCH__HOST_PATH=work,
                MINIWDL__OMNIBIO_AWSBATCH__MOUNT_PATH=work,
                MINIWDL__OMNIBIO_AWSBATCH__ARRAY_JOBS=str(side == "arrays").lower(),
                # the job containers' tool runtime reaches moto S3 with the launcher's settings
                MINIWDL__TASK_RUNTIME__ENV='{"AWS_ENDPOINT_URL": null, "AWS_ACCESS_KEY_ID": null,'
                ' "AWS_SECRET_ACCESS_KEY": null, "AWS_DEFAULT_REGION": null}',
            )
        started = time.monotonic()
        proc = subprocess.run(
            [python, "-m", "WDL", "run", wdl, "--dir", work, "--verbose"],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - started
        assert server.proxy is not None
        calls = collections.Counter(server.proxy.calls)
    finally:
        server.stop()
    failed = failure(side, tasks, proc.returncode, proc.stderr)
    runs = [d for d in os.listdir(work) if d[:8].isdigit()]
    timing = float("nan")
    if runs and not failed:
        timing = ready_to_submitted(os.path.join(work, runs[0], "workflow.log"))
    if failed:
        failed += f"; see {work}"
    else:
        shutil.rmtree(work, ignore_errors=True)
    by_service: collections.Counter[str] = collections.Counter()
    for name, count in calls.items():
        by_service[name.split()[0]] += count
    job_uploads = calls["s3 PUT"]  # the tool runtime inside each job; the rest is the launcher's
    return {
        "failed": failed,
        "batch": by_service["batch"] / tasks,
        "s3 (launcher)": (by_service["s3"] - job_uploads) / tasks,
        "logs": by_service["logs"] / tasks,
        "ready to submitted (s)": timing,
        "wall (s)": elapsed,
        "calls": calls,
    }


def failure(side: str, tasks: int, returncode: int, stderr: str) -> str:
    """Why a run failed, or "": miniwdl's exit status, then (omnibio) every result verified, as
    the plugin logs it for each task."""
    if returncode:
        return f"miniwdl run exited {returncode}"
    verified = stderr.count("result verified")
    if side != "miniwdl-aws" and verified != tasks:
        return f"{verified} of {tasks} results verified"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--miniwdl-aws-python", default="/tmp/mwaws/bin/python")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (a median of fewer says little)")
    sides = [s for s in args.sides.split(",") if s]
    if "miniwdl-aws" in sides and not os.path.exists(args.miniwdl_aws_python):
        sys.exit(
            f"miniwdl-aws: no {args.miniwdl_aws_python}; create it with python -m venv and "
            "pip install miniwdl==1.16.0 miniwdl-aws==0.12.2 (or leave out --sides miniwdl-aws)"
        )
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for repeat in range(args.repeats):
        for side in sides:  # interleaved: a drifting machine load hits every side alike
            result = run_once(side, args.tasks, args.miniwdl_aws_python)
            results[side].append(result)
            outcome = f"FAILED: {result['failed']}" if result["failed"] else "ok"
            print(
                f"run {repeat + 1}/{args.repeats} {side}: {outcome}; {result['batch']:.3f} Batch "
                f"calls per task, {result['ready to submitted (s)']:.1f} s ready to submitted, "
                f"{result['wall (s)']:.0f} s",
                flush=True,
            )
    figures = ("batch", "s3 (launcher)", "logs", "ready to submitted (s)", "wall (s)")
    print(f"\n{args.tasks} tasks, {args.repeats} interleaved runs per side: median [min - max]")
    print("of the runs that succeeded; every run, failed ones included, is listed above")
    print(f"{'':28}{'succeeded':>10}" + "".join(f"{f:>26}" for f in figures))
    for side, runs in results.items():
        good = [r for r in runs if not r["failed"]]
        cells = [f"{len(good)}/{len(runs)}"]
        for figure in figures:
            values = [r[figure] for r in good]
            cells.append(
                f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"
                if values
                else "-"
            )
        print(f"{side:28}{cells[0]:>10}" + "".join(f"{c:>26}" for c in cells[1:]))
    print("\nCalls of the last run of each side (per task), retries included:")
    for side, runs in results.items():
        calls = runs[-1]["calls"]
        print(
            f"  {side}: " + ", ".join(f"{n} {c / args.tasks:.3f}" for n, c in sorted(calls.items()))
        )


if __name__ == "__main__":
    main()
