"""omnibio_slurm status mapping, parsing of Slurm's answers, and batched submission."""

import logging
import math
import subprocess
import threading
from types import SimpleNamespace

import pytest

from miniwdl_omnibio.config import ConfigError
from miniwdl_omnibio.engines.base import Phase, Submitted
from miniwdl_omnibio.engines.slurm import engine as slurm_engine
from miniwdl_omnibio.engines.slurm import status as m
from miniwdl_omnibio.engines.slurm.cluster import (
    SlurmProblem,
    accounting_enabled,
    first_error_line,
    gres_gpus,
    orphaned_jobs,
    parse_sinfo,
)
from miniwdl_omnibio.engines.slurm.engine import SlurmEngine, Submissions
from miniwdl_omnibio.engines.slurm.hold import HeldSubmissions
from miniwdl_omnibio.engines.slurm.translate import translate
from miniwdl_omnibio.gathering import Cancellations
from tests.helpers import wait_until
from tests.unit.test_slurm_translation import make_attempt, make_settings

LOG = logging.getLogger("test")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def slurm_cancellations(send, clock):
    """The engine's scancel gathering, on an injected clock and without its thread."""
    return Cancellations(
        send, slurm_engine.CANCEL_LINGER, slurm_engine.CANCEL_MAX, clock, background=False
    )


CONTEXT = m.Context(where="Slurm job 5_1 (r.c.1)", cancelled_by_us=False, node_path="/n/a.sh")
DONE_OK = m.ExitRecord(exit_code=0, oom=False, timed_out=False, started=True)


def job(state, reason="None", exit_code=0, signal=None):
    return m.SlurmJob("5_1", state, exit_code, signal, reason)


def test_parse_squeue_as_slurm_22_05_prints_it():
    # captured from squeue --noheader --array --states=all -O on the rig (fields padded)
    text = (
        "2_0                           |COMPLETED           |0       |None        |\n"
        "2_1                           |FAILED              |256     |NonZeroExitCode|\n"
        "3                             |PENDING             |0       |ReqNodeNotAvail, UnavailableNodes:vm|\n"
        "4                             |CANCELLED           |15      |None        |\n"
    )
    jobs = m.parse_squeue(text)
    assert jobs["2_1"] == m.SlurmJob("2_1", "FAILED", 1, None, "NonZeroExitCode")
    assert jobs["3"].reason == "ReqNodeNotAvail, UnavailableNodes:vm"
    assert (jobs["4"].exit_code, jobs["4"].signal) == (0, 15)


def test_parse_sacct_as_its_man_page_describes_it():
    # the allocation lines as on the rig (sacct --parsable2 -o SACCT_FORMAT, jobacct_gather/linux):
    # TotalCPU on the allocation, MaxRSS on its steps only
    text = (
        "7|COMPLETED|0:0||00:02.278\n7.batch|COMPLETED|0:0|219800K|00:02.278\n"
        "8_2|CANCELLED by 1000|0:15||1-02:03:04\n8_2.batch|CANCELLED|0:15|1.5G|00:00:01\n"
        "8_2.extern|COMPLETED|0:0|100K|00:00:00\n9|TIMEOUT|0:0||\n"
    )
    jobs = m.parse_sacct(text)
    assert set(jobs) == {"7", "8_2", "9"}
    assert (jobs["8_2"].state, jobs["8_2"].signal) == ("CANCELLED", 15)
    assert (jobs["7"].max_rss, jobs["7"].total_cpu) == (219800 * 1024, 2.278)
    assert jobs["8_2"].max_rss == int(1.5 * (1 << 30))
    assert jobs["8_2"].total_cpu == 86400 + 2 * 3600 + 3 * 60 + 4
    assert (jobs["9"].max_rss, jobs["9"].total_cpu) == (None, None)


