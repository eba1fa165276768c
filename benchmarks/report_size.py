"""The report of a large run: a synthetic 1,000-attempt trace (retries, every ending, measured
usage on half the tasks) turned into report.html, its size, and its load time in headless
Chromium (navigation start to the end of the load event, median of --rounds fresh browsers;
the machine's load average is printed beside it, since a busy machine slows every browser).

    python benchmarks/report_size.py [--attempts 1000] [--rounds 5]

Targets (issue 21): under 2 MB and under 2 s. Exits 1 when a target is missed.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from miniwdl_omnibio.report import write_report  # noqa: E402
from tests.e2e.report.browser import chromium, load  # noqa: E402
from tests.e2e.report.synthetic import write_trace  # noqa: E402

MAX_BYTES = 2 * 1000**2
MAX_SECONDS = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not chromium():
        print("chromium is not installed (tests/rig/setup.sh installs it)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as run_dir:
        write_trace(run_dir, args.attempts)
        began = time.perf_counter()
        path = write_report(run_dir, {})
        written = time.perf_counter() - began
        assert path
        size = os.path.getsize(path)
        expected = {"bars": "document.querySelectorAll('#timeline rect.bar').length"}
        loads = []
        for _round in range(args.rounds):
            page = load(path, expected)
            assert page.values["bars"] == args.attempts and not page.errors, page
            loads.append(page.load_ms / 1000)
    load_s = statistics.median(loads)
    print(f"attempts: {args.attempts}")
    print(f"report.html: {size / 1000**2:.2f} MB (target < {MAX_BYTES / 1000**2:.0f} MB)")
    print(f"written in: {written:.2f} s")
    print(
        f"load in headless Chromium: {load_s:.2f} s median, {min(loads):.2f}..{max(loads):.2f}"
        f" (target < {MAX_SECONDS:.0f} s; load average {os.getloadavg()[0]:.1f} on"
        f" {os.cpu_count()} cpus)"
    )
    return 0 if size < MAX_BYTES and load_s < MAX_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
