"""omnibio_slurm's engine against Slurm's commands answered in advance: submission in arrays,
a full queue as QueueFull (and the tracker holding it), the two speeds of fetch, sacct's
figures, scancel, the probe (stands in for sacct too, which needs slurmdbd)."""

import logging
import os
import stat
import subprocess
import threading
import time

import pytest

from miniwdl_omnibio.config import ConfigError
from miniwdl_omnibio.engines.base import Phase, QueueFull, Submission, Submitted
from miniwdl_omnibio.engines.slurm import engine as slurm_engine
from miniwdl_omnibio.engines.slurm.cluster import Partition, SlurmProblem
from miniwdl_omnibio.engines.slurm.engine import SlurmEngine
from miniwdl_omnibio.engines.slurm.translate import translate
from miniwdl_omnibio.tracker import Tracker
from tests.helpers import wait_until
from tests.unit.test_slurm_status import POLICY
from tests.unit.test_slurm_translation import make_attempt, make_settings

LOG = logging.getLogger("test")
LIMIT = "QOSMaxJobsPerUserLimit"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class RecordingCli:
    """Slurm's client commands as answers given in advance: what the engine asks, and how often
    (stands in for sacct, which needs slurmdbd: the rig has no accounting)."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def run(self, argv, check=True, stdin=None):
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, self.answers[argv[0]], "")


def asking_engine(cli, accounting, logger=LOG):
    """The engine without start() (which needs Slurm): what submit_many and fetch use."""
    engine = SlurmEngine.__new__(SlurmEngine)
    engine.cli, engine.accounting, engine.logger = cli, accounting, logger
    engine.launcher, engine._wake = "L1", lambda handle, full: None
    engine.max_array_size = 3
    engine.partitions = {"batch": Partition(True, 8, 64 << 30, 0)}
    return engine


def requests_for(tmp_path, count, **resources):
    root = str(tmp_path)
    settings = make_settings(host_root=root, node_root=root)
    attempts = [
        make_attempt(f"{root}/run/call-x-{i}", root, resources=resources) for i in range(count)
    ]
    return [translate(attempt, settings) for attempt in attempts]


def record(request, handle, cancelled=False):
    """The tracker's record of a submitted request (its files' directory made)."""
    os.makedirs(request.files.host_dir, exist_ok=True)
    return Submitted(handle, make_attempt("/x"), LOG, 0.0, request, cancelled=cancelled)


def write_record(rec, text, age=0.0):
    """The element script's exit record, written ``age`` seconds ago."""
    path = rec.request.files.record
    with open(path, "w") as out:
        out.write(text)
    os.utime(path, (time.time() - age, time.time() - age))


FINAL = "exit_code=0\nstarted=true\n"
SIGNALLED = "exit_code=143\nstarted=true\nsignalled=true\n"


# --- submission --------------------------------------------------------------------------


def test_one_sbatch_per_group_of_equal_options_an_array_of_max_array_size_at_most(tmp_path):
    cli = ScriptedSlurm(submit=100, run=100)
    engine = asking_engine(cli, accounting=False)
    requests = requests_for(tmp_path, 4) + requests_for(tmp_path / "b", 1, cpu=4)
    requests += requests_for(tmp_path / "c", 1, cpu=64)  # no node has 64 CPUs: it fails alone
    results = engine.submit_many([Submission(make_attempt("/x"), r, LOG) for r in requests])
    arrays = [next((a for a in c if a.startswith("--array")), "") for c in cli.calls]
    assert arrays == ["--array=0-2", "", ""]  # 4 equal: an array of 3 and a lone job; 1 other
    assert [r.handle for r in results[:5]] == ["100_0", "100_1", "100_2", "101", "102"]
    assert [r.group for r in results[:5]] == ["100", "100", "100", None, None]  # its job id
    assert isinstance(results[5], Exception) and "runtime.cpu 64" in str(results[5])
    # the element's files are written before sbatch; its environment for the user alone
    assert stat.S_IMODE(os.stat(requests[0].files.host("env")).st_mode) == 0o600
    assert os.path.exists(requests[0].files.host("sh"))


def test_a_failed_sbatch_fails_each_request_of_it(tmp_path):
    stderr = "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
    engine = refusing_engine(stderr)
    requests = requests_for(tmp_path, 2)
    results = engine.submit_many([Submission(make_attempt("/x"), r, LOG) for r in requests])
    assert all(isinstance(r, SlurmProblem) and "Invalid partition" in str(r) for r in results)


