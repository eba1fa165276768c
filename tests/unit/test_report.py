"""report.html from a trace: self-contained, one bar per attempt and one row per task, retries on
their task's lane, right-sizing hints, totals and the cost estimate, and the command line. The
browser tests (tests/e2e/report) load it in headless Chromium."""

import re

import pytest

from miniwdl_omnibio.cli.main import main
from miniwdl_omnibio.config import Price
from miniwdl_omnibio.report import GIB, Span, hint, lanes, render, totals
from miniwdl_omnibio.trace import FAILED, OK, OOM, TSV
from tests.e2e.report.synthetic import write_trace


def _span(call, start, end, attempt=1):
    return Span({"call": call, "attempt": attempt}, start, start, end)


def test_retries_share_their_calls_lane_and_idle_lanes_are_reused():
    placed = lanes(
        [
            _span("call-a", 0, 10),
            _span("call-a", 12, 20, attempt=2),  # a's retry
            _span("call-b", 5, 15),  # overlaps a: a lane of its own
            _span("call-c", 21, 30),  # after a and its retry: a's lane again
        ]
    )
    assert placed == {"call-a": 0, "call-b": 1, "call-c": 0}


def _usage(memory, peak, cpu=1, cpu_seconds=None, running=100.0, end=OK):
    return {
        "memory": memory,
        "peak_memory": peak,
        "cpu": cpu,
        "cpu_seconds": cpu_seconds,
        "running_seconds": running,
        "ending": end,
    }


def test_hints_come_from_measured_usage_only():
    assert hint([_usage(8 * GIB, int(1.2 * GIB))]) == "asked 8 GiB, peak 1.2 GiB"
    assert hint([_usage(8 * GIB, None)]) == "usage not measured"
    assert hint([_usage(2 * GIB, GIB // 2), _usage(2 * GIB, None, end=OOM)]).startswith(
        "ran out of memory"
    )
    assert hint([_usage(GIB, int(0.9 * GIB), cpu=8, cpu_seconds=150.0)]) == (
        "asked 8 cpu, used 1.5 on average"
    )
    assert hint([_usage(GIB, int(0.9 * GIB), cpu=2, cpu_seconds=190.0)]) == "well sized"


def test_totals_price_allocated_cpu_and_memory_per_backend():
    rows = [
        {
            "backend": "omnibio_awsbatch",
            "cpu": 4,
            "memory": 8 * GIB,
            "running_seconds": 1800.0,
            "cpu_seconds": None,
            "ending": OK,
        },
        {
            "backend": "omnibio_docker",
            "cpu": 1,
            "memory": None,
            "running_seconds": 3600.0,
            "cpu_seconds": None,
            "ending": FAILED,
        },
    ]
    page = totals(rows, 3600.0, {"omnibio_awsbatch": Price(cpu_hour=0.5, gib_hour=0.25)})
    assert "<td>CPU-hours allocated</td><td>3</td>" in page  # 4 x 0.5 h + 1 x 1 h
    assert "<td>GiB-hours allocated</td><td>4</td>" in page
    # 2 CPU-hours x 0.5 + 4 GiB-hours x 0.25 on Batch; docker has no price
    assert "<td>cost estimate</td><td>2.00 (allocated cpu and memory) (omnibio_docker" in page
    assert "<td>failures</td><td>1</td>" in page
    assert "cost estimate" not in totals(rows, 3600.0, {})


def test_the_page_is_self_contained_with_a_bar_per_attempt_and_a_row_per_task(tmp_path):
    rows = write_trace(str(tmp_path), 60)
    rows[0]["call"] = "call-<script>alert(1)</script>"
    page = render("20260101_000000_wf", rows, {})
    assert not re.search(r"https?://|<link|\ssrc=|@import", page)  # nothing from the network
    assert page.count('<rect class="bar') == 60
    assert page.count('class="bar retry"') == sum(r["attempt"] > 1 for r in rows)
    tasks = re.search(r'<table id="tasks">.*?</table>', page, re.S)
    assert tasks and tasks.group(0).count("<tr>") == 1 + len({r["task"] for r in rows})
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_command_line_writes_the_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINIWDL_CFG", "/dev/null")
    write_trace(str(tmp_path), 5)
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.html")
    assert (tmp_path / "report.html").read_text().count('<rect class="bar') == 5
    cfg = tmp_path / "priced.cfg"
    cfg.write_text('[omnibio]\nprices = {"omnibio_docker": {"cpu_hour": 1}}\n')
    assert main(["report", str(tmp_path), "--cfg", str(cfg)]) == 0
    assert "<td>cost estimate</td>" in (tmp_path / "report.html").read_text()
    (tmp_path / TSV).unlink()
    assert main(["report", str(tmp_path)]) == 1
    assert f"cannot write report.html in {tmp_path}" in capsys.readouterr().err


@pytest.mark.parametrize("attempts", [0, 1])
def test_an_empty_or_single_attempt_trace_renders(tmp_path, attempts):
    rows = write_trace(str(tmp_path), attempts) if attempts else []
    assert render("run", rows, {}).count('<rect class="bar') == attempts
