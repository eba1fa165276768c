"""Per-task overhead of omnibio_docker, side by side with a Docker-SDK loop, a plain `docker run`
loop and docker_swarm; the launcher's memory and CPU on a large scatter; and the cost of a large
input (it is bound in place, so it should cost nothing).

    python benchmarks/docker_scatter.py [--tasks 40] [--rounds 5] [--large 400] [--skip-swarm]

Every side runs the same trivial tasks (`echo i` in ubuntu:22.04), PARALLEL (2) at a time, and
each column is the wall time of one process started from here, as a user would start it:

- `docker run --rm loop`: per task one `docker run --rm` (the CLI's own start, the API calls it
  makes, a network namespace of its own on the default bridge, no bind mount), from 2 threads.
- `Docker SDK loop`: a Python process (interpreter start, `import docker`) that makes one
  container holding a network namespace on the default bridge, then per task one create, start,
  wait and remove through the Docker API, joined to that namespace, with one bind mount, from 2
  threads; the floor for any launcher on this host. `... in-process` is the same loop inside
  this process (no interpreter start, docker imported already): how it was measured before.
- `miniwdl alone (0 tasks)`: `miniwdl run` of a scatter over nothing: miniwdl's own start
  (interpreter, imports, building its WDL parser, typechecking), which every backend pays.
- `omnibio_docker`, `docker_swarm`: `miniwdl run` of the scatter with [scheduler]
  task_concurrency = 2: the interpreter start, miniwdl's imports, parsing and typechecking the
  WDL, its per-task work (task directories, command and stdout/stderr files, outputs, logs) and
  the backend's (omnibio_docker: a sandbox container for the run's network namespace, per task
  create, start and remove with the command's bind mounts and its exit record, the end pushed by
  the daemon's die events; the run's trace written at exit).

Python processes started here write and read bytecode as Python does by default, even where
PYTHONDONTWRITEBYTECODE is set (as in this project's test environment): an installed package is
byte-compiled by pip, but an editable one under that variable is compiled from source on every
run (this plugin: about 50 ms of a 40-task run on the 2-core test machine), which no user's
installation pays. The warm-up run writes the bytecode.

Every side first runs once untimed (images, page cache, swarm init warm), then each is measured
--rounds times, interleaved with the order rotated per round so drift on the machine hits all
alike. Every run is printed, failed ones too (the medians are of the runs that succeeded); then
the ratios of the medians against the targets (omnibio_docker <= 1.15x the SDK loop, <= 0.5x the
`docker run` loop, <= 0.2x docker_swarm; a 2 GiB input <= 1.2x a 1 KiB one), each with the
median of the ratios within a round beside it (drift that spans rounds cancels out); miniwdl's
WDL.load of the scatter, with and without lark's parser cache (miniwdl builds its parser in
every process and asks for no cache); where the time of the SDK loop's and omnibio_docker's
runs went, from the daemon's own events (until the first container, per task container create
to start, start to die and a die to the next create, and the last die to the run's end); the
launcher's peak RSS and CPU seconds on a --large scatter; and the raw samples as JSON.
"""

import argparse
import concurrent.futures
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import docker

IMAGE = "ubuntu:22.04"
PARALLEL = 2  # tasks at a time in the loops (cpu 1 each on the 2-core test machine)
SCATTER = """
version 1.1
workflow bench {{
  scatter (i in range({tasks})) {{ call trivial {{ input: i }} }}
}}
task trivial {{
  input {{ Int i }}
  command <<< echo ~{{i}} >>>
  output {{ String out = read_string(stdout()) }}
  runtime {{ docker: "{image}" cpu: 1 }}
}}
"""
ONE_INPUT = """
version 1.1
task touch_input {{
  input {{ File big }}
  command <<< test -f ~{{big}} >>>
  runtime {{ docker: "{image}" cpu: 1 }}
}}
"""


@dataclass
class Sample:
    seconds: float
    error: str | None = None  # a failed run, in its own words
    cpu_seconds: float | None = None  # the launcher's user + system time (miniwdl runs)
    max_rss_mib: float | None = None  # the launcher's peak resident memory (miniwdl runs)
    phases: dict[str, float] | None = None  # daemon_phases of the run (the timed scatter sides)


Side = Callable[[], Sample]
# `miniwdl run` of a scatter over no element: the interpreter, miniwdl's imports, parsing and
# typechecking the WDL, and its run directory; no task, so no backend starts
MINIWDL_ALONE = "miniwdl alone (0 tasks)"
# where a run's time went (daemon_phases), in the order of a run
PHASES = (
    "first container",
    "create to start",
    "start to die",
    "die to next create",
    "last die to end",
)


