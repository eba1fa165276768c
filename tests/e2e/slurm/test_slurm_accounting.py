"""omnibio_slurm on the rig's real accounting: slurmdbd on MariaDB, AccountingStorageEnforce=
associations,limits,qos, and the opt-in QOS "limited" (MaxJobsPerUser=2, MaxSubmitJobsPerUser=4;
tests/rig/slurm.sh). Slurm's own answers are read from outside the engine: squeue, sacct from
the database, slurmctld's log."""

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterable

from miniwdl_omnibio.engines.base import Phase, Status, Submitted
from miniwdl_omnibio.engines.slurm import status as slurm_status
from miniwdl_omnibio.engines.slurm.engine import SlurmEngine
from tests.e2e.slurm.conftest import (
    QOS,
    Blockers,
    active_jobs,
    engine_config,
    sacct,
    slurm_config,
    squeue_jobs,
    start_engine,
)
from tests.e2e.slurm.test_slurm_backend import SCATTER, assert_results_verified, write
from tests.helpers import popen_miniwdl, run_dir_name, run_miniwdl, wait_until, workflow_run_of
from tests.unit.test_slurm_translation import make_attempt


def most_at_once(intervals: Iterable[tuple[str, str]]) -> int:
    """The most intervals (sacct's ISO timestamps, to the second) open at one moment; an end
    and a start in the same second do not overlap."""
    events = sorted((t, step) for start, end in intervals for t, step in ((start, 1), (end, -1)))
    most = now = 0
    for _t, step in events:
        now += step
        most = max(most, now)
    return most


def slurmctld_log() -> str:
    done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        key, _sep, value = line.partition("=")
        if key.strip() == "SlurmctldLogFile":
            return value.strip()
    raise AssertionError("scontrol show config names no SlurmctldLogFile")


def log_since(path: str, offset: int) -> str:
    with open(path, errors="replace") as infile:
        infile.seek(offset)
        return infile.read()


def test_a_scatter_wider_than_the_qos_limits_completes(qos_alone, shared_dir, rundir):
    """12 tasks under a QOS that runs 2 of the user's jobs at once and queues 4: the jobs wait
    (QOSMaxJobsPerUserLimit) and the submissions over 4 are held until jobs end
    (QOSMaxSubmitJobPerUserLimit); every result is verified."""
    wdl = write(rundir, "wide.wdl", SCATTER.replace("range(4)", "range(12)"))
    config = {
        **slurm_config(shared_dir, results=True, qos=QOS),
        "scheduler": {"task_concurrency": "12"},
    }
    run = run_miniwdl(wdl, [], rundir, backend="omnibio_slurm", config=config, timeout=900)
    assert_results_verified(run, 12)
    # the tracker's line for the run when the limits its jobs wait at change
    assert "jobs wait until jobs holding a limit of the service end" in run.stderr
    assert "QOSMaxJobsPerUserLimit" in run.stderr
    workflow_run = workflow_run_of(run.dir)

    # what the accounting database recorded: 12 jobs (array elements or lone jobs) under the
    # QOS, none refused, at most 2 running and at most 4 submitted at any moment
    def recorded() -> list[list[str]]:
        return [
            fields
            for fields in sacct(
                "--starttime=now-6hours", "--format=JobID,JobName,QOS,State,Submit,Start,End"
            )
            if fields[1].startswith(workflow_run + ".")
        ]

    jobs = wait_until(lambda: len(recorded()) >= 12 and recorded(), "12 jobs in sacct", 60)
    assert len(jobs) == 12, jobs
    assert {(qos, state) for _i, _n, qos, state, *_t in jobs} == {(QOS, "COMPLETED")}, jobs
    assert most_at_once((start, end) for *_f, _submit, start, end in jobs) <= 2
    assert most_at_once((submit, end) for *_f, submit, _start, end in jobs) <= 4


