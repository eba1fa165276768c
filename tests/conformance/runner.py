"""Runs the WDL specification examples on a miniwdl container backend and judges the results.

    python -m tests.conformance.runner --backend docker_swarm -j 2 [--only 1.2/hello ...]
        [--baseline FILE] [--write-baseline FILE] [--results FILE] [--work-dir DIR]

Each example runs as a user would run it (``python -m WDL run``, ``--task`` for task examples)
with the backend chosen by MINIWDL__SCHEDULER__CONTAINER_BACKEND, in its own run directory.
How results are judged (docs/conformance.md has the reasoning):

* output and input keys are compared without their first component, the workflow/task name
  (several spec examples name it wrongly; that says nothing about a backend);
* a File/Directory output (an existing path in the run directory) matches the expected path by
  basename and, when the expected path names a data file, by content (trailing newlines aside);
* ``exclude_output(s)`` are not compared; outputs the example does not list are not compared;
* an expected failure passes when miniwdl fails (with an exit status in ``return_code`` when that
  is given); its failure signature (innermost error class and exit status) is recorded so a
  backend can be held to the reference's reason for failing, not just to failing.
"""

import argparse
import fnmatch
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from tests.conformance.spec_examples import Example, Spec, load_specs, write_spec
from tests.helpers import CONFORMANCE, miniwdl_env
from tests.preloaded import run_wdl

PASS, FAIL, INVALID, SKIPPED, TIMEOUT = "pass", "fail", "invalid", "skipped", "timeout"
DEFAULT_TIMEOUT = 300.0
TERM_GRACE_SECONDS = 60.0  # after SIGTERM, how long miniwdl gets to cancel what it started


@dataclass
class Result:
    id: str
    outcome: str  # pass | fail | invalid | skipped | timeout
    reason: str = ""
    seconds: float = 0.0
    run_dir: str | None = None
    signature: str | None = None  # of a failed run: innermost error class[:exit status]


@dataclass(frozen=True)
class Workspace:
    """Where examples, data files and run directories live (on a cloud backend: its shared FS)."""

    root: str
    spec_dirs: Mapping[str, str]  # version -> directory holding its .wdl and data files

    @classmethod
    def create(cls, root: str, specs: Sequence[Spec]) -> "Workspace":
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)
        return cls(root, {spec.version: write_spec(spec, root) for spec in specs})

    def run_dir(self, example: Example) -> str:
        return os.path.join(self.root, "runs", example.version, example.name)

    def inputs_file(self, example: Example) -> str:
        return os.path.join(self.root, "inputs", example.version, example.name + ".json")


# --- judging ---------------------------------------------------------------------------------


def strip_namespace(key: str) -> str:
    """``wf.call.out`` -> ``call.out``: the first component names the workflow/task."""
    return key.split(".", 1)[1] if "." in key and not key.startswith("#") else key


def failure_signature(error: Mapping[str, Any]) -> str:
    """Innermost error class of miniwdl's error JSON, with the task's exit status if any."""
    while isinstance(error.get("cause"), dict):
        error = error["cause"]
    signature = str(error.get("error", "unknown"))
    if "exit_status" in error:
        signature += f":{error['exit_status']}"
    return signature


def exit_status(error: Mapping[str, Any]) -> int | None:
    while True:
        if "exit_status" in error:
            return int(error["exit_status"])
        if not isinstance(error.get("cause"), dict):
            return None
        error = error["cause"]


def _within(path: str, directory: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)


def _text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as infile:
            return infile.read().rstrip("\n")
    except OSError:
        return None