def python_env() -> dict[str, str]:
    """The environment of the Python processes started here: bytecode as by default."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def miniwdl(wdl: str, args: list[str], backend: str, directory: str) -> Sample:
    """One `miniwdl run`, with the process's own rusage (wait4: this child only)."""
    env = {k: v for k, v in python_env().items() if not k.startswith("MINIWDL__")}
    env.update(
        MINIWDL_CFG="/dev/null",
        MINIWDL__SCHEDULER__CONTAINER_BACKEND=backend,
        MINIWDL__SCHEDULER__TASK_CONCURRENCY=str(PARALLEL),
    )
    with tempfile.TemporaryFile("w+") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "WDL", "run", wdl, *args, "--dir", directory, "--no-cache"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        log.seek(0)
        error = log.read()[-3000:] if proc.returncode else None
    return Sample(
        elapsed,
        error,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,
    )


def daemon_phases(since: float, until: float) -> dict[str, float]:
    """Where one run's time went, from the daemon's own events of its containers: seconds from
    the run's start to its first container's create (the sandbox, or the SDK loop's holder), the
    medians over the task containers of create to start, start to die and a die to the next
    create, and from the last task's die to the run's end."""
    api = docker.APIClient(version="auto")
    seen: dict[str, dict[str, float]] = {}
    try:
        for event in api.events(
            since=f"{since:.9f}", until=f"{until:.9f}", filters={"type": "container"}, decode=True
        ):
            if event.get("Action") in ("create", "start", "die"):
                seen.setdefault(event["id"], {})[event["Action"]] = event["timeNano"] / 1e9
    finally:
        api.close()
    ran = sorted((t for t in seen.values() if len(t) == 3), key=lambda t: t["create"])
    if len(ran) < 3:
        return {}
    tasks, creates = ran[1:], sorted(t["create"] for t in ran)
    dies = sorted(t["die"] for t in tasks)
    figures = (
        ran[0]["create"] - since,
        statistics.median(t["start"] - t["create"] for t in tasks),
        statistics.median(t["die"] - t["start"] for t in tasks),
        statistics.median(next((c - d for c in creates if c > d), 0.0) for d in dies[:-PARALLEL]),
        until - dies[-1],
    )
    return dict(zip(PHASES, figures, strict=True))


def with_phases(side: Side) -> Side:
    """``side``, its Sample carrying the daemon's account of the run (``daemon_phases``)."""

    def run() -> Sample:
        since = time.time()  # the daemon's clock: the same host
        sample = side()
        sample.phases = daemon_phases(since, since + sample.seconds)
        return sample

    return run


def phase_table(samples: dict[str, list[Sample]]) -> list[str]:
    """The medians over each side's runs of its daemon_phases, one line per side."""
    lines = ["  " + f"{'':<28}" + "".join(f"{name:>20}" for name in PHASES)]
    for side, runs in samples.items():
        phases = [s.phases for s in runs if s.phases and s.error is None]
        if phases:
            cells = [statistics.median(p[name] for p in phases) * 1000 for name in PHASES]
            lines.append(f"  {side:<28}" + "".join(f"{cell:>17.0f} ms" for cell in cells))
    return lines


def timed(run: Callable[[], None]) -> Sample:
    started = time.monotonic()
    try:
        run()
    except Exception as exn:
        return Sample(time.monotonic() - started, f"{type(exn).__name__}: {str(exn)[:500]}")
    return Sample(time.monotonic() - started)


def run_loop(tasks: int) -> None:
    def one(i: int) -> None:
        subprocess.run(
            ["docker", "run", "--rm", IMAGE, "echo", str(i)], check=True, capture_output=True
        )

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, range(tasks)))


def sdk_loop(tasks: int, work: str) -> None:
    """create, start, wait, remove per task, as a lean launcher would: one network namespace
    held by a container made for the run, one bind mount (a work directory)."""
    api = docker.APIClient(version="auto")
    workdir = tempfile.mkdtemp(dir=work, prefix="sdk_")
    holder = api.create_container(
        IMAGE,
        ["sleep", "infinity"],
        host_config=api.create_host_config(network_mode="bridge", init=True),
    )["Id"]
    api.start(holder)

    def one(i: int) -> None:
        container = api.create_container(
            IMAGE,
            ["echo", str(i)],
            working_dir="/w",
            host_config=api.create_host_config(
                network_mode=f"container:{holder}",
                mounts=[docker.types.Mount("/w", workdir, type="bind")],
            ),
        )["Id"]
        try:
            api.start(container)
            exit_code = api.wait(container)["StatusCode"]
            if exit_code:
                raise RuntimeError(f"task {i} exited {exit_code}")
        finally:
            api.remove_container(container, force=True)

    try:
        with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(one, range(tasks)))
    finally:
        api.remove_container(holder, force=True)
        api.close()