def test_usage_is_the_containers_cgroup_and_else_sacct():
    measured = m.ExitRecord(0, memory_peak=200, cpu_seconds=2.0)
    sacct = m.SlurmJob("5_1", "COMPLETED", 0, max_rss=30, total_cpu=0.1)
    both = m.status(sacct, measured, True, CONTEXT)
    assert both.details["usage"] == {
        "memory_peak": 200,
        "cpu_seconds": 2.0,
        "source": m.CGROUP_SOURCE,
        "sacct_max_rss": 30,
        "sacct_total_cpu": 0.1,
    }
    # apptainer: the container is the job's own processes, which sacct measured
    assert m.status(sacct, DONE_OK, True, CONTEXT).details["usage"] == {
        "memory_peak": 30,
        "cpu_seconds": 0.1,
        "source": m.SACCT_SOURCE,
    }
    assert "usage" not in m.status(job("COMPLETED"), DONE_OK, True, CONTEXT).details
    assert m.status(job("RUNNING"), None, True, CONTEXT).details == {}  # not over yet


@pytest.mark.parametrize("state", ["PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD"])
def test_waiting_states_are_queued(state):
    assert m.status(job(state, "Resources"), None, False, CONTEXT).phase is Phase.QUEUED


@pytest.mark.parametrize("state", ["RUNNING", "COMPLETING", "SUSPENDED", "STOPPED"])
def test_allocated_states_are_running(state):
    assert m.status(job(state), None, False, CONTEXT).phase is Phase.RUNNING


# job_reason_codes.shtml, code by code: what the job itself can never satisfy ...
NEVER = [
    "DependencyNeverSatisfied",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "BadConstraints",
    "PartitionTimeLimit",
    "MaxMemPerLimit",
    # per job or per node of a job, association and QOS
    "AssocMaxCpuPerJobLimit",
    "AssocMaxCpuMinutesPerJobLimit",
    "AssocMaxNodePerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
    "AssocMaxMemPerJob",
    "AssocMaxMemPerNode",
    "AssocMaxGRESPerJob",
    "AssocMaxCpuPerNode",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxCpuMinutesPerJobLimit",
    "QOSMaxNodePerJobLimit",
    "QOSMaxWallDurationPerJobLimit",
    "QOSMaxMemoryPerJob",
    "QOSMaxMemoryPerNode",
    "QOSMaxGRESPerNode",
    "QOSMaxBillingPerJob",
    # per-job minimums of the QOS
    "QOSMinCpuNotSatisfied",
    "QOSMinMemory",
    "QOSMinGRES",
    "QOSMinNode",
]
# ... the limits of a user, an account, a QOS, which running jobs hold: wait for them to end ...
AT_A_LIMIT = [
    "QOSMaxJobsPerUserLimit",
    "QOSMaxCpuPerUserLimit",
    "QOSMaxNodePerUserLimit",
    "QOSMaxMemoryPerUser",
    "QOSMaxGRESPerUser",
    "QOSMaxBillingPerUser",
    "QOSMaxSubmitJobPerUserLimit",
    "AssocMaxJobsLimit",
    "AssocMaxSubmitJobLimit",
    "AssocGrpCpuLimit",
    "AssocGrpJobsLimit",
    "AssocGrpMemLimit",
    "AssocGrpNodeLimit",
    "AssocGrpGRES",
    "AssocGrpCPUMinutesLimit",
    "AssocGrpSubmitJobsLimit",
    "QOSGrpCpuLimit",
    "QOSGrpJobsLimit",
    "QOSGrpNodeLimit",
    "QOSGrpMemoryRunMinutes",
    "MaxCpuPerAccount",
    "MaxJobsPerAccount",
    "MaxSubmitJobsPerAccount",
    "JobArrayTaskLimit",
    "AssociationJobLimit",
    "QOSResourceLimit",
    "QOSUsageThreshold",
    "AccountingPolicy",
]
# ... and the scheduler's own reasons, which pass by themselves
SCHEDULING = ["Priority", "Resources", "None", "BeginTime", "Dependency", "PartitionDown"]


@pytest.mark.parametrize("reason", NEVER)
def test_pending_for_what_the_job_can_never_satisfy_fails_and_is_cancelled(reason):
    status = m.status(job("PENDING", reason), None, False, CONTEXT)
    assert status.phase is Phase.DONE and reason in status.error and status.lingering
    assert not m.waits_at_limit(job("PENDING", reason))


