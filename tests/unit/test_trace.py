"""The run's trace: one row per attempt, how an ending is named, many task threads writing at once,
the tracker's times and counts it is made of, progress lines and the [omnibio] keys."""

import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import replace

import pytest
from WDL.runtime.config import Loader
from WDL.runtime.error import Interrupted, Terminated

from miniwdl_omnibio.attempt import Resources
from miniwdl_omnibio.config import ConfigError, OmnibioSettings, Price, check_sections
from miniwdl_omnibio.contract import workflow_run_dir
from miniwdl_omnibio.engines.base import RUNNING, Phase, Status
from miniwdl_omnibio.trace import (
    CANCELLED,
    FAILED,
    FIELDS,
    INTERRUPTED,
    JSON,
    OK,
    OOM,
    TIME_LIMIT,
    TSV,
    Progress,
    Traces,
    attempt_row,
    ending,
    read_trace,
)
from miniwdl_omnibio.tracker import Tracker
from tests.unit.test_tracker import Clock, ScriptedEngine, attempt

LOG = logging.getLogger("test")
DONE0 = Status(Phase.DONE, exit_code=0)


@pytest.mark.parametrize(
    ("status", "raised", "exit_ok", "expected"),
    [
        (DONE0, None, True, OK),
        (Status(Phase.DONE, exit_code=1), None, False, FAILED),
        (DONE0, RuntimeError("results.json missing"), True, FAILED),  # verification failed
        (Status(Phase.DONE, exit_code=137, oom=True), None, False, OOM),
        (Status(Phase.DONE, timed_out=True), RuntimeError("time limit"), False, TIME_LIMIT),
        (Status(Phase.DONE, interrupted=True), Interrupted("spot"), False, INTERRUPTED),
        (RUNNING, Terminated(quiet=True), False, CANCELLED),
        (RUNNING, KeyboardInterrupt(), False, CANCELLED),
        (None, RuntimeError("image refused"), False, FAILED),  # never submitted
    ],
)
def test_ending_names_the_services_typed_facts_first(status, raised, exit_ok, expected):
    assert ending(status, raised, exit_ok) == expected


def _row(name="a", number=1, end=OK, reason=None, times=(100.0, 102.5, 110.0)):
    task_attempt = replace(
        attempt(name),
        attempt=number,
        resources=Resources(2, 2 * 1024**3, 4 * 1024**3, 0, None, None, 0),
    )
    return attempt_row(
        task_attempt,
        task="t" + name,
        backend="omnibio_test",
        handle=f"h-{name}-{number}",
        times=times,
        status=Status(Phase.DONE, exit_code=0 if end == OK else 1, reason="exited"),
        end=end,
        reason=reason,
        verified=True if end == OK else None,
    )


def test_a_row_carries_times_resources_and_what_is_not_measured():
    row = _row()
    assert list(row) == list(FIELDS)
    assert row["submitted"] == "1970-01-01T00:01:40.000+00:00"
    assert row["started"] == "1970-01-01T00:01:42.500+00:00"
    assert (row["queued_seconds"], row["running_seconds"]) == (2.5, 7.5)
    assert (row["cpu"], row["memory"]) == (2, 4 * 1024**3)  # the limit, as granted
    assert (row["peak_memory"], row["cpu_seconds"], row["usage"]) == (None, None, "not measured")
    assert row["reason"] == "exited"  # the service's words when nothing was raised
    assert row["image_id"] is None  # unknown unless the engine says
    never_started = _row(times=(100.0, None, 101.0))
    assert (never_started["queued_seconds"], never_started["running_seconds"]) == (1.0, None)


