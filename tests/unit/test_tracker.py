"""The shared tracker: batching, backoff, grace, deadlines, release and shutdown, once for all
engines. A scripted engine stands in for a service (the e2e suites run the real ones)."""

import logging
import threading
import time
from dataclasses import replace

import pytest
from WDL._util import NOTICE_LEVEL
from WDL.runtime.error import Terminated

from miniwdl_omnibio import holding
from miniwdl_omnibio.attempt import Resources, TaskAttempt
from miniwdl_omnibio.engines.base import (
    QUEUED,
    RUNNING,
    Accepted,
    Engine,
    Phase,
    QueueFull,
    Status,
)
from miniwdl_omnibio.tracker import Tracker
from tests.helpers import wait_until

LOG = logging.getLogger("test")


class ScriptedEngine(Engine[str]):
    section = "omnibio_test"
    poll_seconds = 0.01

    def __init__(self):
        self.answers = {}  # handle -> Status; missing = not listed
        self.fetched = []
        self.cancelled = []
        self.released = []
        self.fail_next = 0
        self.shut = False

    @classmethod
    def start(cls, cfg, logger):
        raise NotImplementedError

    def translate(self, attempt):
        return attempt.run_id

    def submit(self, request, logger):
        return Accepted("h-" + request, memo={"request": request})

    def fetch(self, records, full):
        self.fetched.append((len(records), full))
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("429 TooManyRequests")
        return {r.handle: self.answers[r.handle] for r in records if r.handle in self.answers}

    def cancel(self, record, logger):
        self.cancelled.append(record.handle)

    def release(self, record, logger):
        self.released.append(record.handle)

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


def test_one_fetch_for_all_and_backs_off_without_failing_attempts():
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    handles = [tracker.submit(attempt(f"a{i}"), f"a{i}", LOG) for i in range(250)]
    engine.fail_next = 1
    assert tracker.poll_once() > engine.poll_seconds  # backing off
    assert all(tracker.wait(h, 0).phase is Phase.QUEUED for h in handles)
    engine.answers = {h: Status(Phase.DONE, exit_code=0) for h in handles}
    engine.fetched.clear()
    assert tracker.poll_once() == engine.poll_seconds
    assert engine.fetched == [(250, True)]
    assert tracker.wait(handles[-1], 0).exit_code == 0


def test_the_record_carries_the_request_and_the_engines_memo():
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    handle = tracker.submit(attempt("m"), "m", LOG)
    engine.failure_details = lambda record, status: {"memo": record.memo, "req": record.request}
    details = tracker.failure_details(handle, Status(Phase.DONE, exit_code=1))
    assert details == {"memo": {"request": "m"}, "req": "m"}


def test_full_fetches_come_every_sweep_seconds():
    clock = Clock()
    engine = ScriptedEngine()
    engine.sweep_seconds = 30
    tracker = Tracker(engine, LOG, unlisted_grace=600, clock=clock, background=False)
    tracker.submit(attempt("s"), "s", LOG)
    fulls = []
    for _ in range(8):  # 8 rounds 10 s apart: full at 0, 30 and 60 s
        engine.fetched.clear()
        tracker.poll_once()
        fulls.append(engine.fetched[0][1])
        clock.now += 10
    assert fulls == [True, False, False, True, False, False, True, False]


class BatchingEngine(ScriptedEngine):
    """Gathers submissions and cancellations, as AWS arrays and Slurm's scancel do."""

    gather_seconds = 0.2
    gather_max_seconds = 5
    cancel_gather_seconds = 0.2

    def __init__(self):
        super().__init__()
        self.bursts = []
        self.cancel_bursts = []

    def submit_many(self, submissions):
        self.bursts.append([s.request for s in submissions])
        return [
            RuntimeError("refused: " + s.request)
            if s.request.startswith("bad")
            else Accepted("h-" + s.request)
            for s in submissions
        ]

    def cancel_many(self, records, whole_groups, logger):
        self.cancel_bursts.append(sorted(r.handle for r in records))


