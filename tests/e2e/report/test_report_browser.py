"""report.html in a real browser (headless Chromium): what a user sees is there, sorting works,
nothing is fetched from the network and the console stays clean."""

import os

import pytest

from miniwdl_omnibio.report import write_report
from tests.e2e.report.browser import load
from tests.e2e.report.synthetic import write_trace

pytestmark = pytest.mark.usefixtures("browser_rig")

# the data-v values of column ``col`` of #attempts, top to bottom ("" = not measured)
COLUMN = (
    "Array.from(document.querySelectorAll('#attempts tbody tr')).map(r => r.cells[%d].dataset.v)"
)
CLICK = "document.querySelectorAll('#attempts th')[%d].click()"
DURATION, PEAK = 5, 8  # column indexes in the attempts table


def _numbers(values):
    return [float(v) for v in values if v != ""]


def test_report_loads_with_a_bar_per_attempt_a_row_per_task_and_no_errors(tmp_path, artifacts):
    rows = write_trace(str(tmp_path), 120)
    path = write_report(str(tmp_path), {})
    assert path
    screenshot = os.path.join(artifacts, "report-synthetic.png")
    page = load(
        path,
        {
            "bars": "document.querySelectorAll('#timeline rect.bar').length",
            "retries": "document.querySelectorAll('#timeline rect.bar.retry').length",
            "tasks": "document.querySelectorAll('#tasks tbody tr').length",
            "attempts": "document.querySelectorAll('#attempts tbody tr').length",
            "by_duration": f"{CLICK % DURATION}; {COLUMN % DURATION}",
            "by_duration_up": f"{CLICK % DURATION}; {COLUMN % DURATION}",
            "by_peak": f"{CLICK % PEAK}; {COLUMN % PEAK}",
        },
        screenshot=screenshot,
    )
    assert page.errors == []
    assert page.requests == ["file://" + os.path.abspath(path)]  # nothing else, no CDN
    values = page.values
    assert (values["bars"], values["attempts"]) == (120, 120)
    assert values["retries"] == sum(r["attempt"] > 1 for r in rows) > 0
    assert values["tasks"] == len({r["task"] for r in rows})
    durations = _numbers(values["by_duration"])
    assert durations == sorted(durations, reverse=True) and len(durations) == 120
    assert _numbers(values["by_duration_up"]) == sorted(durations)
    peaks = values["by_peak"]
    measured = _numbers(peaks)
    assert measured == sorted(measured, reverse=True)
    assert peaks[: len(measured)] == [v for v in peaks if v != ""]  # not measured: last
    with open(screenshot, "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_browser_check_sees_console_errors_and_exceptions(tmp_path):
    """The clean console above means something: a broken page is caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><script>console.error('bad thing'); undefined_function();</script>"
        "</body></html>"
    )
    errors = load(str(page), {}).errors
    assert any("bad thing" in e for e in errors)
    assert any("undefined_function" in e for e in errors)