def test_a_full_queue_is_queue_full_naming_the_limit_for_each_request_of_the_sbatch(tmp_path):
    cli = ScriptedSlurm(submit=4, run=2)
    engine = asking_engine(cli, accounting=False)
    requests = requests_for(tmp_path, 6)
    results = engine.submit_many([Submission(make_attempt("/x"), r, LOG) for r in requests])
    assert [r.handle for r in results[:3]] == ["100_0", "100_1", "100_2"]  # 3 in: 3 more refused
    assert all(isinstance(r, QueueFull) for r in results[3:])
    assert {r.limit for r in results[3:]} == {"QOSMaxSubmitJobPerUserLimit"}


def test_the_tracker_sends_what_a_full_queue_refused_in_order_as_jobs_end(tmp_path, caplog):
    """Slurm and the tracker together: never above the submit limit, none failed."""
    caplog.set_level(logging.INFO)
    cli = ScriptedSlurm(submit=4, run=2)
    engine = asking_engine(cli, accounting=False)
    engine.settings = make_settings()
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    requests = requests_for(tmp_path, 8)
    handles = {}

    def submit(index):
        handles[index] = tracker.submit(make_attempt("/x"), requests[index], LOG)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for index, thread in enumerate(threads):  # one after the other: their order is known
        thread.start()
        wait_until(lambda i=index: tracker.counts()["submitted"] == i + 1, "submitted or held")
    tracker.poll_once()  # 2 running, 2 pending at the running limit
    for _ in range(2):  # 4 held
        for ended in cli.end(2):  # two jobs end; their attempts are released
            tracker.release(ended, LOG)
        assert tracker.resend_held() == 2
    for thread in threads:
        thread.join()
    assert cli.most == 4
    assert [handles[i] for i in range(8)] == [str(n) for n in range(100, 108)]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("holding submissions until jobs end" in m for m in messages) == 1
    assert sum("no submission is held now" in m for m in messages) == 1
    assert (
        sum("jobs wait until jobs holding a limit of the service end" in m for m in messages) == 1
    )


