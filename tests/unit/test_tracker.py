"""The shared tracker: batching, backoff, grace, deadlines, release and shutdown, once for all
engines. A scripted engine stands in for a service (the e2e suites run the real ones)."""

import logging

from miniwdl_omnibio.attempt import Resources, TaskAttempt
from miniwdl_omnibio.engines.base import QUEUED, RUNNING, Engine, Phase, Status
from miniwdl_omnibio.tracker import Tracker

LOG = logging.getLogger("test")


class ScriptedEngine(Engine[str]):
    section = "omnibio_test"
    poll_seconds = 0.01

    def __init__(self, batch=100):
        self.fetch_batch = batch
        self.answers = {}  # handle -> Status; missing = not listed
        self.fetched = []
        self.cancelled = []
        self.released = []
        self.fail_next = 0
        self.shut = False

    @classmethod
    def start(cls, cfg, logger):
        raise NotImplementedError

    def resource_limits(self):
        return {"cpu": 1, "mem_bytes": 1}

    def translate(self, attempt):
        return attempt.run_id

    def submit(self, request, logger):
        return "h-" + request

    def fetch(self, records):
        self.fetched.append(len(records))
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("429 TooManyRequests")
        return {r.handle: self.answers[r.handle] for r in records if r.handle in self.answers}

    def cancel(self, handle, logger):
        self.cancelled.append(handle)

    def release(self, handle, logger):
        self.released.append(handle)

    def shutdown(self, logger):
        self.shut = True


def attempt(name, time_limit=None):
    return TaskAttempt(
        run_id=name,
        call="call-" + name,
        workflow_run="run",
        attempt=1,
        image="ubuntu:22.04",
        argv=("true",),
        workdir="/w",
        env={},
        mounts=(),
        resources=Resources(1, 0, 0, 0, None, time_limit, 0),
        tags={},
        stdout_path="/o",
        stderr_path="/e",
        host_dir="/h",
    )


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_batches_and_backs_off_without_failing_attempts():
    engine = ScriptedEngine(batch=100)
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    handles = [tracker.submit(attempt(f"a{i}"), f"a{i}", LOG) for i in range(250)]
    engine.fail_next = 1
    assert tracker.poll_once() > engine.poll_seconds  # backing off
    assert all(tracker.wait(h, 0).phase is Phase.QUEUED for h in handles)
    engine.answers = {h: Status(Phase.DONE, exit_code=0) for h in handles}
    engine.fetched.clear()
    assert tracker.poll_once() == engine.poll_seconds
    assert engine.fetched == [100, 100, 50]
    assert tracker.wait(handles[-1], 0).exit_code == 0


def test_unlisted_handle_gets_a_grace_period_then_fails():
    clock = Clock()
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=30, clock=clock, background=False)
    handle = tracker.submit(attempt("x"), "x", LOG)
    clock.now += 29
    tracker.poll_once()
    assert tracker.wait(handle, 0) is QUEUED
    clock.now += 2
    tracker.poll_once()
    status = tracker.wait(handle, 0)
    assert status.phase is Phase.DONE and "does not list h-x" in status.error


def test_client_side_deadline_cancels_and_ends_as_timed_out():
    clock = Clock()
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=30, clock=clock, background=False)
    handle = tracker.submit(attempt("slow", time_limit=5), "slow", LOG)
    engine.answers[handle] = RUNNING
    tracker.poll_once()
    clock.now += 5
    tracker.poll_once()
    assert engine.cancelled == []
    clock.now += 1
    tracker.poll_once()
    assert engine.cancelled == [handle]
    assert tracker.wait(handle, 0).timed_out


def test_service_enforced_time_limit_is_left_to_the_service():
    clock = Clock()
    engine = ScriptedEngine()
    engine.enforces_time_limit = True
    tracker = Tracker(engine, LOG, unlisted_grace=30, clock=clock, background=False)
    handle = tracker.submit(attempt("slow", time_limit=5), "slow", LOG)
    engine.answers[handle] = RUNNING
    tracker.poll_once()
    clock.now += 100
    tracker.poll_once()
    assert engine.cancelled == [] and tracker.wait(handle, 0) is RUNNING


def test_release_cancels_what_is_not_finished_or_still_held():
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=30, background=False)
    running, done, lingering = (tracker.submit(attempt(n), n, LOG) for n in ("r", "d", "l"))
    engine.answers = {
        running: RUNNING,
        done: Status(Phase.DONE, exit_code=0),
        lingering: Status(Phase.DONE, interrupted=True, lingering=True),
    }
    tracker.poll_once()
    for handle in (running, done, lingering):
        tracker.release(handle, LOG)
    assert engine.cancelled == [running, lingering]
    assert engine.released == [running, done, lingering]
    tracker.release(running, LOG)  # a second release does nothing
    assert engine.cancelled == [running, lingering]


def test_shutdown_cancels_every_open_attempt_once():
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=30, background=False)
    first, second = tracker.submit(attempt("1"), "1", LOG), tracker.submit(attempt("2"), "2", LOG)
    tracker.cancel(first, LOG)
    tracker.shutdown()
    assert engine.cancelled == [first, second] and engine.shut


def test_one_log_line_per_state_change_in_the_services_words(caplog):
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=30, background=False)
    handle = tracker.submit(attempt("s"), "s", LOG)
    said = [
        Status(Phase.QUEUED, reason="RUNNABLE"),
        Status(Phase.QUEUED, reason="RUNNABLE"),
        Status(Phase.QUEUED, reason="STARTING"),
        Status(Phase.RUNNING, reason="RUNNING"),
        Status(Phase.RUNNING, reason="RUNNING"),
        Status(Phase.DONE, exit_code=0, reason="SUCCEEDED"),
        Status(Phase.DONE, exit_code=0, reason="SUCCEEDED"),
    ]
    with caplog.at_level(logging.INFO, logger=LOG.name):
        for status in said:
            engine.answers[handle] = status
            tracker.poll_once()
    changes = [r.getMessage() for r in caplog.records if "engine status" in r.getMessage()]
    assert len(changes) == 4, changes
    words = ("RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED")
    assert all(c.endswith(f'reason: "{w}"') for c, w in zip(changes, words, strict=True)), changes