def test_submissions_close_together_reach_submit_many_as_one_burst():
    engine = BatchingEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    results = {}

    def submit(name):
        try:
            results[name] = tracker.submit(attempt(name), name, LOG)
        except RuntimeError as exn:
            results[name] = str(exn)

    threads = [threading.Thread(target=submit, args=(n,)) for n in ("a", "b", "bad", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(engine.bursts) == 1 and sorted(engine.bursts[0]) == ["a", "b", "bad", "c"]
    assert results == {"a": "h-a", "b": "h-b", "c": "h-c", "bad": "refused: bad"}
    assert tracker.counts()["submitted"] == 3


def test_cancellations_close_together_reach_cancel_many_as_one_and_shutdown_flushes():
    engine = BatchingEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    handles = [tracker.submit(attempt(n), n, LOG) for n in ("a", "b", "c")]
    for handle in handles[:2]:
        tracker.cancel(handle, LOG)
    assert engine.cancel_bursts == []  # gathering (no background thread in this test)
    tracker.shutdown()  # cancels "c" too, and sends the burst before the engine's own shutdown
    assert engine.cancel_bursts == [["h-a", "h-b", "h-c"]] and engine.shut


class GroupingEngine(ScriptedEngine):
    """Takes each request into the group it names ("g/a": handle h-a of group g, "a": alone), as
    an array job takes its children; gathers cancellations, and records each batch as (handles,
    whole groups)."""

    cancel_gather_seconds = 0.2

    def __init__(self):
        super().__init__()
        self.batches = []

    def submit(self, request, logger):
        group, _, name = request.rpartition("/")
        return Accepted("h-" + name, group=group or None)

    def cancel_many(self, records, whole_groups, logger):
        self.batches.append((sorted(r.handle for r in records), sorted(whole_groups)))


def grouped(*requests):
    engine = GroupingEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    for request in requests:
        tracker.submit(attempt(request), request, LOG)
    return engine, tracker


def cancel_together(tracker, *handles, release=False):
    """One batch of cancellations (a Ctrl-C); ``release``: each task thread releases its attempt
    right after cancelling it, before the batch goes out, as the lifecycle does."""
    for handle in handles:
        tracker.cancel(handle, LOG)
        if release:
            tracker.release(handle, LOG)
    tracker._cancellations.flush()


def test_a_group_is_whole_only_when_the_batch_holds_every_open_member():
    engine, tracker = grouped("g/a", "g/b", "g/c", "k/x", "y")
    cancel_together(tracker, "h-a", "h-b", "h-x", "h-y")
    assert engine.batches == [(["h-a", "h-b", "h-x", "h-y"], ["k"])]  # h-c of g runs on


def test_a_released_member_no_longer_counts():
    engine, tracker = grouped("g/a", "g/b", "g/c", "k/x", "k/y")
    engine.answers["h-c"] = Status(Phase.DONE, exit_code=0)
    tracker.poll_once()
    tracker.release("h-c", LOG)  # finished before the Ctrl-C
    cancel_together(tracker, "h-a", "h-b")
    cancel_together(tracker, "h-x", "h-y", release=True)  # k has no open member left
    assert engine.batches == [(["h-a", "h-b"], ["g"]), (["h-x", "h-y"], ["k"])]


def test_a_group_cancelled_whole_is_not_reported_whole_again():
    engine, tracker = grouped("g/a", "g/b")
    cancel_together(tracker, "h-a", "h-b")
    tracker.submit(attempt("g/c"), "g/c", LOG)  # a member the service took later
    for handle in ("h-a", "h-b"):
        tracker.release(handle, LOG)
    cancel_together(tracker, "h-c")
    assert engine.batches == [(["h-a", "h-b"], ["g"]), (["h-c"], [])]


def test_members_cancelled_in_two_batches_are_not_whole():
    engine, tracker = grouped("g/a", "g/b")
    cancel_together(tracker, "h-a")
    cancel_together(tracker, "h-b")
    assert engine.batches == [(["h-a"], []), (["h-b"], [])]


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


def test_one_line_for_the_run_each_time_the_limits_its_attempts_wait_at_change(caplog):
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=30, background=False)
    a, b = (tracker.submit(attempt(name), name, LOG) for name in "ab")
    at_limit = Status(Phase.QUEUED, reason="PENDING (QOSMaxJobsPerUserLimit)")
    rounds = [
        {a: at_limit, b: QUEUED},
        {a: replace(at_limit, waits_at="QOSMaxJobsPerUserLimit"), b: QUEUED},
        {h: replace(at_limit, waits_at="QOSMaxJobsPerUserLimit") for h in (a, b)},
        {a: RUNNING, b: replace(at_limit, waits_at="AssocGrpCpuLimit")},
        {a: RUNNING, b: replace(at_limit, waits_at="AssocGrpCpuLimit")},
        {a: RUNNING, b: RUNNING},
        {a: RUNNING, b: RUNNING},
    ]
    with caplog.at_level(NOTICE_LEVEL, logger=LOG.name):
        for answers in rounds:
            engine.answers = answers
            tracker.poll_once()
    lines = [m for m in notices(caplog) if "limit of the service" in m]
    assert len(lines) == 3, lines  # a second job at the same limit changes nothing
    assert 'limits: "QOSMaxJobsPerUserLimit", jobs: 1' in lines[0]
    assert 'limits: "AssocGrpCpuLimit", jobs: 1' in lines[1]
    assert lines[2].startswith("omnibio_test: no job waits at a limit of the service now")


# --- the wake-up: an engine that learns of an end wakes the tracker, which fetches at once -----


class PushingEngine(ScriptedEngine):
    """Pushes like omnibio_docker's event stream: ``ends`` wakes the tracker for a handle, also
    from inside submit (a container that died before its id was returned)."""

    def __init__(self):
        super().__init__()
        self.wake = None
        self.during_submit = lambda handle: None

    def on_wake(self, wake):
        self.wake = wake

    def submit(self, request, logger):
        accepted = super().submit(request, logger)
        self.during_submit(accepted.handle)
        return accepted

    def ends(self, handle):
        self.answers[handle] = Status(Phase.DONE, exit_code=0)
        self.wake(handle, False)


def test_a_wake_fetches_that_handle_at_once_without_a_full_round():
    clock = Clock()
    engine = PushingEngine()
    engine.poll_seconds = 30
    tracker = Tracker(engine, LOG, unlisted_grace=60, clock=clock, background=False)
    first, second = (tracker.submit(attempt(n), n, LOG) for n in ("1", "2"))
    engine.answers = {first: RUNNING, second: RUNNING}
    assert tracker.turn() == 30  # the first turn is a full round
    assert engine.fetched == [(2, True)]
    clock.now += 1
    engine.ends(first)
    assert tracker.turn() == 29  # no full round before its time ...
    assert engine.fetched == [(2, True), (1, False)]  # ... only the woken handle, cheaply
    assert tracker.wait(first, 0).exit_code == 0 and tracker.wait(second, 0) is RUNNING
    assert tracker.turn() == 29 and engine.fetched == [(2, True), (1, False)]  # fetched once
    clock.now += 29
    tracker.turn()
    # the safety net: the full round, of what is still out
    assert engine.fetched == [(2, True), (1, False), (1, True)]
    engine.answers[second] = Status(Phase.DONE, exit_code=0)
    engine.wake(second, True)  # the engine asks for its costly look now
    tracker.turn()
    assert engine.fetched[-1] == (1, True)


def test_a_wake_before_submit_returned_is_not_lost():
    clock = Clock()
    engine = PushingEngine()
    engine.poll_seconds = 30
    tracker = Tracker(engine, LOG, unlisted_grace=60, clock=clock, background=False)
    tracker.turn()  # the full round is done: only a wake can end what comes next
    engine.during_submit = engine.ends
    early = tracker.submit(attempt("early"), "early", LOG)
    tracker.turn()
    assert tracker.wait(early, 0).exit_code == 0

    def ends_and_the_tracker_turns_before_registration(handle):
        engine.ends(handle)
        tracker.turn()  # the tracker thread runs between the end and the registration

    engine.during_submit = ends_and_the_tracker_turns_before_registration
    racing = tracker.submit(attempt("racing"), "racing", LOG)
    assert tracker.wait(racing, 0) is QUEUED
    tracker.turn()
    assert tracker.wait(racing, 0).exit_code == 0


def test_a_wake_for_a_handle_never_registered_is_forgotten():
    clock = Clock()
    engine = PushingEngine()
    engine.poll_seconds = 30
    tracker = Tracker(engine, LOG, unlisted_grace=60, clock=clock, background=False)
    tracker.turn()
    engine.wake("h-sandbox", False)  # e.g. a container this process started that is no attempt
    clock.now += 61
    tracker.turn()
    engine.fetched.clear()
    late = tracker.submit(attempt("sandbox"), "sandbox", LOG)  # the same handle, much later
    tracker.turn()
    assert engine.fetched == [] and tracker.wait(late, 0) is QUEUED


def test_a_failed_fetch_on_wake_is_left_to_the_next_full_round():
    clock = Clock()
    engine = PushingEngine()
    engine.poll_seconds = 30
    tracker = Tracker(engine, LOG, unlisted_grace=60, clock=clock, background=False)
    handle = tracker.submit(attempt("x"), "x", LOG)
    engine.answers[handle] = RUNNING
    tracker.turn()
    engine.fail_next = 1
    engine.ends(handle)
    assert tracker.turn() == 30 and tracker.wait(handle, 0) is RUNNING
    clock.now += 30
    tracker.turn()
    assert tracker.wait(handle, 0).exit_code == 0


def test_the_polling_thread_wakes_at_once():
    """The background loop waits on the wake-up, not on the poll period (an hour here)."""
    engine = PushingEngine()
    engine.poll_seconds = 3600
    tracker = Tracker(engine, LOG, unlisted_grace=60)
    engine.answers["h-t"] = RUNNING
    handle = tracker.submit(attempt("t"), "t", LOG)
    wait_until(lambda: tracker.wait(handle, 0) is RUNNING, "the thread's first full round")
    engine.ends(handle)
    assert tracker.wait(handle, 30).exit_code == 0


def test_the_polling_thread_fetches_an_end_it_was_woken_for_before_registration():
    engine = PushingEngine()
    engine.poll_seconds = 3600
    tracker = Tracker(engine, LOG, unlisted_grace=60)
    turns = []
    turn = tracker.turn
    tracker.turn = lambda: turns.append(1) or turn()
    tracker.submit(attempt("first"), "first", LOG)  # starts the thread
    wait_until(lambda: turns, "the thread's first turn")

    def ends_and_the_thread_turns_before_registration(handle):
        before = len(turns)
        engine.ends(handle)
        wait_until(lambda: len(turns) > before, "a turn of the thread after the wake")

    engine.during_submit = ends_and_the_thread_turns_before_registration
    handle = tracker.submit(attempt("racing"), "racing", LOG)
    assert tracker.wait(handle, 30).exit_code == 0


# --- a full queue: the tracker holds what the service refused, and offers it again -------------


class FullEngine(ScriptedEngine):
    """A service that takes ``room`` attempts at most (the user's other runs fill the rest) and
    refuses the others with QueueFull naming ``limit``; ``offers``: each submit_many's requests."""

    def __init__(self, room, limit="MaxQueued"):
        super().__init__()
        self.room, self.limit = room, limit
        self.out = []
        self.offers = []
        self.threads = []  # the thread of each submit_many
        self.inside = self.most_inside = 0

    def submit_many(self, submissions):
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.01)  # a concurrent call would overlap this one
        self.offers.append([s.request for s in submissions])
        self.threads.append(threading.current_thread().name)
        results = []
        for each in submissions:
            if len(self.out) >= self.room:
                results.append(QueueFull(f"queue full: {each.request}", self.limit))
            else:
                self.out.append("h-" + each.request)
                results.append(Accepted("h-" + each.request))
        self.inside -= 1
        return results

    def release(self, record, logger):
        super().release(record, logger)
        self.out.remove(record.handle)