@pytest.mark.parametrize("reason", AT_A_LIMIT)
def test_pending_at_a_user_account_or_qos_limit_waits(reason):
    status = m.status(job("PENDING", reason), None, False, CONTEXT)
    assert status.phase is Phase.QUEUED and reason in status.reason
    assert m.waits_at_limit(job("PENDING", reason))


@pytest.mark.parametrize("reason", SCHEDULING)
def test_pending_for_the_scheduler_waits_without_a_limit(reason):
    assert m.status(job("PENDING", reason), None, False, CONTEXT).phase is Phase.QUEUED
    assert not m.waits_at_limit(job("PENDING", reason))


# sbatch's stderr on a refusal, as Slurm 22.05 prints it: slurmctld's reason first
# (_unpack_return_code2_msg), then "Batch job submission failed: <slurm_strerror>" (sbatch.c)
POLICY = (
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
    "(job submit limit, user's size and/or time limits)\n"
)


@pytest.mark.parametrize(
    "stderr, limit",
    [
        ("sbatch: error: QOSMaxSubmitJobPerUserLimit\n" + POLICY, "QOSMaxSubmitJobPerUserLimit"),
        ("sbatch: error: AssocMaxSubmitJobLimit\n" + POLICY, "AssocMaxSubmitJobLimit"),
        ("sbatch: error: QOSGrpSubmitJobsLimit\n" + POLICY, "QOSGrpSubmitJobsLimit"),
        ("sbatch: error: MaxSubmitJobsPerAccount\n" + POLICY, "MaxSubmitJobsPerAccount"),
        (POLICY, ""),  # no reason given (a job_submit plugin, an older slurmctld)
        ("sbatch: error: QOSMaxWallDurationPerJobLimit\n" + POLICY, None),  # DenyOnLimit
        ("sbatch: error: Batch job submission failed: Invalid partition name specified\n", None),
    ],
)
def test_sbatch_refused_for_a_full_queue_or_for_the_job(stderr, limit):
    assert m.submit_refusal(stderr) == limit


@pytest.mark.parametrize("state", ["PREEMPTED", "NODE_FAIL", "BOOT_FAIL"])
def test_preemption_and_lost_nodes_are_interruptions(state):
    # the element script's trap recorded 143: Slurm's verdict comes first
    record = m.ExitRecord(143, False, False, True, signalled=True)
    status = m.status(job(state), record, False, CONTEXT)
    assert status.phase is Phase.DONE and status.interrupted and state in status.reason


def test_time_limits_by_slurm_and_by_the_script():
    assert m.status(job("TIMEOUT"), None, False, CONTEXT).timed_out
    record = m.ExitRecord(137, False, True, True)
    assert m.status(job("FAILED", exit_code=137), record, False, CONTEXT).timed_out


def test_out_of_memory_by_slurm_and_by_the_container_runtime():
    status = m.status(job("OUT_OF_MEMORY", exit_code=0, signal=9), None, False, CONTEXT)
    assert status.oom and status.exit_code == 137
    record = m.ExitRecord(137, True, False, True)
    status = m.status(job("FAILED", exit_code=137), record, False, CONTEXT)
    assert status.oom and status.exit_code == 137


def test_cancelled_by_us_or_by_someone_else():
    ours = m.Context(where="w", cancelled_by_us=True)
    assert m.status(job("CANCELLED"), None, False, ours).error == "w was cancelled"
    assert "outside this run" in m.status(job("CANCELLED"), None, False, CONTEXT).error


def test_exit_code_from_the_record_even_after_slurm_forgot_the_job():
    failed = m.ExitRecord(3, False, False, True)
    assert m.status(job("FAILED", exit_code=3), failed, False, CONTEXT).exit_code == 3
    assert m.status(job("COMPLETED"), DONE_OK, False, CONTEXT).exit_code == 0
    assert m.status(job("COMPLETING"), DONE_OK, False, CONTEXT).phase is Phase.DONE
    assert m.status(None, failed, False, CONTEXT).exit_code == 3  # past MinJobAge, no accounting
    assert m.status(None, None, False, CONTEXT) is None  # the tracker's grace decides