def test_submissions_over_the_submit_limit_wait_for_jobs_to_end(qos_alone, shared_dir, rundir):
    """The user already has 4 jobs under the QOS: slurmctld refuses the run's sbatch
    (QOSMaxSubmitJobPerUserLimit, in its log); the run holds it and sends it once they end."""
    wdl = write(
        rundir,
        "one.wdl",
        'version 1.1\ntask one { command <<< echo one >>> runtime { docker: "ubuntu:22.04" '
        'memory: "64 MiB" omnibio_result_check: "off" } }\n',
    )
    log = slurmctld_log()
    with Blockers(rundir, 4, f"--qos={QOS}") as blockers:
        blockers.wait_running(2)  # and 2 pending: the user's 4 submissions are in
        offset = os.path.getsize(log)
        proc = popen_miniwdl(wdl, [], rundir, "omnibio_slurm", slurm_config(shared_dir, qos=QOS))
        try:
            name = run_dir_name(rundir)
            run = workflow_run_of(os.path.join(rundir, name))
            wait_until(
                lambda: "QOSMaxSubmitJobPerUserLimit" in log_since(log, offset),
                "slurmctld refusing the run's sbatch for the submit limit",
                120,
            )
            assert not active_jobs(run) and proc.poll() is None  # held, not failed
            blockers.release()
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["dir"].endswith(name)
    # the tracker's two lines: holding starts, then nothing is held any more
    assert "omnibio_slurm: the service's submit limit is reached" in stderr, stderr[-3000:]
    assert "omnibio_slurm: no submission is held now" in stderr, stderr[-3000:]


def probe_jobs(directory: str) -> list[list[str]]:
    """squeue's probe jobs submitted from ``directory`` (sbatch's default WorkDir is its cwd):
    id, state, reason."""
    return [
        fields[:3]
        for fields in squeue_jobs("--states=all", "--format=%i|%T|%r|%j|%Z")
        if fields[3] == "omnibio-probe" and fields[4] == directory
    ]


def sacct_probes(directory: str) -> list[list[str]]:
    return [
        fields[:2]
        for fields in sacct("--starttime=now-1hours", "--format=JobID,State,JobName,WorkDir")
        if fields[2] == "omnibio-probe" and fields[3] == directory
    ]


def test_the_probe_passes_for_a_user_already_at_the_qos_limit(
    qos_alone, shared_dir, rundir, monkeypatch
):
    """Two of the user's jobs run under the QOS: the probe job waits with
    QOSMaxJobsPerUserLimit (a limit that lifts when they end), and runs once one ends."""
    monkeypatch.chdir(rundir)
    config = engine_config(shared_dir, monkeypatch, qos=QOS, probe="true", probe_timeout="300")
    started: dict[str, object] = {}

    def start() -> None:
        try:
            started["engine"] = SlurmEngine.start(config, logging.getLogger("test"))
        except Exception as exn:
            started["error"] = exn

    with Blockers(rundir, 2, f"--qos={QOS}") as blockers:
        blockers.wait_running(2)
        thread = threading.Thread(target=start, daemon=True)
        thread.start()
        wait_until(
            lambda: (
                any(
                    state == "PENDING" and reason == "QOSMaxJobsPerUserLimit"
                    for _id, state, reason in probe_jobs(rundir)
                )
                or not thread.is_alive()
            ),
            "the probe job pending with QOSMaxJobsPerUserLimit",
            120,
        )
        assert "error" not in started, started.get("error")
        blockers.release()
        thread.join(180)
    assert not thread.is_alive() and "error" not in started, started.get("error")
    probes = wait_until(lambda: sacct_probes(rundir), "the probe job in sacct", 60)
    assert [state for _id, state in probes] == ["COMPLETED"]


def test_the_probe_is_skipped_with_a_warning_on_a_busy_cluster(
    slurm_rig, shared_dir, rundir, monkeypatch, caplog
):
    """docs/slurm.md: on a busy cluster the probe may not run within probe_timeout; the check
    is then skipped with a warning, and the probe job does not stay queued."""
    monkeypatch.chdir(rundir)
    caplog.set_level(logging.WARNING, logger="test")
    with Blockers(rundir, 1, "--exclusive") as blockers:  # the node, all its CPUs
        blockers.wait_running(1)
        started = time.monotonic()
        start_engine(shared_dir, monkeypatch, probe="true", probe_timeout="3")
        waited = time.monotonic() - started
    assert 3 <= waited < 60
    assert "probe job did not run in time; not checked" in caplog.text, caplog.text
    # scancelled at the timeout, never ran (slurmctld sends the record to slurmdbd a moment later)
    (probe,) = wait_until(lambda: sacct_probes(rundir), "the probe job in sacct", 60)
    assert probe[1].startswith("CANCELLED"), probe