def sdk_process(tasks: int, work: str) -> None:
    """The SDK loop in a Python process of its own (``--sdk-loop``), as a launcher script runs."""
    command = [sys.executable, os.path.abspath(__file__), "--sdk-loop", str(tasks), work]
    subprocess.run(command, check=True, capture_output=True, env=python_env())


def measure(sides: dict[str, Side], rounds: int) -> dict[str, list[Sample]]:
    """One untimed warm-up run of each side, then ``rounds`` timed runs of each, interleaved
    with the order rotated every round; each run is printed as it ends."""
    for name, side in sides.items():
        warm = side()
        print(f"  warm-up {name}: {warm.seconds:.2f} s" + (" FAILED" if warm.error else ""))
    names = list(sides)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            sample = sides[name]()
            samples[name].append(sample)
            state = "FAILED: " + sample.error.strip().splitlines()[-1] if sample.error else "ok"
            print(f"  round {round_number + 1} {name:<28} {sample.seconds:7.2f} s  {state}")
    return samples


def ok_seconds(samples: list[Sample]) -> list[float]:
    return [s.seconds for s in samples if s.error is None]


def summary(name: str, samples: list[Sample], per: int = 0) -> str:
    times = ok_seconds(samples)
    failed = len(samples) - len(times)
    if not times:
        return f"  {name:<28} every run failed ({failed})"
    median = statistics.median(times)
    line = f"  {name:<28} {median:7.2f} s   spread {min(times):.2f}..{max(times):.2f} s"
    line += f"   {median / per * 1000:6.0f} ms/task" if per else ""
    return line + (f"   ({failed} failed)" if failed else "")


def ratio(label: str, samples: dict[str, list[Sample]], a: str, b: str, target: str) -> str:
    first, second = ok_seconds(samples[a]), ok_seconds(samples[b])
    if not first or not second:
        return f"  {label:<36}   n/a   (target {target}; no successful run to compare)"
    value = statistics.median(first) / statistics.median(second)
    # the same rounds' runs side by side: drift that spans rounds cancels out of each pair
    pairs = zip(samples[a], samples[b], strict=True)  # every side runs every round
    paired = [x.seconds / y.seconds for x, y in pairs if not (x.error or y.error)]
    per_round = f"; per round {statistics.median(paired):.2f}x median" if paired else ""
    return f"  {label:<36} {value:5.2f}x   (target {target}{per_round})"


# One process's WDL.load of argv[1], in seconds; with argv[2], lark builds the parser through
# its cache file there (lark.Lark(cache=...)), which miniwdl does not ask for.
LOAD = """
import sys, time
if sys.argv[2]:
    import lark
    class Cached(lark.Lark):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, cache=sys.argv[2], **kwargs)
    lark.Lark = Cached
import WDL
started = time.perf_counter()
WDL.load(sys.argv[1])
print(time.perf_counter() - started)
"""


def load_seconds(wdl: str, cache: str = "", times: int = 3) -> float:
    """The median over ``times`` processes of WDL.load, after one warm-up that writes the cache
    file if any: miniwdl builds its parser from the grammar, then parses and typechecks, the
    largest part of its start before any plugin loads."""
    command = [sys.executable, "-c", LOAD, wdl, cache]
    outputs = [
        subprocess.run(command, check=True, capture_output=True, env=python_env()).stdout
        for _ in range(times + 1)
    ]
    return statistics.median(float(out) for out in outputs[1:])


def scatter_wdl(work: str, tasks: int) -> str:
    wdl = os.path.join(work, f"scatter{tasks}.wdl")
    with open(wdl, "w") as outfile:
        outfile.write(SCATTER.format(tasks=tasks, image=IMAGE))
    return wdl


