"""Requests per status poll of omnibio_tes on a server that honours list filters and on one
that ignores them (TESK), as a run grows and with another client's tasks on the server.

    python benchmarks/tes_poll_cost.py [--tasks 1000 4000] [--running 100] [--others 1000]
                                       [--page-size 256] [--repeats 3]

Against the test TES server in hold mode (nothing runs; the benchmark moves task states), as
profile ``spec`` (filters honoured) and ``tesk`` (every filter but the page and the view
ignored), it counts the HTTP requests the server receives during one TesEngine.fetch of every
outstanding task, for three ways to poll:

* spec, by-state: one list per waiting or running state, filtered by the launcher tag, so
  finished tasks are never listed again (each is fetched once, alone, when it ends);
* tesk, lists trusted: the same lists where the filters are ignored (what the engine did before
  it checked): every page of every task on the server, three times;
* tesk, GET each: what the engine does once a list has shown the filters ignored: one MINIMAL
  GET per outstanding task.

Rows: every task running, then a run whose tasks are mostly finished (--running still going).
Each figure is the median of --repeats polls, interleaved, with the spread.
"""

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import requests  # noqa: E402
from WDL.runtime.config import Loader  # noqa: E402

from miniwdl_omnibio.engines.base import Submitted  # noqa: E402
from miniwdl_omnibio.engines.tes.client import TesClient  # noqa: E402
from miniwdl_omnibio.engines.tes.engine import TesEngine  # noqa: E402
from miniwdl_omnibio.engines.tes.settings import TesSettings  # noqa: E402
from miniwdl_omnibio.engines.tes.status import LISTED_STATES  # noqa: E402
from miniwdl_omnibio.engines.tes.translate import LAUNCHER_TAG  # noqa: E402
from tests.emulators.tes_server import TesServer  # noqa: E402

LOG = logging.getLogger("bench")
TASK = {"executors": [{"image": "ubuntu:22.04", "command": ["true"]}]}


def engine_for(url: str, page_size: int) -> TesEngine:
    section = {"url": url, "mount_path": "/tmp", "page_size": str(page_size)}
    settings = TesSettings.load(Loader(LOG, filenames=[], overrides={"omnibio_tes": section}))
    client = TesClient(settings.url, settings.credentials, 30, 0)
    return TesEngine(settings, client, client.service_info())


class Bench:
    """One server of a profile, one engine, the engine's tasks and another client's."""

    def __init__(self, profile: str, page_size: int, others: int) -> None:
        self.server = TesServer(profile=profile, execute=False).start()
        self.engine = engine_for(self.server.url, page_size)
        self.page_size = page_size
        self.ids: list[str] = []
        for i in range(others):  # half of them still going, as on a shared server
            other = self.post({LAUNCHER_TAG: "another-process"})
            self.server.set_state(other, "RUNNING" if i % 2 else "COMPLETE")

    def post(self, tags: dict[str, str]) -> str:
        api = self.server.url + self.server.base_paths[0]
        return str(requests.post(api + "/tasks", json={**TASK, "tags": tags}).json()["id"])

    def grow(self, total: int, running: int) -> list[Submitted]:
        """``total`` tasks of the engine, the newest ``running`` of them running."""
        while len(self.ids) < total:
            self.ids.append(self.post({LAUNCHER_TAG: self.engine.launcher}))
        for i, task_id in enumerate(self.ids):
            self.server.set_state(task_id, "RUNNING" if i >= total - running else "COMPLETE")
        outstanding = [
            Submitted(h, None, LOG, time.monotonic())  # type: ignore[arg-type]
            for h in self.ids[total - running :]
        ]
        # a first poll, not counted: the engine reads the tags of the tasks it did not submit
        # itself once, and (tesk) sees the filters ignored
        self.engine.fetch(outstanding, True)
        return outstanding

    def requests_of(self, poll: Callable[[], object]) -> int:
        before = sum(self.server.counters.values())
        poll()
        return sum(self.server.counters.values()) - before

    def trusted_lists(self) -> None:
        """The lists by state and launcher tag, every page, whatever they hold."""
        for state in LISTED_STATES:
            tags = self.engine.launcher_tags()
            list(self.engine.client.list_tasks(tags, state=state, page_size=self.page_size))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spec = Bench("spec", args.page_size, args.others)
    tesk = Bench("tesk", args.page_size, args.others)
    try:
        print(
            f"HTTP requests per status poll (page_size {args.page_size}; {args.others} tasks of "
            f"another client on the server; median, min-max of {args.repeats})"
        )
        header = ("tasks", "running", "spec by-state", "tesk lists trusted", "tesk GET each")
        print(f"{header[0]:>6} {header[1]:>8} {header[2]:>16} {header[3]:>20} {header[4]:>16}")
        rows = [(args.tasks[0], args.tasks[0])] + [(n, args.running) for n in args.tasks]
        for total, running in rows:
            on_spec, on_tesk = spec.grow(total, running), tesk.grow(total, running)
            assert tesk.engine.ignoring and not spec.engine.ignoring
            by_state: list[int] = []
            trusted: list[int] = []
            alone: list[int] = []
            for _ in range(args.repeats):  # interleaved
                by_state.append(spec.requests_of(lambda out=on_spec: spec.engine.fetch(out, True)))
                trusted.append(tesk.requests_of(tesk.trusted_lists))
                alone.append(tesk.requests_of(lambda out=on_tesk: tesk.engine.fetch(out, True)))
            figures = (_figure(by_state), _figure(trusted), _figure(alone))
            print(f"{total:>6} {running:>8} {figures[0]:>16} {figures[1]:>20} {figures[2]:>16}")
    finally:
        spec.server.stop()
        tesk.server.stop()


def _figure(samples: list[int]) -> str:
    return f"{statistics.median(samples):g} ({min(samples)}-{max(samples)})"


if __name__ == "__main__":
    main()
