"""The probe task of ``python -m miniwdl_omnibio check``: one tiny task run by ``miniwdl run``
with the user's configuration, so it goes through exactly the path a workflow's tasks take.

The task reads an input file placed in the run directory (on the shared filesystem, for the
engines that have one), uploads results.json to its RESULT_URI with the tool runtime, and writes
what it saw to ``probe.json`` in its working directory, which this host then reads back.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any

MARKER = "omnibio preflight marker"

PROBE_WDL = r"""
version 1.1

task omnibio_preflight_probe {
    input {
        File marker
        String image
    }
    command <<<
        python3 - <<'PY'
        import json, os
        report = {}
        try:
            with open(json.loads(os.environ["INPUTS_JSON"])["marker"]) as infile:
                report["input"] = infile.read().strip()
        except Exception as exn:
            report["input_error"] = f"{type(exn).__name__}: {exn}"[:300]
        if os.environ.get("RESULT_URI"):
            try:
                from miniwdl_omnibio.runtime import write_result
                write_result({"probe": report.get("input", "")})
                report["uploaded"] = os.environ["RESULT_URI"]
                report["run_id"] = os.environ["RUN_ID"]
            except Exception as exn:
                first = (str(exn).strip().splitlines() or [""])[0]
                report["upload_error"] = f"{type(exn).__name__}: {first}"[:300]
        with open("probe.json", "w") as outfile:
            json.dump(report, outfile)
        PY
    >>>
    output {
        File report = "probe.json"
    }
    runtime {
        docker: image
        cpu: 1
        memory: "256 MiB"
        omnibio_result_check: "off"
    }
}
"""


@dataclass
class ProbeRun:
    """What the probe's ``miniwdl run`` left: its error line, or the task's own report."""

    error: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    run_dir: str | None = None


def _tail(text: str, lines: int = 2) -> str:
    kept = [line.strip() for line in str(text).splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[:400]


def _error_line(stdout: str, stderr: str) -> str:
    """One line from miniwdl's --error-json: the cause's message, or the failed command's exit
    status with the last lines it (or the engine, in failure_info) wrote on stderr."""
    try:
        error = json.loads(stdout)
        cause = error.get("cause") if isinstance(error.get("cause"), dict) else error
        message = cause.get("message") or error.get("message")
        if not message and "exit_status" in cause:
            message = f"the task failed with exit status {cause['exit_status']}"
            tails = [v for k, v in cause.items() if k.endswith("_tail") and v]
            if not tails and cause.get("stderr_file"):
                with open(cause["stderr_file"], errors="replace") as infile:
                    tails = [infile.read()]
            message += f" ({_tail(tails[0])})" if tails and _tail(tails[0]) else ""
        if message:
            return " ".join(str(message).split())
    except (ValueError, AttributeError, OSError):
        pass
    return _tail(stderr, 1) or "miniwdl run failed with no message"


def run_probe(
    directory: str, cfg: str | None, image: str, timeout: float, env: dict[str, str]
) -> ProbeRun:
    """Run the probe task in ``directory``; on timeout miniwdl is sent SIGTERM (it cancels)."""
    wdl = os.path.join(directory, "probe.wdl")
    marker = os.path.join(directory, "marker.txt")
    with open(wdl, "w") as outfile:
        outfile.write(textwrap.dedent(PROBE_WDL).lstrip())
    with open(marker, "w") as outfile:
        outfile.write(MARKER + "\n")
    argv = [sys.executable, "-m", "WDL", "run", wdl, f"marker={marker}", f"image={image}"]
    argv += ["--dir", directory, "--no-cache", "--error-json", "--no-color"]
    argv += ["--cfg", cfg] if cfg else []
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # miniwdl cancels the probe's task, then exits
        proc.communicate()
        return ProbeRun(error=f"did not finish within {timeout:.0f} s (--timeout)")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: miniwdl cancels its task before we go
        proc.send_signal(signal.SIGTERM)
        proc.communicate()
        raise
    if proc.returncode != 0:
        return ProbeRun(error=_error_line(stdout, stderr))
    outputs = json.loads(stdout)
    with open(outputs["outputs"]["omnibio_preflight_probe.report"]) as infile:
        return ProbeRun(report=json.load(infile), run_dir=outputs["dir"])