class ScriptedSlurm:
    """sbatch, squeue and scancel of one user under a QOS with MaxSubmitJobsPerUser=``submit``
    (each array element counts, as acct_policy.c counts them) and MaxJobsPerUser=``run``: sbatch
    refuses what would exceed the submit limit with the stderr of Slurm 22.05; squeue lists
    RUNNING the first ``run`` jobs and PENDING (QOSMaxJobsPerUserLimit) the others."""

    def __init__(self, submit, run):
        self.submit, self.run_limit = submit, run
        self.queue = []  # element handles, in submission order
        self.next_id = 100
        self.calls = []
        self.most = 0

    def run(self, argv, check=True, stdin=None):
        self.calls.append(list(argv))
        if argv[0] == "sbatch":
            arrays = [a for a in argv if a.startswith("--array=0-")]
            size = int(arrays[0].rsplit("-", 1)[1]) + 1 if arrays else 1
            if len(self.queue) + size > self.submit:
                stderr = "sbatch: error: QOSMaxSubmitJobPerUserLimit\n" + POLICY
                return subprocess.CompletedProcess(argv, 1, "", stderr)
            job_id, self.next_id = str(self.next_id), self.next_id + 1
            self.queue += [f"{job_id}_{i}" for i in range(size)] if arrays else [job_id]
            self.most = max(self.most, len(self.queue))
            return subprocess.CompletedProcess(argv, 0, f"{job_id}\n", "")
        if argv[0] == "squeue":
            lines = [
                f"{h}|RUNNING|0|None|" if i < self.run_limit else f"{h}|PENDING|0|{LIMIT}|"
                for i, h in enumerate(self.queue)
            ]
            return subprocess.CompletedProcess(argv, 0, "\n".join(lines), "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def end(self, count):
        ended, self.queue = self.queue[:count], self.queue[count:]
        return ended


def refusing_engine(stderr):
    """An engine whose every sbatch Slurm refuses with ``stderr``."""
    cli = RecordingCli({})
    cli.run = lambda argv, check=True, stdin=None: subprocess.CompletedProcess(argv, 1, "", stderr)
    return asking_engine(cli, accounting=False)


def test_a_refusal_naming_no_limit_is_queue_full_without_a_limit(tmp_path):
    engine = refusing_engine(POLICY)
    requests = requests_for(tmp_path, 2)
    results = engine.submit_many([Submission(make_attempt("/x"), r, LOG) for r in requests])
    assert all(isinstance(r, QueueFull) and r.limit == "" for r in results)
    assert "Job violates accounting/QOS policy" in str(results[0])


def test_a_refusal_for_the_job_itself_fails_at_once(tmp_path):
    engine = refusing_engine("sbatch: error: QOSMaxWallDurationPerJobLimit\n" + POLICY)
    requests = requests_for(tmp_path, 3)
    results = engine.submit_many([Submission(make_attempt("/x"), r, LOG) for r in requests])
    assert all(not isinstance(r, QueueFull) and isinstance(r, SlurmProblem) for r in results)
    assert "QOSMaxWallDurationPerJobLimit; Batch job submission" in str(results[0])


# --- fetch: the files every round, squeue and sacct in full rounds --------------------------


def test_a_round_between_squeues_reads_the_files_alone(tmp_path):
    cli = RecordingCli({})
    engine = asking_engine(cli, accounting=True)
    woken = []
    engine.on_wake(lambda handle, full: woken.append((handle, full)))
    queued, started, ended, signalled = (
        record(r, h) for r, h in zip(requests_for(tmp_path, 4), ("1", "2", "3", "4"), strict=True)
    )
    write_record(started, "")
    write_record(ended, "exit_code=3\nstarted=true\n", age=60)
    write_record(signalled, SIGNALLED)
    engine.accounting = False
    statuses = engine.fetch([queued, started, ended, signalled], False)
    assert cli.calls == []
    assert statuses["1"] is queued.status and statuses["2"].phase is Phase.RUNNING
    assert statuses["3"].exit_code == 3
    assert statuses["4"] is signalled.status and woken == [("4", True)]  # Slurm's verdict, at once


@pytest.mark.parametrize("accounting", [True, False])
def test_a_full_round_asks_one_squeue_then_one_sacct(tmp_path, accounting):
    squeue = "5_0|RUNNING|0|None|\n5_1|PENDING|0|Priority|\n"
    sacct = (
        "6|PREEMPTED|0:15||00:00:01|2026-01-01T00:00:00\n7|TIMEOUT|0:0||00:00:01|2026-01-01T00:00:00\n"
        "8|COMPLETED|0:0||00:00:02.500|2026-01-01T00:00:00\n"
        "8.batch|COMPLETED|0:0|1000K|00:00:02.500|2026-01-01T00:00:00\n"
    )
    cli = RecordingCli({"squeue": squeue, "sacct": sacct})
    engine = asking_engine(cli, accounting)
    handles = ("5_0", "5_1", "6", "7", "8")
    records = [record(r, h) for r, h in zip(requests_for(tmp_path, 5), handles, strict=True)]
    write_record(records[2], SIGNALLED)  # 6: Slurm's verdict counts
    write_record(records[4], FINAL)  # 8: final; with accounting, its figures from sacct
    statuses = engine.fetch(records, True)
    assert [c[0] for c in cli.calls] == (["squeue", "sacct"] if accounting else ["squeue"])
    assert "--jobs=5,6,7" in cli.calls[0]  # an array once, by its job id; not 8
    assert statuses["5_0"].phase is Phase.RUNNING and statuses["5_1"].phase is Phase.QUEUED
    usage = statuses["8"].details.get("usage")
    if accounting:
        assert "--jobs=6,7,8" in cli.calls[1]  # squeue no longer lists 6, 7; 8 ended
        assert statuses["6"].interrupted and statuses["7"].timed_out
        assert (usage["memory_peak"], usage["cpu_seconds"]) == (1000 * 1024, 2.5)
    else:
        assert statuses["6"].exit_code == 143  # Slurm forgot it: the record counts
        assert "7" not in statuses  # nothing known: the tracker's grace decides
        assert statuses["8"].exit_code == 0 and not usage


def test_an_ended_attempt_waits_a_moment_for_sacct_then_goes_without(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cli = RecordingCli({"sacct": "8|RUNNING|0:0||00:00:00|Unknown\n"})  # slurmdbd lags
    engine = asking_engine(cli, accounting=True)
    [ended] = [record(r, "8") for r in requests_for(tmp_path, 1)]
    write_record(ended, FINAL)
    waiting = engine.fetch([ended], False)["8"]
    assert waiting.phase is Phase.RUNNING and "sacct" in waiting.reason
    write_record(ended, FINAL, age=slurm_engine.SACCT_WAIT)
    assert engine.fetch([ended], False)["8"].exit_code == 0
    assert "sacct has no figures for the job" in caplog.text
    cancelled = record(ended.request, "8", cancelled=True)  # this run cancelled it: no wait
    write_record(cancelled, SIGNALLED)
    cli.answers["squeue"] = "8|CANCELLED|0|None|\n"
    assert engine.fetch([cancelled], True)["8"].error.endswith("was cancelled")


def test_scancel_once_for_the_batch(tmp_path):
    cli = RecordingCli({"scancel": ""})
    engine = asking_engine(cli, accounting=False)
    [request] = requests_for(tmp_path, 1)
    records = [record(request, h) for h in ("6", "5_1", "5_0", "6")]
    engine.cancel_many(records, frozenset(), LOG)
    assert cli.calls == [["scancel", "5_0", "5_1", "6"]]


def test_a_whole_array_is_one_scancel_argument(tmp_path):
    """The tracker says the batch holds every open element of array 5: its job id stands for
    them all; array 7's element goes by its own id."""
    cli = RecordingCli({"scancel": ""})
    engine = asking_engine(cli, accounting=False)
    [request] = requests_for(tmp_path, 1)
    records = [record(request, h) for h in ("6", "5_1", "5_0", "7_2")]
    for each in records:
        each.group = each.handle.split("_")[0] if "_" in each.handle else None
    engine.cancel_many(records, frozenset({"5"}), LOG)
    assert cli.calls == [["scancel", "5", "6", "7_2"]]


def probing_engine(cli, tmp_path):
    engine = asking_engine(cli, accounting=False)
    engine.settings = make_settings(host_root=str(tmp_path), node_root=str(tmp_path))
    clock = Clock()
    engine.clock = clock

    def sleep(seconds):
        clock.now += seconds

    engine.sleep = sleep
    return engine


def test_the_probe_of_a_user_at_the_running_limit_waits_and_passes(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cli = ScriptedSlurm(submit=10, run=2)
    cli.queue = ["1", "2"]  # this user's jobs of another run: the probe is third
    engine = probing_engine(cli, tmp_path)
    squeue = cli.run

    def run(argv, check=True, stdin=None):
        if argv[0] == "squeue" and sum(c[0] == "squeue" for c in cli.calls) >= 3:
            cli.end(1)  # a job of the other run ends: the probe runs and completes
            cli.calls.append(list(argv))
            return subprocess.CompletedProcess(argv, 0, "100|COMPLETED|0|None|", "")
        return squeue(argv, check, stdin)

    cli.run = run
    engine.probe()  # no error
    assert not any(c[0] == "scancel" for c in cli.calls)
    waits = [r for r in caplog.records if "probe job waits at a Slurm limit" in r.getMessage()]
    assert len(waits) == 1 and LIMIT in waits[0].getMessage()


def test_a_probe_refused_for_a_full_queue_is_skipped_with_a_warning(tmp_path, caplog):
    engine = probing_engine(ScriptedSlurm(submit=0, run=0), tmp_path)
    engine.probe()
    assert any("probe skipped" in r.getMessage() for r in caplog.records)


def test_a_probe_pending_for_what_it_can_never_satisfy_aborts(tmp_path):
    cli = ScriptedSlurm(submit=10, run=0)
    engine = probing_engine(cli, tmp_path)
    squeue = cli.run

    def run(argv, check=True, stdin=None):
        if argv[0] == "squeue":
            return subprocess.CompletedProcess(argv, 0, "100|PENDING|0|InvalidQOS|", "")
        return squeue(argv, check, stdin)

    cli.run = run
    with pytest.raises(Exception, match="never start jobs of this configuration.*InvalidQOS"):
        engine.probe()
    assert ["scancel", "100"] in cli.calls


@pytest.mark.parametrize("known, fails", [("lab\n", False), ("", True)])
def test_an_account_unknown_to_sacctmgr_is_refused_at_start(known, fails):
    cli = RecordingCli({"sacctmgr": known})
    engine = asking_engine(cli, accounting=True)
    engine.settings = make_settings(account="lab")
    if fails:
        with pytest.raises(ConfigError, match=r"account.*knows no account 'lab'"):
            engine.check_account()
    else:
        engine.check_account()
    assert [c[:5] for c in cli.calls] == [
        ["sacctmgr", "--noheader", "--parsable2", "show", "account"]
    ]
