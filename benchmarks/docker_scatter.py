"""Per-task overhead of omnibio_docker, side by side with docker_swarm and a plain `docker run` loop.

    python benchmarks/docker_scatter.py [--tasks 40] [--skip-swarm]

Prints wall times for a trivial scatter (cpu 1 per task, so 2 at a time on 2 cores) and the
ratios the project targets (omnibio_docker <= 0.6x the plain loop, <= 0.2x docker_swarm), then
the start time of a task with a 2 GiB input against one with a 1 KiB input (target <= 1.2x).
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

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


def miniwdl(wdl: str, args, backend: str, directory: str) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument(
        "--skip-swarm", action="store_true", help="docker_swarm takes ~30 s for 40 tasks"
    )
    args = parser.parse_args()
    parallel = os.cpu_count() or 2
    work = tempfile.mkdtemp(prefix="omnibio_bench_")
    wdl = os.path.join(work, "scatter.wdl")
    with open(wdl, "w") as outfile:
        outfile.write(SCATTER.format(tasks=args.tasks, image=IMAGE))

    figures = {"plain docker run --rm loop": plain_loop(args.tasks, parallel)}
    figures["omnibio_docker"] = miniwdl(wdl, [], "omnibio_docker", work)
    if not args.skip_swarm:
        figures["docker_swarm"] = miniwdl(wdl, [], "docker_swarm", work)

    print(f"{args.tasks}-task trivial scatter, cpu 1 each, {parallel} at a time:")
    for name, seconds in figures.items():
        print(f"  {name:<28} {seconds:7.2f} s   {seconds / args.tasks * 1000:6.0f} ms/task")
    loop_ratio = figures["omnibio_docker"] / figures["plain docker run --rm loop"]
    print(f"  omnibio_docker / plain loop   {loop_ratio:5.2f}x   (target <= 0.6x)")
    if "docker_swarm" in figures:
        print(
            f"  omnibio_docker / docker_swarm {figures['omnibio_docker'] / figures['docker_swarm']:5.2f}x   (target <= 0.2x)"
        )

    one = os.path.join(work, "one.wdl")
    with open(one, "w") as outfile:
        outfile.write(ONE_INPUT.format(image=IMAGE))
    sizes = {"1 KiB": 1024, "2 GiB": 2 << 30}
    paths = {}
    for label, size in sizes.items():
        paths[label] = os.path.join(work, f"input_{size}")
        with open(paths[label], "wb") as outfile:
            os.posix_fallocate(outfile.fileno(), 0, size)  # real blocks, not a sparse file
    os.sync()  # write-back of the new 2 GiB must not land inside a timed run
    runs = {label: [] for label in sizes}
    for _ in range(5):  # interleaved, so drift on the machine hits both alike
        for label, path in paths.items():
            runs[label].append(miniwdl(one, [f"big={path}"], "omnibio_docker", work))
    starts = {label: statistics.median(times) for label, times in runs.items()}
    for path in paths.values():
        os.unlink(path)
    print("single task with one File input (median of 5, whole miniwdl run):")
    for label, seconds in starts.items():
        print(f"  {label:<28} {seconds:7.2f} s")
    print(
        f"  2 GiB / 1 KiB                 {starts['2 GiB'] / starts['1 KiB']:5.2f}x   (target <= 1.2x)"
    )
    print(json.dumps({"scatter_seconds": figures, "input_start_seconds": starts}))


if __name__ == "__main__":
    main()