def test_jobs_squeue_forgot_are_read_from_sacct(accounting, shared_dir, rundir, monkeypatch):
    """Jobs that ended more than MinJobAge (30 s on the rig) ago are gone from squeue: one
    squeue, then one sacct against the database answers for all of them, array elements
    included, through the state mapping."""
    engine = start_engine(shared_dir, monkeypatch)
    monkeypatch.setattr(slurm_status, "RECORD_GRACE", 0.0)  # no exit record will ever come

    def sbatch(*options: str) -> str:
        done = subprocess.run(
            ["sbatch", "--parsable", "--mem=16M", "--time=5", f"--chdir={rundir}"]
            + ["--output=/dev/null", "--error=/dev/null", "--job-name=omnibio-test-sacct"]
            + list(options),
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip().split(";")[0]

    held = sbatch("--hold", "--wrap=true")  # cancelled by someone else before it ever ran
    subprocess.run(["scancel", held], check=True)
    unreadable = sbatch("--wrap=exit 97")  # the batch script's "node cannot read attemptN.sh"
    array = sbatch("--array=0-1", "--wrap=exit $((SLURM_ARRAY_TASK_ID + 5))")
    ours = sbatch("--wrap=sleep 300")  # cancelled by this run, its script recorded the signal
    wait_until(
        lambda: "RUNNING" in {f[1] for f in squeue_jobs(f"--jobs={ours}", "--format=%i|%T")},
        "the job to run",
        120,
    )
    subprocess.run(["scancel", ours], check=True)
    ids = [held, unreadable, array, ours]
    wait_until(
        lambda: not squeue_jobs("--states=all", f"--jobs={','.join(ids)}", "--format=%i"),
        "squeue to forget the ended jobs (MinJobAge, then slurmctld's purge)",
        240,
    )

    handles = [held, unreadable, f"{array}_0", f"{array}_1", ours]
    records = []
    for index, handle in enumerate(handles):
        attempt = make_attempt(os.path.join(rundir, f"call-{index}"), engine.settings.host_root)
        request = engine.translate(attempt)
        os.makedirs(request.files.host_dir)
        logger = logging.getLogger("test")
        records.append(
            Submitted(handle, attempt, logger, time.monotonic(), request, cancelled=handle == ours)
        )
    ours_record = records[-1].request.files.record
    write(
        os.path.dirname(ours_record),
        os.path.basename(ours_record),
        "exit_code=143\noom=false\ntimed_out=false\nstarted=true\nsignalled=true\n",
    )
    engine.cli.counts.clear()
    statuses: dict[str, Status] = engine.fetch(records, True)
    assert engine.cli.counts == {"squeue": 1, "sacct": 1}, engine.cli.counts
    assert all(s.phase is Phase.DONE for s in statuses.values()) and len(statuses) == 5, statuses
    assert "was cancelled outside this run" in (statuses[held].error or "")
    assert "node cannot read" in (statuses[unreadable].error or "")
    for index in (0, 1):
        error = statuses[f"{array}_{index}"].error or ""
        assert f"ended FAILED (exit code {index + 5})" in error, error
    assert statuses[ours].error and statuses[ours].error.endswith("was cancelled")
    # the same answers, straight from the database
    recorded = {
        f[0]: f[1:] for f in sacct(f"--jobs={','.join(ids)}", "--format=JobID,State,ExitCode")
    }
    # sacct(1): a cancelled job's State may read "CANCELLED by <uid>"
    assert recorded[held][0].startswith("CANCELLED") and recorded[ours][0].startswith("CANCELLED")
    assert recorded[unreadable] == ["FAILED", "97:0"] and recorded[f"{array}_1"] == [
        "FAILED",
        "6:0",
    ]