def test_container_that_never_started_quotes_the_runtime():
    record = m.ExitRecord(125, False, False, False)
    context = m.Context(
        where="w",
        cancelled_by_us=False,
        image="x:1",
        log_tail="Unable to find image\ndocker: Error response: no such host\n\nRun 'docker run --help'\n",
    )
    assert m.status(job("FAILED", exit_code=125), record, False, context).error == (
        "w could not start its container (x:1): docker: Error response: no such host"
    )


def test_ended_without_record():
    unreadable = m.status(job("FAILED", exit_code=97), None, False, CONTEXT)
    assert "cannot read /n/a.sh" in unreadable.error and "node_mount_path" in unreadable.error
    assert (
        m.status(job("FAILED", exit_code=1), None, False, CONTEXT) is None
    )  # record may be on its way
    ended = m.ended_without_record(job("FAILED", exit_code=1), CONTEXT)
    assert ended.phase is Phase.DONE and "FAILED (exit code 1)" in ended.error


def test_job_ids_asks_once_per_array():
    assert m.job_ids(["12_0", "12_1", "9", "100_3"]) == ["9", "12", "100"]


def test_orphans_are_jobs_of_dead_launchers_of_this_host_and_pid_namespace():
    def line(job_id, comment):
        return f"{job_id:<24}|{comment:<400}|"

    text = "\n".join(
        [
            line(10, "omnibio run=r call=call-a launcher=vm:4026:111:ab12cd34"),  # dead
            line(11, "omnibio run=r call=4 calls launcher=vm:4026:111:ab12cd34"),  # dead, array
            line(12, "omnibio run=r call=call-b launcher=vm:4026:222:ef56ab78"),  # alive
            line(13, "omnibio run=r call=call-c launcher=other:4026:111:ab12cd34"),  # other host
            line(14, "omnibio run=r call=call-d launcher=vm:9999:111:ab12cd34"),  # other pidns
            line(15, "(null)"),  # not ours
            line(16, "someone else's launcher=vm:4026:111:x"),
        ]
    )
    assert orphaned_jobs(text, "vm:4026", lambda pid: pid == 222) == ["10", "11"]


def test_sinfo_partitions_keep_their_largest_node():
    text = "debug*|up|2|24105|(null)\ngpu|up|8|64000|gpu:a100:4(S:0-1)\ngpu|up|16|128000|(null)\n"
    partitions = parse_sinfo(text)
    assert partitions["debug"].default and partitions["debug"].max_cpu == 2
    assert partitions["gpu"].max_cpu == 16 and partitions["gpu"].gpus == 4
    assert partitions["gpu"].max_memory == 128000 << 20
    assert gres_gpus("gpu:2,mps:100") == 2 and gres_gpus("(null)") == 0


def test_accounting_and_error_lines():
    assert not accounting_enabled("AccountingStorageType   = accounting_storage/none\n")
    assert accounting_enabled("AccountingStorageType = accounting_storage/slurmdbd\n")
    stderr = "sbatch: error: invalid partition specified: x\nsbatch: error: Batch job submission failed: Invalid partition name specified\n"
    assert first_error_line(stderr).endswith("Invalid partition name specified")


class FakeRequest:
    def __init__(self, options):
        self.options = options


def test_submissions_share_one_sbatch_per_group_of_equal_options():
    sent = []

    def send(requests):
        sent.append(len(requests))
        job_id = 100 + len(sent)
        return [f"{job_id}_{i}" for i in range(len(requests))] if len(requests) > 1 else [job_id]

    submissions = Submissions(send, linger=0.3, size=3)
    requests = [FakeRequest(("--mem=1M",)) for _ in range(4)] + [FakeRequest(("--mem=2M",))]
    handles = {}

    def submit(i):
        handles[i] = submissions.add(requests[i])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent) == [1, 1, 3]  # 4 equal -> an array of 3 and a lone job; 1 other
    assert len(set(handles.values())) == 5
    assert sum("_" in str(h) for h in handles.values()) == 3


