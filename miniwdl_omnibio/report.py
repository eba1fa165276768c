"""report.html from a run's trace: one self-contained page, no network (inline SVG, CSS, script).

It shows a timeline of the attempts coloured by how each ended (a task's retries share its lane),
the attempts in a table sortable by duration and peak memory, each task's requested against used
resources with right-sizing hints where usage was measured, the run's totals, and a cost
estimate when ``[omnibio] prices`` names the backend. ``python -m miniwdl_omnibio report RUN_DIR``
writes it for any run; ``[omnibio] report = true`` at the end of each run.
"""

import html
import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from WDL._util import StructuredLogMessage as _
from WDL._util import write_atomic

from .config import Price
from .trace import ENDINGS, FAILED, NOT_MEASURED, OOM, TIME_LIMIT, read_trace

REPORT = "report.html"
GIB = 1024**3
WIDTH = 1000  # timeline width in SVG units
LANE = 16  # timeline lane height
AXIS = 24  # room for the time axis under the lanes
MARGIN = 40  # room right of the last tick for its label
# the attempts table is laid out only when scrolled near (CSS content-visibility), so a long one
# costs nothing at load; until then it holds the place of this many pixels per row
ROW_PX = 21
FAILURES = (FAILED, OOM, TIME_LIMIT)
COLOURS = {
    "ok": "#4caf50",
    "failed": "#e53935",
    "oom": "#8e24aa",
    "time limit": "#fb8c00",
    "interrupted": "#1e88e5",
    "cancelled": "#9e9e9e",
}
# each bar's colour from its data-ending, in the style sheet rather than on every bar
FILLS = "".join(f'rect[data-ending="{e}"]{{fill:{c}}}' for e, c in COLOURS.items())
STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
td[data-v],th[data-sort]{text-align:right}
th[data-sort]{cursor:pointer;text-decoration:underline dotted}
.totals td:first-child{color:#555}.legend span{margin-right:1em}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
svg{width:100%;height:auto;border:1px solid #eee}.retry{stroke:#000;stroke-dasharray:2 1}
.queued{stroke:#bbb;stroke-width:2}.tick{stroke:#eee}.hint{color:#a15c00}
.later{content-visibility:auto}
"""
# click a column heading with data-sort: sort the rows by that column's data-v (numbers; empty
# last), descending first, again to reverse
SCRIPT = """
document.querySelectorAll("th[data-sort]").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], col = th.cellIndex;
    var down = th.dataset.dir !== "down"; th.dataset.dir = down ? "down" : "up";
    var key = function (tr) { var v = tr.cells[col].dataset.v; return v === "" ? null : +v; };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) return (x === null) - (y === null);
      return down ? y - x : x - y;
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


@dataclass(frozen=True)
class Span:
    """An attempt on the timeline, in seconds from the run's first submission."""

    row: Mapping[str, Any]
    submitted: float
    started: float
    ended: float


def _epoch(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def spans(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Span], float]:
    """Each attempt's span, and the run's wall time (first submission to last end)."""
    times = []
    for row in rows:
        submitted = _epoch(row["submitted"]) or 0.0
        ended = _epoch(row["ended"]) or submitted
        started = _epoch(row["started"]) or ended
        times.append((row, submitted, started, ended))
    origin = min((t[1] for t in times), default=0.0)
    result = [Span(row, s - origin, b - origin, e - origin) for row, s, b, e in times]
    return result, max((span.ended for span in result), default=0.0)


def lanes(items: Sequence[Span]) -> dict[str, int]:
    """A lane per call, shared by calls that do not overlap; a call's retries stay on its lane."""
    extent: dict[str, list[float]] = {}
    for span in items:
        low, high = extent.setdefault(span.row["call"], [span.submitted, span.ended])
        extent[span.row["call"]] = [min(low, span.submitted), max(high, span.ended)]
    free_at: list[float] = []  # per lane: when its last call ends
    lane_of: dict[str, int] = {}
    for call, (low, high) in sorted(extent.items(), key=lambda item: item[1][0]):
        lane = next((i for i, end in enumerate(free_at) if end <= low), len(free_at))
        if lane == len(free_at):
            free_at.append(high)
        free_at[lane] = high
        lane_of[call] = lane
    return lane_of


def _size(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _text(value: Any) -> str:
    return html.escape("–" if value is None else str(value))


def timeline(items: Sequence[Span], wall: float) -> str:
    lane_of = lanes(items)
    height = LANE * max(1, len(set(lane_of.values()))) + AXIS
    scale = (WIDTH - MARGIN) / (wall or 1.0)
    parts = [f'<svg id="timeline" viewBox="0 0 {WIDTH} {height}" role="img">']
    step = _tick(wall)
    for i in range(int(wall // step) + 1):
        x = i * step * scale
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - AXIS}"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{height - 8}" font-size="10">{_duration(i * step)}</text>'
        )
    for span in items:
        row = span.row
        y = lane_of[row["call"]] * LANE + 2
        x0, x1 = span.submitted * scale, span.started * scale
        if x1 > x0:
            mid = y + (LANE - 4) / 2
            parts.append(
                f'<line class="queued" x1="{x0:.1f}" y1="{mid}" x2="{x1:.1f}" y2="{mid}"/>'
            )
        width = max(1.0, (span.ended - span.started) * scale)
        retry = " retry" if row["attempt"] > 1 else ""
        title = (
            f"{row['call']} attempt {row['attempt']}: {row['ending']}"
            + (f" (exit {row['exit_code']})" if row["exit_code"] is not None else "")
            + f", running {_duration(row['running_seconds'])}, queued "
            + _duration(row["queued_seconds"])
        )
        parts.append(
            f'<rect class="bar{retry}" data-ending="{row["ending"]}" x="{x1:.1f}" y="{y}" '
            f'width="{width:.1f}" height="{LANE - 4}">'
            f"<title>{html.escape(title)}</title></rect>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _tick(wall: float) -> float:
    """A round step that puts at most about ten ticks on the axis."""
    raw = max(wall, 1.0) / 10
    base = 10 ** math.floor(math.log10(raw))
    return next(base * m for m in (1, 2, 5, 10) if base * m >= raw)


def _cell(value: Any, shown: str | None = None, numeric: bool = False) -> str:
    """A table cell; a numeric one carries its value in data-v for sorting."""
    attrs = f' data-v="{"" if value is None else value}"' if numeric else ""
    return f"<td{attrs}>{_text(value) if shown is None else html.escape(shown)}</td>"


def _table(name: str, columns: Sequence[tuple[str, bool]], body: Iterable[str]) -> str:
    """Numeric columns (True) sort on a click on their heading."""
    head = "".join(
        f"<th data-sort>{title}</th>" if numeric else f"<th>{title}</th>"
        for title, numeric in columns
    )
    rows = "".join(f"<tr>{cells}</tr>" for cells in body)
    return f'<table id="{name}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


ATTEMPT_COLUMNS = (
    ("call", False),
    ("attempt", False),
    ("ending", False),
    ("exit", False),
    ("queued", True),
    ("duration", True),
    ("cpu", True),
    ("memory", True),
    ("peak memory", True),
    ("CPU s", True),
    ("verified", False),
    ("reason", False),
)
TASK_COLUMNS = (
    ("task", False),
    ("calls", True),
    ("attempts", True),
    ("failures", True),
    ("cpu", True),
    ("memory", True),
    ("peak memory", True),
    ("CPU s", True),
    ("hint", False),
)


def attempts_table(rows: Iterable[Mapping[str, Any]]) -> str:
    return _table(
        "attempts",
        ATTEMPT_COLUMNS,
        (
            _cell(row["call"])
            + _cell(row["attempt"])
            + _cell(row["ending"])
            + _cell(row["exit_code"])
            + _cell(row["queued_seconds"], _duration(row["queued_seconds"]), numeric=True)
            + _cell(row["running_seconds"], _duration(row["running_seconds"]), numeric=True)
            + _cell(row["cpu"], numeric=True)
            + _cell(row["memory"], _size(row["memory"]), numeric=True)
            + _cell(row["peak_memory"], _size(row["peak_memory"]), numeric=True)
            + _cell(row["cpu_seconds"], _number(row["cpu_seconds"]), numeric=True)
            + _cell(row["verified"], {True: "yes", False: "no", None: "–"}[row["verified"]])
            + _cell(row["reason"])
            for row in rows
        ),
    )


def hint(rows: Sequence[Mapping[str, Any]]) -> str:
    """Right-sizing advice for one task from its attempts' requested and measured figures."""
    if any(row["ending"] == OOM for row in rows):
        return "ran out of memory: raise runtime.memory"
    peaks = [row["peak_memory"] for row in rows if row["peak_memory"] is not None]
    if not peaks:
        return f"usage {NOT_MEASURED}"
    advice = []
    asked, peak = max(row["memory"] or 0 for row in rows), max(peaks)
    if asked and peak < asked / 2:
        advice.append(f"asked {_size(asked)}, peak {_size(peak)}")
    cpu = max(row["cpu"] for row in rows)
    timed = [r for r in rows if r["cpu_seconds"] is not None and r["running_seconds"]]
    if cpu > 1 and timed:
        # average cpus busy while running, over the attempts whose CPU time was measured
        used = sum(r["cpu_seconds"] for r in timed) / sum(r["running_seconds"] for r in timed)
        if used < cpu / 2:
            advice.append(f"asked {cpu} cpu, used {used:.1f} on average")
    return "; ".join(advice) or "well sized"


def tasks_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One row per task: its calls and attempts, the most it asked for and used."""
    by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    body = []
    for task, group in sorted(by_task.items()):
        memory = max(r["memory"] or 0 for r in group)
        peaks = [r["peak_memory"] for r in group if r["peak_memory"] is not None]
        peak = max(peaks) if peaks else None
        measured = [r["cpu_seconds"] for r in group if r["cpu_seconds"] is not None]
        cpu_seconds = sum(measured) if measured else None
        body.append(
            _cell(task)
            + _cell(len({r["call"] for r in group}), numeric=True)
            + _cell(len(group), numeric=True)
            + _cell(sum(r["ending"] in FAILURES for r in group), numeric=True)
            + _cell(max(r["cpu"] for r in group), numeric=True)
            + _cell(memory, _size(memory or None), numeric=True)
            + _cell(peak, _size(peak) if peaks else NOT_MEASURED, numeric=True)
            + _cell(cpu_seconds, _number(cpu_seconds), numeric=True)
            + f'<td class="hint">{html.escape(hint(group))}</td>'
        )
    return _table("tasks", TASK_COLUMNS, body)


def totals(rows: Sequence[Mapping[str, Any]], wall: float, prices: Mapping[str, Price]) -> str:
    """CPU-hours (allocated: cpu × running time; measured where known), wall time, attempts,
    failures, and the cost estimate from the price table."""
    cpu_hours: dict[str, float] = defaultdict(float)
    gib_hours: dict[str, float] = defaultdict(float)
    for row in rows:
        hours = (row["running_seconds"] or 0) / 3600
        cpu_hours[row["backend"]] += row["cpu"] * hours
        gib_hours[row["backend"]] += (row["memory"] or 0) / GIB * hours
    measured = [row["cpu_seconds"] for row in rows if row["cpu_seconds"] is not None]
    endings = Counter(row["ending"] for row in rows)
    lines = [
        ("wall time", _duration(wall)),
        ("attempts", str(len(rows))),
        ("failures", str(sum(endings[e] for e in FAILURES))),
        ("endings", ", ".join(f"{endings[e]} {e}" for e in ENDINGS if endings[e])),
        ("CPU-hours allocated", f"{sum(cpu_hours.values()):.3g}"),
        ("CPU-hours measured", f"{sum(measured) / 3600:.3g}" if measured else NOT_MEASURED),
        ("GiB-hours allocated", f"{sum(gib_hours.values()):.3g}"),
    ]
    priced = [b for b in cpu_hours if b in prices]
    if priced:
        cost = sum(
            cpu_hours[b] * prices[b].cpu_hour + gib_hours[b] * prices[b].gib_hour for b in priced
        )
        unpriced = sorted(set(cpu_hours) - set(priced))
        note = f" ({', '.join(unpriced)} not priced)" if unpriced else ""
        lines.append(("cost estimate", f"{cost:.2f} (allocated cpu and memory){note}"))
    cells = "".join(
        f"<tr><td>{name}</td><td>{html.escape(value)}</td></tr>" for name, value in lines
    )
    return f'<table class="totals" id="totals">{cells}</table>'


def render(run: str, rows: Sequence[Mapping[str, Any]], prices: Mapping[str, Price]) -> str:
    items, wall = spans(rows)
    legend = "".join(f'<span><i style="background:{COLOURS[e]}"></i>{e}</span>' for e in ENDINGS)
    title = html.escape(f"omnibio report: {run}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}{FILLS}</style></head><body>\n<h1>{title}</h1>\n"
        f"{totals(rows, wall, prices)}\n"
        f'<h2>Timeline</h2><p class="legend">{legend}<span>dashed outline: a retry; '
        f"grey line: queued</span></p>\n{timeline(items, wall)}\n"
        f"<h2>Tasks: requested and used</h2>\n{tasks_table(rows)}\n"
        f'<h2>Attempts</h2>\n<div class="later" style="contain-intrinsic-size:auto '
        f'{ROW_PX * (len(rows) + 1)}px">{attempts_table(rows)}</div>\n'
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(
    run_dir: str, prices: Mapping[str, Price], logger: logging.Logger | None = None
) -> str | None:
    """Write report.html from the run's trace; returns its path. With a logger (the end of a
    run), a problem is a warning; without, it raises."""
    try:
        rows = read_trace(run_dir)
        path = os.path.join(run_dir, REPORT)
        write_atomic(render(os.path.basename(run_dir.rstrip("/")), rows, prices), path, end="")
    except (OSError, ValueError) as exn:
        if logger is None:
            raise
        logger.warning(_("cannot write report.html", dir=run_dir, error=str(exn)))
        return None
    if logger is not None:
        logger.info(_("report written", path=path))
    return path