def mismatch(expected: Any, actual: Any, run_dir: str, data_dir: str) -> str | None:
    """None when ``actual`` (miniwdl's output JSON value) matches ``expected``, else why not."""
    if (
        isinstance(actual, str)
        and os.path.isabs(actual)
        and os.path.exists(actual)
        and _within(actual, run_dir)
    ):
        if not isinstance(expected, str):
            return f"file {os.path.basename(actual)!r} where {expected!r} was expected"
        if os.path.basename(actual.rstrip("/")) != os.path.basename(expected.rstrip("/")):
            return f"file {os.path.basename(actual)!r} is not {expected!r}"
        data_file = os.path.join(data_dir, expected)
        comparable = not os.path.isabs(expected) and os.path.isfile(data_file)
        if comparable and os.path.isfile(actual) and _text(actual) != _text(data_file):
            return f"file {os.path.basename(actual)!r} differs from data file {expected!r}"
        return None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return None if expected is actual else f"{actual!r} != {expected!r}"
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return (
            None
            if math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
            else f"{actual!r} != {expected!r}"
        )
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{len(actual)} items where {len(expected)} were expected: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            why = mismatch(e, a, run_dir, data_dir)
            if why:
                return f"[{i}]: {why}"
        return None
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(expected) != set(actual):
            return f"keys {sorted(actual)} where {sorted(expected)} were expected"
        for key in expected:
            why = mismatch(expected[key], actual[key], run_dir, data_dir)
            if why:
                return f"[{key!r}]: {why}"
        return None
    return None if expected == actual else f"{actual!r} != {expected!r}"


def compare_outputs(
    example: Example, outputs: Mapping[str, Any], run_dir: str, data_dir: str
) -> list[str]:
    """Every expected, non-excluded output that is missing or differs."""
    actual = {strip_namespace(k): v for k, v in outputs.items()}
    excluded = set(example.excluded_outputs)
    problems = []
    for key, expected in example.outputs.items():
        name = strip_namespace(key)
        if key in excluded or name in excluded or any(name.endswith("." + x) for x in excluded):
            continue
        if name not in actual:
            problems.append(f"{key}: missing (outputs: {', '.join(sorted(actual)) or 'none'})")
            continue
        why = mismatch(expected, actual[name], run_dir, data_dir)
        if why:
            problems.append(f"{key}: {why}")
    return problems


def judge(
    example: Example, returncode: int, stdout: str, run_dir: str, data_dir: str
) -> tuple[str, str, str | None]:
    """(outcome, reason, failure signature) of one finished run."""
    try:
        document = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        document = {}
    if returncode == 0:
        if example.expect_fail:
            return FAIL, "succeeded but the spec expects it to fail", None
        problems = compare_outputs(example, document.get("outputs", {}), run_dir, data_dir)
        return (FAIL, "; ".join(problems), None) if problems else (PASS, "", None)
    error = document if "error" in document else {}
    signature = failure_signature(error) if error else f"exit{returncode}"
    message = str(_innermost(error).get("message", "")) if error else ""
    if not example.expect_fail:
        return FAIL, f"failed: {signature} {message}".strip(), signature
    codes = example.return_codes
    if codes is not None:
        status = exit_status(error)
        if status not in codes:
            return FAIL, f"failed with exit status {status}, expected {codes}", signature
    return PASS, f"failed as expected: {signature}", signature


def _innermost(error: Mapping[str, Any]) -> Mapping[str, Any]:
    while isinstance(error.get("cause"), dict):
        error = error["cause"]
    return error


# --- running ---------------------------------------------------------------------------------

_TASK_OR_IMPORT = re.compile(r"^\s*(task|import)\s", re.MULTILINE)


def reaches_backend(example: Example) -> bool:
    """Whether a run of ``example`` may start a task on the container backend. A document that
    defines no task and imports none cannot: miniwdl evaluates such a workflow itself, the same
    on every backend. (A task defined but not called still counts: the test errs on running.)"""
    return bool(_TASK_OR_IMPORT.search(example.source))


def command(example: Example, workspace: Workspace) -> list[str]:
    wdl = os.path.join(workspace.spec_dirs[example.version], example.name + ".wdl")
    argv = [sys.executable, "-m", "WDL", "run", wdl, "--input", workspace.inputs_file(example)]
    argv += ["--dir", workspace.run_dir(example) + "/.", "--error-json", "--verbose"]
    if example.kind == "task":
        argv += ["--task", example.target]
    return argv


