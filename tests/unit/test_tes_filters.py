"""omnibio_tes never trusts a server's list filters: it adopts, tracks and cancels only tasks
whose own tags carry its launcher, and polls stay bounded where filters are ignored. Against an
in-memory server behind TesClient.send, in three list behaviours: the spec's, TESK's (every
filter but the page and the view ignored: tesk-api TesServiceImpl.listTasks) and Funnel's
(state=UNKNOWN is no state filter: boltdb ListTasks)."""

import copy
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from miniwdl_omnibio.attempt import TAG_RUN_ID
from miniwdl_omnibio.engines.base import Phase, Submitted
from miniwdl_omnibio.engines.tes.client import Refused, TesProblem
from miniwdl_omnibio.engines.tes.engine import TesEngine
from miniwdl_omnibio.engines.tes.translate import LAUNCHER_TAG
from tests.unit.test_tes_translation import _attempt, _engine

LOG = logging.getLogger("test")
FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED")


class FakeTes:
    """Tasks in memory, answered as ``lists`` does: "spec", "tesk" or "funnel"."""

    def __init__(self, lists: str) -> None:
        self.lists = lists
        self.tasks: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lose_create_answers = 0  # create the task, then answer 503 (an answer lost)
        self.refuse_creates = 0  # answer 503 without creating
        self._ids = (f"task-{n:04d}" for n in itertools.count())

    def add(self, tags: dict[str, str], state: str = "RUNNING", name: str = "other") -> str:
        task_id = next(self._ids)
        self.tasks[task_id] = {"id": task_id, "name": name, "state": state, "tags": tags}
        return task_id

    def state(self, task_id: str) -> str:
        return str(self.tasks[task_id]["state"])

    def count(self, method: str, path: str = "/tasks", view: str | None = None) -> int:
        return sum(
            1
            for m, p, params in self.requests
            if m == method and (p == path or path == "*") and view in (None, params.get("view"))
        )

    def send(
        self, method: str, path: str, params: Sequence[tuple[str, str]] = (), body: Any = None
    ) -> Any:
        self.requests.append((method, path, dict(params)))
        if method == "POST" and path == "/tasks":
            if self.refuse_creates:
                self.refuse_creates -= 1
                raise Refused(503, "busy")
            task_id = self.add(dict(body.get("tags") or {}), "QUEUED", body.get("name", ""))
            if self.lose_create_answers:
                self.lose_create_answers -= 1
                raise Refused(503, "lost on the way back")
            return {"id": task_id}
        if method == "POST" and path.endswith(":cancel"):
            task = self.tasks[path[len("/tasks/") : -len(":cancel")]]
            task["state"] = "CANCELED" if task["state"] not in FINAL else task["state"]
            return {}
        if method == "GET" and path.startswith("/tasks/"):
            found = self.tasks.get(path[len("/tasks/") :])
            if found is None:
                raise Refused(404, "no such task")
            return self._view(found, dict(params).get("view", "MINIMAL"))
        assert (method, path) == ("GET", "/tasks")
        return {"tasks": [self._view(t, dict(params)["view"]) for t in self._listed(params)]}

    def _listed(self, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        tasks = list(self.tasks.values())
        if self.lists == "tesk":
            return tasks
        query = dict(params)
        keys = [v for k, v in params if k == "tag_key"]
        values = [v for k, v in params if k == "tag_value"]
        state = query.get("state")
        if self.lists == "funnel" and state == "UNKNOWN":
            state = None
        return [
            t
            for t in tasks
            if (not state or t["state"] == state)
            and t["name"].startswith(query.get("name_prefix", ""))
            and all(t["tags"].get(k) == v for k, v in zip(keys, values, strict=True))
        ]

    @staticmethod
    def _view(task: dict[str, Any], view: str) -> dict[str, Any]:
        if view == "MINIMAL":
            return {"id": task["id"], "state": task["state"]}
        return copy.deepcopy(task)


@pytest.fixture
def engine(monkeypatch) -> TesEngine:
    engine = _engine(monkeypatch)
    engine.client.max_retries = 2
    engine.client.sleep = lambda seconds: None
    return engine


def serve(engine: TesEngine, lists: str) -> FakeTes:
    server = FakeTes(lists)
    engine.client.send = server.send  # type: ignore[method-assign]
    return server


def records(engine: TesEngine, *handles: str) -> list[Submitted]:
    return [Submitted(h, _attempt(), LOG, 0.0) for h in handles]


def strangers(server: FakeTes) -> list[str]:
    """Another client's unfinished tasks: another launcher, no launcher, no tags at all."""
    return [
        server.add({LAUNCHER_TAG: "another-process", TAG_RUN_ID: "wf.call-x.2"}),
        server.add({TAG_RUN_ID: "wf.call-x.2"}, "QUEUED", name="wf.call-x.2"),
        server.add({}, "INITIALIZING"),
    ]


@pytest.mark.parametrize("lists", ["spec", "tesk", "funnel"])
def test_shutdown_cancels_only_tasks_tagged_with_this_launcher(engine, lists, caplog):
    server = serve(engine, lists)
    others = strangers(server)
    ours = {LAUNCHER_TAG: engine.launcher}
    tracked = server.add(ours, "RUNNING")
    stray = server.add(ours, "QUEUED")  # created by a request whose answer was lost
    ended = server.add(ours, "COMPLETE")
    with caplog.at_level(logging.INFO):
        engine.shutdown(LOG)
    assert [server.state(t) for t in (tracked, stray, ended)] == [
        "CANCELED",
        "CANCELED",
        "COMPLETE",
    ]
    assert [server.state(t) for t in others] == ["RUNNING", "QUEUED", "INITIALIZING"]
    cancels = server.count("POST", "*")
    assert cancels == 2
    noticed = caplog.text.count("ignores list filters")
    assert noticed == (1 if lists == "tesk" else 0)  # Funnel's UNKNOWN is no evidence


@pytest.mark.parametrize("lists", ["spec", "tesk"])
def test_a_lost_create_adopts_only_a_task_with_this_launcher_and_run_id(engine, lists):
    server = serve(engine, lists)
    strangers(server)
    server.add({LAUNCHER_TAG: engine.launcher, TAG_RUN_ID: "wf.call-y.1"}, name="wf.call-y.1")
    server.lose_create_answers = 1
    handle = engine.create_once({"name": "wf.call-x.2", "tags": tags(engine)}, "wf.call-x.2", LOG)
    assert server.tasks[handle]["tags"] == tags(engine)
    assert server.count("POST") == 1  # adopted, not created again
    listing = next(q for m, path, q in server.requests if (m, path) == ("GET", "/tasks"))
    assert listing["view"] == "BASIC" and listing["name_prefix"] == "wf.call-x.2"


@pytest.mark.parametrize("lists", ["spec", "tesk"])
def test_a_lost_create_with_no_task_of_ours_posts_again(engine, lists):
    server = serve(engine, lists)
    strangers(server)
    server.refuse_creates = 1
    handle = engine.create_once({"name": "wf.call-x.2", "tags": tags(engine)}, "wf.call-x.2", LOG)
    assert server.tasks[handle]["tags"] == tags(engine)
    assert server.count("POST") == 2


def tags(engine: TesEngine) -> dict[str, str]:
    return {LAUNCHER_TAG: engine.launcher, TAG_RUN_ID: "wf.call-x.2"}


def test_polls_list_by_state_where_filters_work(engine, caplog):
    server = serve(engine, "spec")
    strangers(server)
    ours = [engine.create_once({"tags": tags(engine)}, "r", LOG) for _ in range(4)]
    server.tasks[ours[1]]["state"] = "QUEUED"
    server.tasks[ours[2]]["state"] = "COMPLETE"
    server.tasks[ours[3]]["state"] = "RUNNING"
    server.requests.clear()
    with caplog.at_level(logging.INFO):
        statuses = engine.fetch(records(engine, *ours), True)
    assert [statuses[h].phase for h in ours] == [
        Phase.QUEUED,
        Phase.QUEUED,
        Phase.DONE,
        Phase.RUNNING,
    ]
    # three lists by state, and the ended task alone in FULL view
    assert server.count("GET") == 3 and server.count("GET", "*", "FULL") == 1
    assert "ignores list filters" not in caplog.text


def test_polls_get_each_task_once_filters_are_seen_ignored(engine, caplog):
    server = serve(engine, "tesk")
    for _ in range(50):  # the server's other tasks: listing them is what polls must not do
        strangers(server)
    ours = [engine.create_once({"tags": tags(engine)}, "r", LOG) for _ in range(3)]
    server.tasks[ours[1]]["state"] = "RUNNING"
    server.tasks[ours[2]]["state"] = "EXECUTOR_ERROR"
    server.requests.clear()
    with caplog.at_level(logging.INFO):
        first = engine.fetch(records(engine, *ours), True)
        after = len(server.requests)
        second = engine.fetch(records(engine, *ours), True)
    for statuses in (first, second):
        assert [statuses[h].phase for h in ours] == [Phase.QUEUED, Phase.RUNNING, Phase.DONE]
    # the first list showed it; from then on one MINIMAL GET per task, FULL for the ended one
    assert server.requests[0][1] == "/tasks" and server.count("GET", "/tasks") == 1
    assert len(server.requests) - after == 3 + 1
    assert server.count("GET", "*", "MINIMAL") == 2 * 3 + 1  # the list's view too
    assert caplog.text.count("ignores list filters") == 1


def test_a_listed_stray_of_ours_keeps_polls_on_lists(engine, caplog):
    """A task carrying this launcher that this process did not record (its create answer was
    lost) is read once by its tags; it is no sign that the server ignores filters."""
    server = serve(engine, "spec")
    strangers(server)
    (tracked,) = [engine.create_once({"tags": tags(engine)}, "r", LOG)]
    stray = server.add(tags(engine), "RUNNING")
    server.requests.clear()
    with caplog.at_level(logging.INFO):
        engine.fetch(records(engine, tracked), True)
        engine.fetch(records(engine, tracked), True)
    assert server.count("GET", "*", "BASIC") == 1 and stray in engine._strays
    assert server.count("GET", "/tasks") == 6
    assert "ignores list filters" not in caplog.text


def test_a_stranger_gone_before_its_tags_are_read_is_no_evidence(engine, monkeypatch):
    server = serve(engine, "spec")
    gone = server.add({LAUNCHER_TAG: engine.launcher}, "RUNNING")
    real_send = server.send

    def send(method, path, params=(), body=None):
        if path == f"/tasks/{gone}":
            server.tasks.pop(gone, None)
        return real_send(method, path, params, body)

    engine.client.send = send  # type: ignore[method-assign]
    assert engine.fetch(records(engine, "task-9999"), True) == {}  # not known (yet): grace period
    assert engine.ignoring is None


def test_requests_wait_as_the_server_asks_and_polls_try_once(engine):
    server = serve(engine, "spec")
    task_id = server.add(tags(engine))
    answers = [Refused(429, "slow down", retry_after=3.0), Refused(None, "ConnectionError")]
    real_send, slept = server.send, []

    def send(method, path, params=(), body=None):
        if answers:
            raise answers.pop(0)
        return real_send(method, path, params, body)

    engine.client.send = send  # type: ignore[method-assign]
    engine.client.sleep = slept.append
    assert engine.client.get(task_id, "MINIMAL") == {"id": task_id, "state": "RUNNING"}
    assert slept == [3.0, 2.0]  # the server's Retry-After, then doubling
    assert engine.client.get("task-9999", "MINIMAL") is None  # unknown: no retry
    answers.append(Refused(503, "busy"))
    with pytest.raises(TesProblem, match="answered HTTP 503 while trying to get the task"):
        engine.client.get(task_id, "MINIMAL", again=False)
    assert slept == [3.0, 2.0]