def test_many_task_threads_end_attempts_at_once(tmp_path):
    """One row per attempt in both files, none torn: every TSV line has every field."""
    traces = Traces()
    threads = [
        threading.Thread(
            target=lambda t=t: [
                traces.add(str(tmp_path), _row(f"{t}", n, reason="a\ttab\nand newline"))
                for n in range(1, 26)
            ]
        )
        for t in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert traces.flush() == [str(tmp_path)]
    lines = (tmp_path / TSV).read_text().splitlines()
    assert lines[0].split("\t") == list(FIELDS)
    assert len(lines) == 501 and all(len(line.split("\t")) == len(FIELDS) for line in lines)
    document = json.loads((tmp_path / JSON).read_text())
    assert (document["run"], len(document["attempts"])) == (tmp_path.name, 500)
    rows = read_trace(str(tmp_path))
    assert {(r["call"], r["attempt"]) for r in rows} == {
        (f"call-{t}", n) for t in range(20) for n in range(1, 26)
    }
    # the TSV reads back typed as the JSON holds it (whitespace in the reason folded)
    by_key = {(r["call"], r["attempt"]): r for r in document["attempts"]}
    for row in rows:
        expected = by_key[(row["call"], row["attempt"])]
        assert row == {**expected, "reason": "a tab and newline"}
    assert traces.endings() == Counter({OK: 500})


def test_sub_workflows_share_the_top_run_directory(tmp_path):
    top = str(tmp_path / "20260101_000000_wf")
    stack = ("wf", "call-sub", "call-inner")
    assert workflow_run_dir(f"{top}/call-sub/call-inner", stack) == top
    assert workflow_run_dir(f"{top}/", ("task",)) == top  # miniwdl run --task


def test_the_tracker_keeps_times_and_counts_for_the_trace():
    clock = Clock()
    engine = ScriptedEngine()
    tracker = Tracker(engine, LOG, unlisted_grace=30, clock=clock, background=False)
    first = tracker.submit(attempt("a"), "a", LOG)
    retry = tracker.submit(replace(attempt("b"), attempt=2), "b", LOG)
    engine.answers = {first: RUNNING, retry: Status(Phase.QUEUED)}
    clock.now += 2
    tracker.poll_once()
    assert tracker.counts() == {"queued": 1, "running": 1, "submitted": 2, "retried": 1}
    engine.answers[first] = DONE0
    clock.now += 5
    tracker.poll_once()
    outcome = tracker.outcome(first)
    assert outcome is not None and outcome.status == DONE0
    assert outcome.started is not None and outcome.ended is not None
    assert (outcome.started - outcome.submitted, outcome.ended - outcome.started) == (
        pytest.approx(2),
        pytest.approx(5),
    )
    assert abs(outcome.submitted - (time.time() - 7)) < 5  # wall clock, not the tracker's clock
    tracker.release(first, LOG)
    assert tracker.outcome(first) is None
    assert tracker.counts() == {"queued": 1, "running": 0, "submitted": 2, "retried": 1}


def test_progress_line_counts_queued_running_done_failed_retried(caplog):
    counts = {"queued": 0, "running": 0, "submitted": 0, "retried": 0}
    endings: Counter[str] = Counter()
    progress = Progress(LOG, 60, lambda: counts, lambda: endings)
    with caplog.at_level(logging.INFO):
        progress.log_once()
    assert not caplog.records  # nothing submitted yet: no line
    counts.update(queued=3, running=2, submitted=9, retried=1)
    endings.update({OK: 2, FAILED: 1, OOM: 1, CANCELLED: 0})
    assert progress.line() == {
        "queued": 3,
        "running": 2,
        "done": 4,
        "total": 9,
        "failed": 2,
        "retried": 1,
    }
    with caplog.at_level(logging.INFO):
        progress.log_once()
    (record,) = caplog.records
    assert record.getMessage() == (
        "omnibio progress :: queued: 3, running: 2, done: 4, total: 9, failed: 2, retried: 1"
    )


def _cfg(monkeypatch, **omnibio):
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    return Loader(LOG, filenames=[], overrides={"omnibio": omnibio})


def test_report_progress_and_prices_keys(monkeypatch):
    cfg = _cfg(
        monkeypatch,
        report="true",
        progress_seconds="15",
        prices='{"omnibio_awsbatch": {"cpu_hour": 0.04, "gib_hour": 0.005}}',
    )
    check_sections(cfg, ["omnibio"])
    settings = OmnibioSettings.load(cfg)
    assert (settings.report, settings.progress_seconds) == (True, 15.0)
    assert settings.prices == {"omnibio_awsbatch": Price(0.04, 0.005)}
    defaults = OmnibioSettings.load(_cfg(monkeypatch))
    assert (defaults.report, defaults.progress_seconds, defaults.prices) == (False, 60.0, {})


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ('{"omnibio_aws": {"cpu_hour": 1}}', "'omnibio_aws' is not a backend"),
        ('{"omnibio_docker": {"cpu_hour": -1}}', "omnibio_docker: want"),
        ('{"omnibio_docker": {"cpu": 1}}', "omnibio_docker: want"),
        ('{"omnibio_docker": 3}', "omnibio_docker: want"),
        ("[1]", "should be a JSON dict"),
    ],
)
def test_a_bad_price_table_names_the_key(monkeypatch, prices, message):
    with pytest.raises(ConfigError, match=r"\[omnibio\] prices .*" + message):
        OmnibioSettings.load(_cfg(monkeypatch, prices=prices))


def test_a_row_carries_the_image_id_the_engine_reports():
    status = Status(Phase.DONE, exit_code=0, details={"image_id": "sha256:abc"})
    row = attempt_row(
        attempt("a"),
        task="ta",
        backend="omnibio_docker",
        handle="h",
        times=(100.0, 101.0, 102.0),
        status=status,
        end=OK,
        reason=None,
        verified=None,
    )
    assert row["image_id"] == "sha256:abc"
