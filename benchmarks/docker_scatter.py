"""Per-task overhead of omnibio_docker, side by side with docker_swarm and a plain `docker run`
loop, and the cost of a large input (it is bound in place, so it should cost nothing).

    python benchmarks/docker_scatter.py [--tasks 40] [--rounds 3] [--skip-swarm]

Every side first runs once untimed (images, page cache, swarm init warm), then each is measured
--rounds times, interleaved with the order rotated per round so drift on the machine hits all
alike. Prints the median and the spread (min..max) of each side and the ratios of the medians
against the project's targets (omnibio_docker <= 0.6x the plain loop, <= 0.2x docker_swarm; a
2 GiB input <= 1.2x a 1 KiB one), then the raw samples as JSON.
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

IMAGE = "ubuntu:22.04"
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
Side = Callable[[], float]


def miniwdl(wdl: str, args: list[str], backend: str, directory: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIWDL__")}
    env.update(MINIWDL_CFG="/dev/null", MINIWDL__SCHEDULER__CONTAINER_BACKEND=backend)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "WDL", "run", wdl, *args, "--dir", directory, "--no-cache"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{backend} run failed:\n{proc.stderr[-3000:]}")
    return elapsed


def plain_loop(tasks: int, parallel: int) -> float:
    def one(i: int) -> None:
        subprocess.run(
            ["docker", "run", "--rm", IMAGE, "echo", str(i)], check=True, capture_output=True
        )

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(tasks)))
    return time.monotonic() - started


def measure(sides: dict[str, Side], rounds: int) -> dict[str, list[float]]:
    """One untimed warm-up run of each side, then ``rounds`` timed runs of each, interleaved
    with the order rotated every round."""
    for side in sides.values():
        side()
    names = list(sides)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(sides[name]())
    return samples


def summary(name: str, times: list[float], per: int = 0) -> str:
    median = statistics.median(times)
    line = f"  {name:<28} {median:7.2f} s   spread {min(times):.2f}..{max(times):.2f} s"
    return line + (f"   {median / per * 1000:6.0f} ms/task" if per else "")


def ratio(label: str, samples: dict[str, list[float]], a: str, b: str, target: str) -> str:
    value = statistics.median(samples[a]) / statistics.median(samples[b])
    return f"  {label:<36} {value:5.2f}x   (target {target})"


def scatter(args: argparse.Namespace, work: str) -> dict[str, list[float]]:
    parallel = os.cpu_count() or 2
    wdl = os.path.join(work, "scatter.wdl")
    with open(wdl, "w") as outfile:
        outfile.write(SCATTER.format(tasks=args.tasks, image=IMAGE))
    sides: dict[str, Side] = {
        "plain docker run --rm loop": lambda: plain_loop(args.tasks, parallel),
        "omnibio_docker": lambda: miniwdl(wdl, [], "omnibio_docker", work),
    }
    if not args.skip_swarm:
        sides["docker_swarm"] = lambda: miniwdl(wdl, [], "docker_swarm", work)
    samples = measure(sides, args.rounds)
    print(f"{args.tasks}-task trivial scatter, cpu 1 each, {parallel} at a time, median of")
    print(f"{args.rounds} interleaved runs after one warm-up run each:")
    for name, times in samples.items():
        print(summary(name, times, args.tasks))
    loop = "plain docker run --rm loop"
    print(ratio("omnibio_docker / plain loop", samples, "omnibio_docker", loop, "<= 0.6x"))
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


def input_size(args: argparse.Namespace, work: str) -> dict[str, list[float]]:
    one = os.path.join(work, "one.wdl")
    with open(one, "w") as outfile:
        outfile.write(ONE_INPUT.format(image=IMAGE))
    paths = {}
    for label, size in (("1 KiB", 1024), ("2 GiB", 2 << 30)):
        paths[label] = os.path.join(work, f"input_{size}")
        with open(paths[label], "wb") as outfile:
            os.posix_fallocate(outfile.fileno(), 0, size)  # real blocks, not a sparse file
    os.sync()  # write-back of the new 2 GiB must not land inside a timed run
    try:
        sides: dict[str, Side] = {
            label: functools.partial(miniwdl, one, [f"big={path}"], "omnibio_docker", work)
            for label, path in paths.items()
        }
        samples = measure(sides, max(args.rounds, 5))
    finally:
        for path in paths.values():
            os.unlink(path)
    print(f"single task with one File input (whole miniwdl run, median of {max(args.rounds, 5)}):")
    for label, times in samples.items():
        print(summary(label, times))
    print(ratio("2 GiB / 1 KiB", samples, "2 GiB", "1 KiB", "<= 1.2x"))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per side (>= 3)")
    parser.add_argument(
        "--skip-swarm", action="store_true", help="docker_swarm takes ~30 s per 40-task run"
    )
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3: a median needs them")
    work = tempfile.mkdtemp(prefix="omnibio_bench_")
    samples = {"scatter_seconds": scatter(args, work), "input_seconds": input_size(args, work)}
    print(json.dumps(samples))


if __name__ == "__main__":
    main()
