"""A synthetic run's trace, written through the plugin's own trace writer: a scatter of tasks
where some attempts fail and are retried, run out of memory, hit their time limit, are
interrupted or cancelled, and half the tasks have measured usage (so hints show); only
qc_report runs out of memory."""

import random
from collections import Counter
from typing import Any

from miniwdl_omnibio.trace import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    NOT_MEASURED,
    OK,
    OOM,
    TIME_LIMIT,
    TraceFile,
    utc,
)

TASKS = ("align", "sort_bam", "call_variants", "qc_report")
GIB = 1024**3
START = 1_800_000_000.0  # seconds since the epoch
# the ending of a failed attempt, by weight (the rest end ok)
BAD = ((FAILED, 5), (OOM, 2), (TIME_LIMIT, 1), (INTERRUPTED, 1), (CANCELLED, 1))


def _row(task: str, call: str, attempt: int, at: float, end: str, rng: random.Random):
    queued, running = rng.uniform(0.5, 30), rng.uniform(5, 600)
    measured = task in TASKS[:2]
    memory = 8 * GIB if task == "align" else 2 * GIB
    return {
        "call": call,
        "task": task,
        "attempt": attempt,
        "backend": "omnibio_awsbatch" if task == "call_variants" else "omnibio_docker",
        "handle": f"h-{call}-{attempt}",
        "run_id": f"run.{call}.{attempt}",
        "submitted": utc(at),
        "started": utc(at + queued),
        "ended": utc(at + queued + running),
        "queued_seconds": round(queued, 3),
        "running_seconds": round(running, 3),
        "exit_code": 0 if end == OK else (137 if end == OOM else 1),
        "ending": end,
        "reason": None if end == OK else f"synthetic {end}",
        "cpu": 4 if task == "align" else 1,
        "memory": memory,
        "peak_memory": int(memory * rng.uniform(0.1, 0.3)) if measured else None,
        "cpu_seconds": round(running * rng.uniform(0.5, 1.2), 3) if measured else None,
        "usage": "cgroup" if measured else NOT_MEASURED,
        "image": "ubuntu:22.04",
        "image_id": None,
        "verified": True if end == OK else None,
    }


def write_trace(run_dir: str, attempts: int, seed: int = 21) -> list[dict[str, Any]]:
    """Write ``attempts`` rows to run_dir's trace; each task call ends ok after 0-2 bad tries."""
    rng = random.Random(seed)
    trace = TraceFile(run_dir)
    shard = Counter[str]()
    while len(trace.rows) < attempts:
        task = TASKS[len(trace.rows) % len(TASKS)]
        call = f"call-{task}-{shard[task]}"
        shard[task] += 1
        at = START + rng.uniform(0, 3600)
        for attempt in range(1, 4):
            bad = attempt < 3 and rng.random() < 0.2 and len(trace.rows) < attempts - 1
            end = rng.choices([e for e, _w in BAD], [w for _e, w in BAD])[0] if bad else OK
            if end == OOM and task != "qc_report":
                end = FAILED  # one task runs out of memory; the others show usage hints
            row = _row(task, call, attempt, at, end, rng)
            trace.add(row)
            at += row["queued_seconds"] + row["running_seconds"] + 5
            if end == OK or len(trace.rows) == attempts:
                break
    trace.flush()
    return trace.rows