def test_submissions_gather_while_requests_keep_arriving():
    """Requests 0.25 s apart, 1.5 s in all (longer than the 1 s linger), share one sbatch: the
    first one's wait is the injected sleep, during which the next request arrives."""
    sent, clock, threads = [], Clock(), []

    def arrive():
        threads.append(threading.Thread(target=submissions.add, args=(FakeRequest(()),)))
        threads[-1].start()

    def sleep(seconds):  # the first request's thread, gathering: only it sends
        if len(threads) == 6 or seconds < 0.25:  # the next request would come after the linger
            clock.now += seconds
            return
        clock.now += 0.25
        arrive()
        count = len(threads)
        wait_until(lambda: submissions.gathering.waiting() == count, "the next request")

    submissions = Submissions(
        lambda requests: sent.append(len(requests)) or [str(i) for i in range(len(requests))],
        1.0,
        100,
        clock,
        sleep,
    )
    arrive()
    wait_until(lambda: sent, "an sbatch", timeout=30)
    for thread in threads:
        thread.join(timeout=30)
    assert sent == [6]
    assert clock.now - 1000.0 == pytest.approx(5 * 0.25 + 1.0)  # the last arrival, then a linger


def test_a_failed_sbatch_fails_each_of_its_requests():
    def send(requests):
        raise RuntimeError("omnibio_slurm: sbatch failed: Invalid partition name specified")

    with pytest.raises(RuntimeError, match="Invalid partition"):
        Submissions(send, linger=0, size=10).add(FakeRequest(()))


def test_a_record_is_final_unless_a_signal_ended_it_for_an_unknown_reason():
    assert m.final(m.ExitRecord(3, False, False, True))
    assert m.final(m.ExitRecord(137, True, False, True))  # the runtime saw the OOM kill
    assert m.final(m.ExitRecord(137, False, True, True))  # the script's own time limit
    assert not m.final(m.ExitRecord(143, False, False, True, signalled=True))
    assert not m.final(m.ExitRecord(137, False, False, True))  # e.g. the cgroup OOM killer
    # a final record needs no squeue: Slurm's last answer may be stale
    assert m.status(job("RUNNING"), DONE_OK, False, CONTEXT).exit_code == 0
    # a cgroup OOM kill: Slurm's OUT_OF_MEMORY names it
    killed = m.ExitRecord(137, False, False, True)
    assert m.status(job("OUT_OF_MEMORY", exit_code=0, signal=9), killed, False, CONTEXT).oom


def test_an_empty_exit_record_answers_before_squeue_does():
    assert m.status(None, None, True, CONTEXT).phase is Phase.RUNNING
    assert m.status(job("PENDING", "Priority"), None, True, CONTEXT).phase is Phase.RUNNING


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
    engine = SlurmEngine.__new__(SlurmEngine)  # only what ask_slurm uses; start() needs Slurm
    engine.cli, engine.accounting, engine.logger = cli, accounting, logger
    engine._lock, engine._jobs, engine._limits, engine._requests = (
        threading.Lock(),
        {},
        frozenset(),
        {},
    )
    engine.held = HeldSubmissions(engine._sbatch, engine._outstanding, logger, background=False)
    engine.launcher = "L1"
    engine.squeue_seconds, engine._asked_at, engine._ended_unrecorded = 0, -math.inf, {}
    return engine


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


LIMIT = "QOSMaxJobsPerUserLimit"


def requests_for(tmp_path, count):
    root = str(tmp_path)
    settings = make_settings(host_root=root, node_root=root)
    return [
        translate(make_attempt(f"{root}/run/call-x-{i}", root), settings, {}) for i in range(count)
    ]