class Submitting:
    """Task threads submitting one after the other (their order known), each with its own
    ``terminating``; ``outcomes``: name -> handle, or the exception submit raised."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.outcomes = {}
        self.threads = []
        self.stops = {}

    def start(self, *names):
        for name in names:
            self.stops[name] = threading.Event()
            thread = threading.Thread(target=self._submit, args=(name,))
            self.threads.append(thread)
            before = self.tracker.counts()["submitted"]
            thread.start()
            wait_until(
                lambda b=before, n=name: (
                    self.tracker.counts()["submitted"] > b or n in self.outcomes
                ),
                f"{name} submitted or held",
            )

    def _submit(self, name):
        try:
            self.outcomes[name] = self.tracker.submit(
                attempt(name), name, LOG, self.stops[name].is_set
            )
        except Exception as exn:
            self.outcomes[name] = exn

    def join(self):
        for thread in self.threads:
            thread.join(30)
        return self.outcomes


def notices(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == NOTICE_LEVEL]


def test_a_full_queue_holds_submissions_in_order_and_offers_them_alone_as_attempts_end(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    engine = FullEngine(room=2)
    tracker = Tracker(engine, LOG, unlisted_grace=60, clock=clock, background=False)
    tasks = Submitting(tracker)
    tasks.start("a", "b", "c", "d", "e")
    clock.now += 10
    # c was refused and held; d and e queued behind it without reaching the service
    assert engine.offers == [["a"], ["b"], ["c"]]
    assert tracker.counts() == {"queued": 5, "running": 0, "submitted": 5, "retried": 0}
    assert tracker.resend_held() == 0 and engine.offers[-1] == ["c"]  # still full
    tracker.release("h-a", LOG)
    assert tracker.resend_held() == 1  # c, then d refused: it stops there
    assert engine.offers[-2:] == [["c"], ["d"]]
    tracker.release("h-b", LOG)
    tracker.release("h-c", LOG)
    assert tracker.resend_held() == 2
    assert engine.offers[-2:] == [["d"], ["e"]]
    assert tasks.join() == {n: "h-" + n for n in "abcde"}
    assert tracker.counts()["submitted"] == 5
    held = tracker.outcome("h-d")  # the trace counts its hold as queued
    assert held is not None and abs(held.submitted - (time.time() - 10)) < 5
    holding_starts, nothing_held = notices(caplog)
    assert holding_starts == (
        "omnibio_test: the service's submit limit is reached; holding submissions until jobs "
        'end :: limit: "MaxQueued", held: 1'
    )
    assert nothing_held.startswith("omnibio_test: no submission is held now")


def test_held_submissions_are_offered_again_when_an_attempt_is_released(monkeypatch):
    monkeypatch.setattr(holding, "HOLD_RETRY", 3600.0)  # only a release can start the offer
    engine = FullEngine(room=1)
    tracker = Tracker(engine, LOG, unlisted_grace=60)
    tasks = Submitting(tracker)
    tasks.start("a", "b")
    wait_until(lambda: engine.offers == [["a"], ["b"], ["b"]], "the offer at once, refused")
    tracker.release("h-a", LOG)
    assert tasks.join() == {"a": "h-a", "b": "h-b"}


def test_held_submissions_are_offered_again_every_hold_retry_seconds(monkeypatch):
    monkeypatch.setattr(holding, "HOLD_RETRY", 0.05)
    engine = FullEngine(room=1)
    tracker = Tracker(engine, LOG, unlisted_grace=60)
    tasks = Submitting(tracker)
    tasks.start("a", "b")
    wait_until(lambda: len(engine.offers) > 4, "offers while nothing of the run ends")
    engine.room = 2  # a job of the user's other run ended
    assert tasks.join() == {"a": "h-a", "b": "h-b"}


def test_a_held_submission_is_dropped_unsent_when_its_run_terminates_or_at_shutdown(
    monkeypatch,
):
    monkeypatch.setattr(holding, "CHECK_SECONDS", 0.01)
    engine = FullEngine(room=1)
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    tasks = Submitting(tracker)
    tasks.start("a", "b", "c")
    tasks.stops["b"].set()  # Ctrl-C, SIGTERM, fail_fast
    wait_until(lambda: "b" in tasks.outcomes, "b ends")
    assert isinstance(tasks.outcomes["b"], Terminated)
    assert tracker.counts()["queued"] == 2  # a, and c held
    tracker.shutdown()
    assert isinstance(tasks.join()["c"], Terminated)
    assert engine.offers == [["a"], ["b"]] and engine.cancelled == ["h-a"] and engine.shut
    assert tracker.resend_held() == 0 and engine.offers == [["a"], ["b"]]


def test_a_refusal_naming_no_limit_is_a_full_queue_only_while_an_attempt_is_out(caplog):
    caplog.set_level(logging.INFO)
    engine = FullEngine(room=0, limit="")
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    with pytest.raises(QueueFull, match="queue full: a"):  # nothing of ours can end: it fails
        tracker.submit(attempt("a"), "a", LOG)
    engine.room = 1
    tasks = Submitting(tracker)
    tasks.start("b", "c")  # b is out: c waits for it
    assert tracker.counts()["queued"] == 2
    assert '(the service named none)", held: 1' in notices(caplog)[0]
    tracker.release("h-b", LOG)
    assert tracker.resend_held() == 1 and tasks.join() == {"b": "h-b", "c": "h-c"}
    tracker.release("h-c", LOG)
    engine.room = 0  # the user's other runs fill the queue, and nothing of ours is out
    with pytest.raises(QueueFull):
        tracker.submit(attempt("d"), "d", LOG)


class GatheringFullEngine(FullEngine):
    gather_seconds = 0.05
    gather_max_seconds = 1


def test_a_gathering_engine_gets_one_call_at_a_time_and_held_ones_alone(monkeypatch):
    monkeypatch.setattr(holding, "HOLD_RETRY", 0.01)
    engine = GatheringFullEngine(room=2)
    tracker = Tracker(engine, LOG, unlisted_grace=60)
    outcomes = {}

    def submit(name):
        outcomes[name] = tracker.submit(attempt(name), name, LOG)

    threads = [threading.Thread(target=submit, args=(n,)) for n in "abcdef"]
    for thread in threads:
        thread.start()
    while len(outcomes) < 6:  # attempts end as soon as they are out
        for handle in list(outcomes.values()):
            tracker.release(handle, LOG)
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == list("abcdef") and engine.most_inside == 1
    resent = [o for o, t in zip(engine.offers, engine.threads, strict=True) if t.endswith("held")]
    assert resent and all(len(offer) == 1 for offer in resent)