def scatter(args: argparse.Namespace, work: str) -> dict[str, list[Sample]]:
    wdl = scatter_wdl(work, args.tasks)
    loop, sdk, inline = "docker run --rm loop", "Docker SDK loop", "Docker SDK loop in-process"
    empty = scatter_wdl(work, 0)
    sides: dict[str, Side] = {
        loop: lambda: timed(lambda: run_loop(args.tasks)),
        sdk: with_phases(lambda: timed(lambda: sdk_process(args.tasks, work))),
        inline: lambda: timed(lambda: sdk_loop(args.tasks, work)),
        "omnibio_docker": with_phases(lambda: miniwdl(wdl, [], "omnibio_docker", work)),
        MINIWDL_ALONE: lambda: miniwdl(empty, [], "omnibio_docker", work),
    }
    if not args.skip_swarm:
        sides["docker_swarm"] = lambda: miniwdl(wdl, [], "docker_swarm", work)
    print(f"{args.tasks}-task trivial scatter, cpu 1 each, {PARALLEL} at a time:")
    samples = measure(sides, args.rounds)
    print(f"median of {args.rounds} interleaved runs after one warm-up run each:")
    for name, times in samples.items():
        print(summary(name, times, 0 if name == MINIWDL_ALONE else args.tasks))
    print(ratio("omnibio_docker / Docker SDK loop", samples, "omnibio_docker", sdk, "<= 1.15x"))
    print(ratio("omnibio_docker / ... in-process", samples, "omnibio_docker", inline, "<= 1.15x"))
    print(ratio("omnibio_docker / docker run loop", samples, "omnibio_docker", loop, "<= 0.5x"))
    alone, sdk_times = ok_seconds(samples[MINIWDL_ALONE]), ok_seconds(samples[sdk])
    if alone and sdk_times:
        share = statistics.median(ok_seconds(samples["omnibio_docker"])) - statistics.median(alone)
        print(
            f"  omnibio_docker less miniwdl alone: {share:.2f} s, "
            f"{share / statistics.median(sdk_times):.2f}x the SDK loop (no target: the backend's "
            "share, as miniwdl's own start is the same on every backend)"
        )
    plain, cached = load_seconds(wdl), load_seconds(wdl, os.path.join(work, "lark.cache"))
    print(
        f"  of miniwdl's start, WDL.load (parser built, then parse and typecheck): "
        f"{plain * 1000:.0f} ms; with lark's parser cache, which miniwdl does not use: "
        f"{cached * 1000:.0f} ms"
    )
    print("where a run's time went, from the daemon's events (medians of the runs):")
    print("\n".join(phase_table(samples)))
    if "docker_swarm" in samples:
        print(
            ratio(
                "omnibio_docker / docker_swarm",
                samples,
                "omnibio_docker",
                "docker_swarm",
                "<= 0.2x",
            )
        )
    return samples


def launcher_cost(args: argparse.Namespace, work: str) -> Sample:
    sample = miniwdl(scatter_wdl(work, args.large), [], "omnibio_docker", work)
    state = "FAILED: " + sample.error.strip().splitlines()[-1] if sample.error else "ok"
    print(
        f"{args.large}-task scatter on omnibio_docker: {sample.seconds:.1f} s ({state}); the "
        f"miniwdl process: peak RSS {sample.max_rss_mib:.0f} MiB, CPU {sample.cpu_seconds:.1f} s"
    )
    return sample


def input_size(args: argparse.Namespace, work: str) -> dict[str, list[Sample]]:
    one = os.path.join(work, "one.wdl")
    with open(one, "w") as outfile:
        outfile.write(ONE_INPUT.format(image=IMAGE))
    paths = {}
    for label, size in (("1 KiB", 1024), ("2 GiB", 2 << 30)):
        paths[label] = os.path.join(work, f"input_{size}")
        with open(paths[label], "wb") as outfile:
            os.posix_fallocate(outfile.fileno(), 0, size)  # real blocks, not a sparse file
    os.sync()  # write-back of the new 2 GiB must not land inside a timed run
    print(f"single task with one File input (whole miniwdl run, {args.rounds} rounds):")
    try:
        sides: dict[str, Side] = {
            label: functools.partial(miniwdl, one, [f"big={path}"], "omnibio_docker", work)
            for label, path in paths.items()
        }
        samples = measure(sides, args.rounds)
    finally:
        for path in paths.values():
            os.unlink(path)
    for label, times in samples.items():
        print(summary(label, times))
    print(ratio("2 GiB / 1 KiB", samples, "2 GiB", "1 KiB", "<= 1.2x"))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed runs per side (>= 5 for figures to report)"
    )
    parser.add_argument(
        "--large", type=int, default=400, help="tasks of the launcher-cost run (0: skip it)"
    )
    parser.add_argument(
        "--skip-swarm", action="store_true", help="docker_swarm takes ~30 s per 40-task run"
    )
    parser.add_argument("--skip-input", action="store_true", help="leave out the 2 GiB input")
    parser.add_argument("--sdk-loop", nargs=2, metavar=("TASKS", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sdk_loop:
        sdk_loop(int(args.sdk_loop[0]), args.sdk_loop[1])
        return
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.rounds < 5:
        print(f"{args.rounds} rounds: for iterating only; report figures of 5 rounds or more")
    work = tempfile.mkdtemp(prefix="omnibio_bench_")
    os.chmod(work, 0o755)
    samples = {
        "scatter": scatter(args, work),
        "large": {"omnibio_docker": [launcher_cost(args, work)]} if args.large else {},
        "input": {} if args.skip_input else input_size(args, work),
    }
    raw = {part: {k: [asdict(s) for s in v] for k, v in d.items()} for part, d in samples.items()}
    print(json.dumps(raw))


if __name__ == "__main__":
    main()