def test_a_full_queue_holds_submissions_and_sends_them_in_order_as_jobs_end(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cli = ScriptedSlurm(submit=4, run=2)
    engine = asking_engine(cli, accounting=False)
    requests = requests_for(tmp_path, 12)
    handles = engine.held.submit(requests)  # one scatter's gathered attempts
    for handle, request in zip(handles, requests, strict=True):
        engine._requests[handle] = request
    assert len(handles) == 12 and cli.queue == [h for h in handles if not h.startswith("held-")]
    assert len(cli.queue) == 4  # halved until Slurm took them: 3 as an array, then 1
    held = [h for h in handles if h.startswith("held-")]
    assert len(held) == 8
    records = [Submitted(h, make_attempt("/x"), LOG, 0.0) for h in handles]
    statuses = engine.fetch(records, True)
    assert {statuses[h].phase for h in held} == {Phase.QUEUED}
    assert all("submit limit" in statuses[h].reason for h in held)
    assert [statuses[h].reason for h in handles[:4]] == ["RUNNING"] * 2 + [f"PENDING ({LIMIT})"] * 2
    sent_order, slurm_of = [], {}
    while len(slurm_of) < len(held):
        for ended in cli.end(2):  # two jobs end; their attempts are released
            handle = next(h for h in handles if slurm_of.get(h, h) == ended)
            engine.release(Submitted(handle, make_attempt("/x"), LOG, 0.0), LOG)
        before = len(cli.queue)
        assert engine.held.resend(2) >= 1
        sent_order += cli.queue[before:]
        slurm_of.update({h: engine.held.slurm_handle(h) for h in held if h not in slurm_of})
        slurm_of = {h: s for h, s in slurm_of.items() if s}
    assert cli.most == 4  # never above the limit; every attempt went to Slurm, none failed
    assert [slurm_of[h] for h in held] == sent_order
    messages = [r.getMessage() for r in caplog.records]
    assert sum("holding submissions until jobs end" in m for m in messages) == 1
    assert sum("no submission is held now" in m for m in messages) == 1
    assert sum("jobs wait until jobs holding a Slurm limit end" in m for m in messages) == 1


def test_submissions_queue_behind_held_ones_and_a_cancelled_one_is_dropped(tmp_path):
    cli = ScriptedSlurm(submit=1, run=1)
    engine = asking_engine(cli, accounting=False)
    first, second, third = requests_for(tmp_path, 3)
    assert engine.held.submit([first])[0] == "100"
    [held] = engine.held.submit([second])
    sbatches = sum(c[0] == "sbatch" for c in cli.calls)
    [behind] = engine.held.submit([third])  # queued behind: no sbatch Slurm would refuse
    assert sum(c[0] == "sbatch" for c in cli.calls) == sbatches
    engine._requests.update({"100": first, held: second, behind: third})
    record = Submitted(held, make_attempt("/x"), LOG, 0.0, cancelled=True)
    engine.cancel(record, LOG)  # Ctrl-C while held: nothing to scancel
    assert "cancelled before Slurm accepted" in engine.fetch([record], True)[held].error
    cli.end(1)
    engine.release(Submitted("100", make_attempt("/x"), LOG, 0.0), LOG)
    assert engine.held.resend(1) == 1 and engine.held.slurm_handle(behind) == "101"


def test_a_refusal_naming_no_limit_fails_when_no_job_of_ours_can_end(tmp_path):
    cli = RecordingCli({})
    cli.run = lambda argv, check=True, stdin=None: subprocess.CompletedProcess(argv, 1, "", POLICY)
    engine = asking_engine(cli, accounting=False)
    with pytest.raises(SlurmProblem, match="Job violates accounting/QOS policy"):
        engine.held.submit(requests_for(tmp_path, 2))  # halved to one, then refused


def test_a_refusal_for_the_job_itself_fails_at_once(tmp_path):
    stderr = "sbatch: error: QOSMaxWallDurationPerJobLimit\n" + POLICY
    cli = RecordingCli({})
    cli.run = lambda argv, check=True, stdin=None: subprocess.CompletedProcess(argv, 1, "", stderr)
    engine = asking_engine(cli, accounting=False)
    with pytest.raises(SlurmProblem, match="QOSMaxWallDurationPerJobLimit; Batch job submission"):
        engine.held.submit(requests_for(tmp_path, 3))


def probing_engine(cli, tmp_path):
    engine = asking_engine(cli, accounting=False)
    engine.filesystem = SimpleNamespace(host_root=str(tmp_path))
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
    engine.probe(60, LOG)  # no error
    assert not any(c[0] == "scancel" for c in cli.calls)
    waits = [r for r in caplog.records if "probe job waits at a Slurm limit" in r.getMessage()]
    assert len(waits) == 1 and LIMIT in waits[0].getMessage()


def test_a_probe_refused_for_a_full_queue_is_skipped_with_a_warning(tmp_path, caplog):
    engine = probing_engine(ScriptedSlurm(submit=0, run=0), tmp_path)
    engine.probe(60, LOG)
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
        engine.probe(60, LOG)
    assert ["scancel", "100"] in cli.calls


@pytest.mark.parametrize("accounting", [True, False])
def test_one_squeue_for_every_job_then_sacct_for_those_it_no_longer_lists(accounting):
    squeue = "5_0|RUNNING|0|None|\n5_1|PENDING|0|Priority|\n"
    cli = RecordingCli({"squeue": squeue, "sacct": "6|PREEMPTED|0:15\n7|TIMEOUT|0:0\n"})
    engine = asking_engine(cli, accounting)
    engine.ask_slurm(["5_0", "5_1", "6", "7"], now=1.0)
    expected = ["squeue", "sacct"] if accounting else ["squeue"]
    assert [c[0] for c in cli.calls] == expected
    assert "--jobs=5,6,7" in cli.calls[0]  # an array once, by its job id
    if accounting:
        assert "--jobs=6,7" in cli.calls[1]
        assert (engine._jobs["6"].state, engine._jobs["7"].state) == ("PREEMPTED", "TIMEOUT")
    else:
        assert set(engine._jobs) == {"5_0", "5_1"}  # the exit records answer for 6 and 7


@pytest.mark.parametrize("known, fails", [("lab\n", False), ("", True)])
def test_an_account_unknown_to_sacctmgr_is_refused_at_start(known, fails):
    cli = RecordingCli({"sacctmgr": known})
    engine = asking_engine(cli, accounting=True)
    engine.settings = make_settings(account="lab")
    if fails:
        with pytest.raises(ConfigError, match=r"account.*knows no account 'lab'"):
            engine.check_account(engine.settings)
    else:
        engine.check_account(engine.settings)
    assert [c[:5] for c in cli.calls] == [
        ["sacctmgr", "--noheader", "--parsable2", "show", "account"]
    ]


def test_cancellations_spread_over_a_round_share_one_scancel():
    sent = []
    clock = Clock()
    cancellations = slurm_cancellations(sent.append, clock)
    for handle in ("5_0", "5_1", "6"):  # task threads notice a Ctrl-C one after another
        cancellations.add(handle)
        clock.now += 1.0  # less than the linger apart: the same batch
    assert cancellations.due_in() == pytest.approx(slurm_engine.CANCEL_LINGER - 1.0)
    clock.now += slurm_engine.CANCEL_LINGER - 1.0
    assert cancellations.due_in() <= 0
    cancellations.flush()
    assert sent == [["5_0", "5_1", "6"]]
    cancellations.add("7")
    cancellations.flush()  # shutdown: sends what is still gathering, at once
    assert sent[-1] == ["7"]


def test_cancellations_arriving_without_end_are_sent_after_cancel_max():
    clock = Clock()
    cancellations = slurm_cancellations([].append, clock)
    for i in range(20):  # one a second, each within the linger of the last
        cancellations.add(str(i))
        if clock.now - 1000.0 >= slurm_engine.CANCEL_MAX:
            break
        assert cancellations.due_in() > 0
        clock.now += 1.0
    assert cancellations.due_in() <= 0 and clock.now == 1000.0 + slurm_engine.CANCEL_MAX


def test_cancellations_go_out_by_themselves_when_due():
    sent = []
    cancellations = Cancellations(
        sent.append, slurm_engine.CANCEL_LINGER, slurm_engine.CANCEL_MAX
    )  # the real clock and its thread, once
    cancellations.add("5_0")
    wait_until(lambda: sent == [["5_0"]], "the gathered scancel")