def run_example(
    example: Example, workspace: Workspace, env: Mapping[str, str], timeout: float
) -> Result:
    if not example.runnable:
        why = example.problem or (
            f"type {example.kind}" if example.kind == "resource" else "priority ignore"
        )
        return Result(example.id, INVALID if example.problem else SKIPPED, why)
    run_dir = workspace.run_dir(example)
    inputs_file = workspace.inputs_file(example)
    shutil.rmtree(run_dir, ignore_errors=True)  # a reused work dir: start afresh
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    os.makedirs(os.path.dirname(inputs_file), exist_ok=True)
    with open(inputs_file, "w") as outfile:
        json.dump({strip_namespace(k): v for k, v in example.inputs.items()}, outfile, indent=2)
    data_dir = workspace.spec_dirs[example.version]
    started = time.monotonic()
    output = os.path.join(os.path.dirname(run_dir), example.name)
    finished = run_wdl(
        command(example, workspace)[3:], data_dir, env, output, timeout, TERM_GRACE_SECONDS
    )
    if finished.timed_out:
        return Result(
            example.id,
            TIMEOUT,
            f"no result after {timeout:.0f} s",
            time.monotonic() - started,
            run_dir,
        )
    seconds = time.monotonic() - started
    returncode, stdout = finished.returncode, finished.stdout
    outcome, reason, signature = judge(example, returncode, stdout, run_dir, data_dir)
    return Result(example.id, outcome, reason, seconds, run_dir, signature)


def run_examples(
    examples: Sequence[Example],
    workspace: Workspace,
    env: Mapping[str, str],
    jobs: int,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = False,
) -> list[Result]:
    """Run ``examples`` ``jobs`` at a time; results in the order of ``examples``."""
    lock = threading.Lock()
    done = [0]

    def one(example: Example) -> Result:
        result = run_example(example, workspace, env, timeout)
        if progress:
            with lock:
                done[0] += 1
                print(
                    f"[{done[0]}/{len(examples)}] {result.outcome:7} {result.seconds:6.1f}s {result.id}",
                    file=sys.stderr,
                    flush=True,
                )
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, examples))


def select(examples: Iterable[Example], patterns: Sequence[str]) -> list[Example]:
    """Examples whose id or name matches any of the glob ``patterns`` (all when none given)."""
    return [
        e
        for e in examples
        if not patterns
        or any(fnmatch.fnmatch(e.id, p) or fnmatch.fnmatch(e.name, p) for p in patterns)
    ]


def all_examples(conformance_dir: str = CONFORMANCE) -> tuple[list[Spec], list[Example]]:
    specs = load_specs(conformance_dir)
    return specs, [example for spec in specs for example in spec.examples]


