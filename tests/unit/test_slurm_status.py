"""omnibio_slurm status mapping and parsing of Slurm's answers (pure: no Slurm needed)."""

import time

import pytest

from miniwdl_omnibio.engines.base import QUEUED, RUNNING, Phase
from miniwdl_omnibio.engines.slurm import status as m
from miniwdl_omnibio.engines.slurm.cluster import (
    accounting_enabled,
    first_error_line,
    gres_gpus,
    orphaned_jobs,
    parse_sinfo,
    sbatch_refusal,
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
        "5     |RUNNING     |0       |None        |2026-12-06T23:00:08     |\n"
        "6     |COMPLETED   |0       |None        |2026-12-06T22:59:10     |\n"
    )
    jobs = m.parse_squeue(text)
    assert jobs["2_1"] == m.SlurmJob("2_1", "FAILED", 1, None, "NonZeroExitCode")
    assert jobs["3"].reason == "ReqNodeNotAvail, UnavailableNodes:vm"
    assert (jobs["4"].exit_code, jobs["4"].signal) == (0, 15)
    # EndTime (SLURM_TIME_FORMAT=standard, local time): when it ended; a running job's is a guess
    assert jobs["5"].ended_at is None
    assert jobs["6"].ended_at == time.mktime((2026, 12, 6, 22, 59, 10, 0, 0, -1))


def test_parse_sacct_as_its_man_page_describes_it():
    # the allocation lines as on the rig (sacct --parsable2 -o SACCT_FORMAT, jobacct_gather/linux):
    # TotalCPU on the allocation, MaxRSS on its steps only
    text = (
        "7|COMPLETED|0:0||00:02.278|2026-12-06T22:59:10\n"
        "7.batch|COMPLETED|0:0|219800K|00:02.278|2026-12-06T22:59:10\n"
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
    assert jobs["7"].ended_at == time.mktime((2026, 12, 6, 22, 59, 10, 0, 0, -1))
    assert jobs["9"].ended_at is None and m.wall_time("Unknown") is None


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
    assert status.waits_at == reason  # the tracker's line for the run names it
    assert m.waits_at_limit(job("PENDING", reason))


@pytest.mark.parametrize("reason", SCHEDULING)
def test_pending_for_the_scheduler_waits_without_a_limit(reason):
    status = m.status(job("PENDING", reason), None, False, CONTEXT)
    assert status.phase is Phase.QUEUED and not status.waits_at
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
    assert getattr(sbatch_refusal(stderr), "limit", None) == limit


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
    failed = m.SlurmJob("5_1", "FAILED", 1, ended_at=1000.0)
    assert m.status(failed, None, False, CONTEXT) is None  # record may be on its way ...
    waiting = m.unrecorded(failed, CONTEXT, now=1000.0 + m.RECORD_GRACE - 1)
    assert waiting.phase is Phase.RUNNING and "waiting for its exit record" in waiting.reason
    ended = m.unrecorded(failed, CONTEXT, now=1000.0 + m.RECORD_GRACE)  # ... from Slurm's end
    assert ended.phase is Phase.DONE and "FAILED (exit code 1)" in ended.error


def test_between_squeues_the_files_answer_and_else_the_last_status_stands():
    signalled = m.ExitRecord(143, signalled=True)
    assert m.from_files(QUEUED, DONE_OK, True, CONTEXT).exit_code == 0
    assert m.from_files(RUNNING, signalled, True, CONTEXT) is None  # Slurm's verdict, now
    started = m.from_files(QUEUED, None, True, CONTEXT)
    assert started.phase is Phase.RUNNING and started.reason == "its script started"
    pending = m.Status(Phase.QUEUED, reason="PENDING (Priority)")
    assert m.from_files(pending, None, False, CONTEXT) is pending
    allocated = m.Status(Phase.RUNNING, reason="RUNNING")  # squeue's word is not overwritten
    assert m.from_files(allocated, None, True, CONTEXT) is allocated


def test_an_ended_attempt_carries_the_image_its_container_ran():
    docker = m.ExitRecord(0, image_id="sha256:" + "a" * 64)
    assert m.status(None, docker, True, CONTEXT).details["image_id"] == "sha256:" + "a" * 64
    podman = m.ExitRecord(0, image_id="b" * 64)  # podman inspect's .Image: the bare digest
    assert m.status(None, podman, True, CONTEXT).details["image_id"] == "sha256:" + "b" * 64
    assert "image_id" not in m.status(None, DONE_OK, True, CONTEXT).details  # apptainer


def test_sacct_has_the_figures_once_it_has_the_jobs_end():
    assert not m.accounted(None) and not m.accounted(job("RUNNING"))
    assert m.accounted(job("COMPLETED")) and m.accounted(job("CANCELLED"))
    figures = m.SlurmJob("5_1", "COMPLETED", 0, max_rss=30, total_cpu=0.5)
    assert m.merged(job("COMPLETING"), figures) == m.SlurmJob(
        "5_1", "COMPLETING", 0, reason="None", max_rss=30, total_cpu=0.5
    )
    assert m.merged(None, figures) is figures


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
    dead = {"vm:4026:111:ab12cd34"}  # launcher.ended decides; not another host's or namespace's
    assert orphaned_jobs(text, dead.__contains__) == ["10", "11"]


def test_sinfo_partitions_keep_their_largest_node():
    text = "debug*|2|24105|(null)\ngpu|8|64000|gpu:a100:4(S:0-1)\ngpu|16|128000|(null)\n"
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
