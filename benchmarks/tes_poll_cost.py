"""Requests per status poll of omnibio_tes as a run grows: 1,000 tasks and more.

    python benchmarks/tes_poll_cost.py [--tasks 1000 4000] [--running 100] [--page-size 256]

Against the test TES server in hold mode (nothing runs; the benchmark moves task states), it
counts the HTTP requests of one poll two ways, side by side:

* listed-all: what omnibio_tes did before: one paged list of every task of the process, finished
  ones included, each poll;
* by-state: what it does now (TesEngine.fetch): one list per waiting or running state, so
  finished tasks are never listed again (each is fetched once, alone, when it ends).

Rows: every task running, then a run whose tasks are mostly finished (--running still going).
Each figure is the median of --repeats polls, interleaved, with the spread.
"""

import argparse
import logging
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import requests  # noqa: E402
from WDL.runtime.config import Loader  # noqa: E402

from miniwdl_omnibio.engines.base import Submitted  # noqa: E402
from miniwdl_omnibio.engines.tes import LAUNCHER_TAG, TesEngine  # noqa: E402
from miniwdl_omnibio.engines.tes_client import TesClient  # noqa: E402
from miniwdl_omnibio.engines.tes_settings import TesSettings  # noqa: E402
from tests.emulators.tes_server import TesServer  # noqa: E402

LOG = logging.getLogger("bench")


def engine_for(url: str, page_size: int) -> TesEngine:
    section = {"url": url, "mount_path": "/tmp", "page_size": str(page_size)}
    settings = TesSettings.load(Loader(LOG, filenames=[], overrides={"omnibio_tes": section}))
    client = TesClient(settings.url, settings.credentials, 30, 0)
    return TesEngine(settings, client, client.service_info())


def requests_of(server: TesServer, poll) -> int:
    before = sum(server.counters.values())
    poll()
    return sum(server.counters.values()) - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--page-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with TesServer(execute=False) as server:
        engine = engine_for(server.url, args.page_size)
        ids: list[str] = []

        def grow(total: int) -> None:
            task = {"executors": [{"image": "ubuntu:22.04", "command": ["true"]}]}
            while len(ids) < total:
                body = {**task, "tags": {LAUNCHER_TAG: engine.launcher}}
                ids.append(
                    requests.post(server.url + "/ga4gh/tes/v1/tasks", json=body).json()["id"]
                )

        print(
            f"HTTP requests per status poll (page_size {args.page_size}; median, min-max of "
            f"{args.repeats})"
        )
        print(f"{'tasks':>6} {'running':>8} {'listed-all':>16} {'by-state':>14}")
        rows = [(args.tasks[0], args.tasks[0])] + [(n, args.running) for n in args.tasks]
        for total, running in rows:
            grow(total)
            for i, task_id in enumerate(ids):  # the newest are the ones still running
                server.set_state(task_id, "RUNNING" if i >= total - running else "COMPLETE")
            outstanding = [
                Submitted(h, None, LOG, time.monotonic())  # type: ignore[arg-type]
                for h in ids[total - running :]
            ]
            old, new = [], []
            for _ in range(args.repeats):  # interleaved
                old.append(requests_of(server, lambda: list_all(engine, args.page_size)))
                new.append(requests_of(server, lambda out=outstanding: engine.fetch(out)))
            print(f"{total:>6} {running:>8} {_figure(old):>16} {_figure(new):>14}")


def list_all(engine: TesEngine, page_size: int) -> None:
    """The former poll: every task of the process, finished or not, page by page."""
    list(engine.client.list_tasks(engine.launcher_tags(), page_size=page_size))


def _figure(samples: list[int]) -> str:
    return f"{statistics.median(samples):g} ({min(samples)}-{max(samples)})"


if __name__ == "__main__":
    main()