def backend_env(backend: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its MINIWDL__ settings, the backend chosen, plus
    ``extra`` (a backend's own MINIWDL__ variables)."""
    return miniwdl_env(backend, env=dict(extra or {}))


# --- baseline --------------------------------------------------------------------------------


def miniwdl_version() -> str:
    from importlib.metadata import version

    return version("miniwdl")


def baseline_document(
    backend: str, results: Sequence[Result], jobs: int, seconds: float
) -> dict[str, Any]:
    passing = sorted(r.id for r in results if r.outcome == PASS)
    return {
        "backend": backend,
        "miniwdl_version": miniwdl_version(),
        "generated": time.strftime("%Y-%m-%d", time.gmtime()),
        "examples_run": len(results),
        "jobs": jobs,
        "seconds": round(seconds),
        "passing": passing,
        # why each passing expected-failure failed: a backend must fail them the same way
        "failure_signatures": {
            r.id: r.signature for r in results if r.outcome == PASS and r.signature
        },
    }


def load_baseline(path: str) -> dict[str, Any]:
    with open(path) as infile:
        return json.load(infile)


def regressions(
    baseline: Mapping[str, Any], results: Sequence[Result], scope: set[str] | None = None
) -> list[Result]:
    """Examples the baseline passes that did not pass here (or failed for another reason).

    ``scope``: only these ids are checked (a selection); by default every baseline id is, so
    one missing from the spec checkout counts too.
    """
    by_id = {r.id: r for r in results}
    signatures = baseline.get("failure_signatures", {})
    lost = []
    for example_id in baseline["passing"]:
        if scope is not None and example_id not in scope:
            continue
        result = by_id.get(example_id)
        if result is None:
            lost.append(Result(example_id, INVALID, "not in this spec checkout"))
        elif result.outcome != PASS:
            lost.append(result)
        elif example_id in signatures and result.signature != signatures[example_id]:
            reason = f"failed as expected but with {result.signature}, the reference with {signatures[example_id]}"
            lost.append(
                Result(result.id, FAIL, reason, result.seconds, result.run_dir, result.signature)
            )
    return lost


# --- reporting -------------------------------------------------------------------------------


def table(results: Sequence[Result], width: int = 110) -> str:
    lines = [f"{'example':48} {'outcome':8} {'secs':>6}  reason"]
    for r in results:
        reason = r.reason.replace("\n", " ")
        lines.append(f"{r.id:48} {r.outcome:8} {r.seconds:6.1f}  {reason[: max(20, width - 66)]}")
    return "\n".join(lines)


def summary(backend: str, results: Sequence[Result], seconds: float, jobs: int) -> str:
    counts = {
        k: sum(r.outcome == k for r in results) for k in (PASS, FAIL, TIMEOUT, INVALID, SKIPPED)
    }
    return (
        f"{backend}: {len(results)} examples: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[TIMEOUT]} timed out, "
        f"{counts[INVALID]} invalid, {counts[SKIPPED]} skipped in {seconds:.0f} s (-j {jobs})"
    )


def write_results(
    path: str, backend: str, results: Sequence[Result], seconds: float, jobs: int
) -> None:
    document = {
        "backend": backend,
        "miniwdl_version": miniwdl_version(),
        "seconds": round(seconds, 1),
        "jobs": jobs,
        "results": [asdict(r) for r in results],
    }
    with open(path, "w") as outfile:
        json.dump(document, outfile, indent=2)
        outfile.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], prog="python -m tests.conformance.runner"
    )
    parser.add_argument(
        "--backend", default="docker_swarm", help="miniwdl container backend (default docker_swarm)"
    )
    parser.add_argument(
        "-j", "--jobs", type=int, default=2, help="examples run at once (default 2)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="example ids or names, e.g. 1.2/hello '*_task'",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per example (default 300)"
    )
    parser.add_argument(
        "--conformance-dir", default=CONFORMANCE, help="the shared/conformance directory"
    )
    parser.add_argument(
        "--work-dir",
        help="where examples and run directories go (default: a new temporary directory)",
    )
    parser.add_argument(
        "--results", help="result JSON file (default: WORK_DIR/results-BACKEND.json)"
    )
    parser.add_argument(
        "--baseline", help="run only the examples this baseline passes and list regressions"
    )
    parser.add_argument(
        "--write-baseline", metavar="FILE", help="write the ids that passed as a baseline file"
    )
    parser.add_argument(
        "--cfg", help="miniwdl config file (default none); MINIWDL__* variables also apply"
    )
    args = parser.parse_args(argv)

    if not os.path.isdir(args.conformance_dir):
        parser.error(f"no conformance data at {args.conformance_dir}")
    specs, examples = all_examples(args.conformance_dir)
    baseline = load_baseline(args.baseline) if args.baseline else None
    if baseline:
        wanted = set(baseline["passing"])
        examples = [e for e in examples if e.id in wanted]
    examples = select(examples, args.only)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="omnibio-conformance-")
    workspace = Workspace.create(work_dir, specs)
    extra = {k: v for k, v in os.environ.items() if k.startswith("MINIWDL__")}
    if args.cfg:
        extra["MINIWDL_CFG"] = os.path.abspath(args.cfg)
    env = backend_env(args.backend, extra)
    env["MINIWDL__SCHEDULER__CONTAINER_BACKEND"] = args.backend

    print(
        f"{len(examples)} examples on {args.backend}, -j {args.jobs}, work dir {work_dir}",
        file=sys.stderr,
    )
    started = time.monotonic()
    results = run_examples(examples, workspace, env, args.jobs, args.timeout, progress=True)
    seconds = time.monotonic() - started

    print(table(results))
    print(summary(args.backend, results, seconds, args.jobs))
    results_path = args.results or os.path.join(work_dir, f"results-{args.backend}.json")
    write_results(results_path, args.backend, results, seconds, args.jobs)
    print(f"results: {results_path}")
    if args.write_baseline:
        with open(args.write_baseline, "w") as outfile:
            json.dump(
                baseline_document(args.backend, results, args.jobs, seconds), outfile, indent=2
            )
            outfile.write("\n")
        print(f"baseline: {args.write_baseline}")
    if baseline:
        lost = regressions(baseline, results, {e.id for e in examples} if args.only else None)
        for r in lost:
            print(f"REGRESSION {r.id}: {r.outcome}: {r.reason} ({r.run_dir})")
        return 1 if lost else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
