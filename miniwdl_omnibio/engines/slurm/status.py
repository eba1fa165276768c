"""Pure mapping of Slurm's answers (squeue, sacct, the element's exit record) to Status.

Job states and pending reasons are Slurm's own, as squeue(1) and sacct(1) of Slurm 22.05 list
them in JOB STATE CODES and JOB REASON CODES (https://slurm.schedmd.com/squeue.html,
https://slurm.schedmd.com/sacct.html). Nothing here runs a command or reads a file.
"""

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeGuard

from ..base import Phase, Status
from ..jobscript import MISSING_FILESYSTEM_EXIT, ExitRecord
from .cluster import first_error_line
from .translate import EXIT_NO_ELEMENT

# squeue -O fields, each padded to its width and closed by "|" (squeue(1): -O "type[:[.][size]
# [suffix]]"); the reason may hold spaces and commas; EndTime, when the job ended (or will)
SQUEUE_FORMAT = "JobArrayID:64|,State:24|,exit_code:12|,Reason:200|,EndTime:24|"
# sacct(1): MaxRSS, the largest resident set of the job's processes (on its step lines, e.g.
# 123.batch; jobacct_gather samples it), and TotalCPU, their user and system CPU time (the
# allocation's line sums its steps); both measure the job's own processes only
SACCT_FORMAT = "JobID,State,ExitCode,MaxRSS,TotalCPU,End"
# seconds an ended job's exit record may take to show on this host (NFS attribute caching),
# counted from Slurm's EndTime
RECORD_GRACE = 60.0

# Each state below as squeue(1) of Slurm 22.05 defines it in JOB STATE CODES (the man page the
# rig's slurm-client installs; sacct(1) refers to the same codes). Waiting for an allocation:
WAITING = {
    "PENDING",  # PD: waits for resources to be allocated
    "CONFIGURING",  # CF: allocated, the resources are not ready yet (e.g. nodes booting)
    "REQUEUED",  # RQ: a completing job going back to the queue
    "REQUEUE_HOLD",  # RH: a held job going back to the queue
    "REQUEUE_FED",  # RF: going back to the queue of a federation
    "RESV_DEL_HOLD",  # RD: held since the reservation it asked for was deleted
}
# ... holding one: the attempt runs (or will resume)
ALLOCATED = {
    "RUNNING",  # R: has an allocation
    "COMPLETING",  # CG: ending; processes may still be active on some nodes
    "SUSPENDED",  # S: has an allocation, execution suspended, CPUs released to others
    "STOPPED",  # ST: has an allocation, stopped by SIGSTOP, CPUs kept
    "SIGNALING",  # SI: being signalled
    "STAGE_OUT",  # SO: staging out files
    "RESIZING",  # RS: about to change size
}
# ... or ended because the cluster lost it, not for the task's own doing: interrupted, retried
# within runtime.preemptible. PR: ended by preemption; NF: ended because an allocated node
# failed; BF: could not be launched (typically the hardware) and was not requeued
INTERRUPTED = {"PREEMPTED", "NODE_FAIL", "BOOT_FAIL"}
# TO: ended when it reached its time limit -> the lifecycle's time-limit error
TIMEOUT = "TIMEOUT"
# OOM: ran out of memory -> the attempt's exit with OOM named
OUT_OF_MEMORY = "OUT_OF_MEMORY"
# CA: cancelled by its user or an administrator, started or not (sacct(1) may add "by <uid>"):
# cancelled by this run (record.cancelled) -> terminated, else one line saying it was not us
CANCELLED = "CANCELLED"
# COMPLETED (CD: exit code zero on all nodes), FAILED (F: non-zero exit code or another failure),
# DEADLINE (DL: ended at its deadline; we never set --deadline), and SPECIAL_EXIT / REVOKED
# (requeue and federation states that need --requeue or a federation, neither of which we use)
# all end with the exit the job script recorded, else Slurm's own exit code

# Pending reasons, each as Slurm's job_reason_codes.shtml describes it
# (https://slurm.schedmd.com/job_reason_codes.html; the names are those Slurm 22.05's
# job_reason_string() prints). The job itself can never satisfy these: it stays PENDING until
# someone changes the job or the cluster's configuration, so the attempt fails and is cancelled.
NEVER_STARTS = re.compile(
    r"^(?:"
    r"DependencyNeverSatisfied"  # depends on a job that will never satisfy the dependency
    r"|InvalidAccount|InvalidQOS"  # the job's account, or its QOS, is not valid
    r"|AccountNotAllowed"  # the partition does not allow the job's account
    r"|QOSNotAllowed"  # the association or the partition does not allow the job's QOS
    r"|BadConstraints"  # requirements no configuration can meet: "never expected to be runnable"
    r"|PartitionTimeLimit"  # the job's time limit is above its partition's
    r"|MaxMemPerLimit"  # the job's memory per CPU or per node is above the allowed maximum
    # what one job (or one node of a job) may use under its association or QOS, which the request
    # exceeds: AssocMaxCpuPerJobLimit, AssocMaxWallDurationPerJobLimit, AssocMaxMemPerNode,
    # QOSMaxCpuPerJobLimit, QOSMaxNodePerJobLimit, QOSMaxMemoryPerJob, QOSMaxGRESPerNode,
    # QOSMaxCpuMinutesPerJobLimit, QOSMaxWallDurationPerJobLimit ...
    r"|(?:Assoc|QOS)Max\w*Per(?:Job|Node)(?:Limit)?"
    # the request is below the minimum each job of the QOS must ask for: QOSMinCpuNotSatisfied,
    # QOSMinMemory, QOSMinGRES, QOSMinNode ...
    r"|QOSMin\w+"
    r")$"
)
# ... and the limits on what many jobs use together (a user's, an account's, a QOS's): the job
# waits until jobs holding the limit end, so the attempt stays queued (Status.waits_at: the
# tracker logs the limit once). Grp*: an association's or a QOS's aggregate, over every user of
# it (AssocGrpCpuLimit, AssocGrpJobsLimit, QOSGrpNodeLimit, QOSGrpSubmitJobsLimit, the *Minutes
# usage limits ...);
# AssocMaxJobsLimit / AssocMaxSubmitJobLimit: the jobs each user of the association may run / have
# running or pending; QOSMax*PerUser: what each user of the QOS may use at once
# (QOSMaxJobsPerUserLimit, QOSMaxCpuPerUserLimit, QOSMaxNodePerUserLimit, QOSMaxMemoryPerUser,
# QOSMaxSubmitJobPerUserLimit ...); Max*PerAccount: the same per account of the QOS;
# JobArrayTaskLimit: the array's own limit on elements running at once; Association*Limit and
# QOS{Job,Resource,Time}Limit: the older umbrella names of these (Slurm 22.05 no longer sets
# them); QOSUsageThreshold: the QOS's usage threshold is breached; AccountingPolicy: the fallback
# when no other limit matched. A job whose own request is larger than a per-user limit waits too:
# the reason does not say so (QOS flag DenyOnLimit makes sbatch refuse such a job instead).
AT_A_LIMIT = re.compile(
    r"^(?:(?:Assoc|QOS)Grp\w+|AssocMaxJobsLimit|AssocMaxSubmitJobLimit|QOSMax\w+PerUser(?:Limit)?"
    r"|Max\w+PerAccount|JobArrayTaskLimit|Association(?:Job|Resource|Time)Limit"
    r"|QOS(?:Job|Resource|Time)Limit|QOSUsageThreshold|AccountingPolicy)$"
)


@dataclass(frozen=True)
class SlurmJob:
    """One line of squeue or sacct about one job or array element."""

    job_id: str  # 123 or 123_4: the handle
    state: str  # e.g. RUNNING, CANCELLED
    exit_code: int | None  # the batch script's exit code, None when Slurm gives none
    signal: int | None = None
    reason: str = ""
    max_rss: int | None = None  # bytes: sacct's MaxRSS of its steps, with accounting
    total_cpu: float | None = None  # seconds: sacct's TotalCPU
    ended_at: float | None = None  # seconds since the epoch: EndTime once it ended


def waits_at_limit(job: SlurmJob) -> bool:
    """Pending until jobs holding a user's, account's or QOS's limit end (AT_A_LIMIT)."""
    return job.state == "PENDING" and bool(AT_A_LIMIT.match(job.reason))


def final(record: ExitRecord | None) -> TypeGuard[ExitRecord]:
    """The element script's record alone says how the attempt ended; else (or without one)
    Slurm's verdict on the job counts: after a signal (scancel, Slurm's limit, preemption), or a
    container killed by a signal for a reason we do not know (e.g. the cgroup's OOM killer under
    apptainer)."""
    if record is None or record.signalled:
        return False
    return record.oom or record.timed_out or not record.started or record.exit_code < 128


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """Lines of ``squeue --noheader -O SQUEUE_FORMAT``; exit_code is a wait(2) status there."""
    jobs = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")] + [""]
        if len(fields) < 5 or not fields[0]:
            continue
        job_id, state, raw, reason, end = fields[:5]
        code, signal = (int(raw) >> 8, int(raw) & 0x7F) if raw.isdigit() else (None, None)
        state = state.upper()
        ended = wall_time(end) if state not in WAITING | ALLOCATED else None
        jobs[job_id] = SlurmJob(job_id, state, code, signal or None, reason, ended_at=ended)
    return jobs


def parse_sacct(text: str) -> dict[str, SlurmJob]:
    """Lines of ``sacct --noheader --parsable2 -o SACCT_FORMAT``: a job's (or array element's)
    allocation line, then its step lines (123.batch, 123_4.extern), whose largest MaxRSS is the
    job's.

    sacct(1): State may read "CANCELLED by <uid>"; ExitCode is "<code>:<signal>".
    """
    jobs: dict[str, SlurmJob] = {}
    peaks: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split("|") + [""] * 3
        if len(fields) < 6 or not fields[0]:
            continue
        job_id, state, exit_code, max_rss, total_cpu, end = fields[:6]
        if "." in job_id:
            owner = job_id.split(".", 1)[0]
            if (rss := size_bytes(max_rss)) is not None:
                peaks[owner] = max(rss, peaks.get(owner, 0))
            continue
        code, _sep, signal = exit_code.partition(":")
        jobs[job_id] = SlurmJob(
            job_id,
            state.split()[0].upper() if state.split() else "UNKNOWN",
            int(code) if code.isdigit() else None,
            int(signal) if signal.isdigit() and int(signal) else None,
            total_cpu=cpu_seconds(total_cpu),
            ended_at=wall_time(end),
        )
    return {job_id: replace(job, max_rss=peaks.get(job_id)) for job_id, job in jobs.items()}


def wall_time(text: str) -> float | None:
    """squeue's EndTime, sacct's End: local time to the second (SLURM_TIME_FORMAT=standard,
    which SlurmCli sets); None for Unknown, N/A or nothing."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def size_bytes(text: str) -> int | None:
    """sacct's MaxRSS, e.g. "219800K" (sacct(1) --units: K, M, G, T, P, in 1024s); None when
    empty (nothing sampled)."""
    text = text.strip().upper()
    power = "KMGTP".find(text[-1:]) + 1 if text else 0
    try:
        return round(float(text[:-1] if power else text) * 1024**power)
    except ValueError:
        return None


def cpu_seconds(text: str) -> float | None:
    """sacct's TotalCPU, [DD-[HH:]]MM:SS[.sss] (sacct(1) TotalCPU), in seconds."""
    days, _sep, clock = text.strip().rpartition("-")
    try:
        parts = [float(p) for p in clock.split(":")]
        seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
        return seconds + int(days or 0) * 86400 if 2 <= len(parts) <= 3 else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Context:
    """What the mapping needs to know besides Slurm's answer, to word its one line."""

    where: str  # "Slurm job 123_4 (run.call-x.1)"
    cancelled_by_us: bool
    image: str = ""
    log_tail: str = ""  # last lines of attemptN.log: the container runtime's own words
    node_path: str = ""  # where the node should find the element's files


def from_record(record: ExitRecord, context: Context, state: str = "") -> Status:
    """The attempt's end as its own script recorded it."""
    if record.timed_out:  # the lifecycle words the error, naming the limit
        reason = f"{context.where}: stopped by its script at the time limit"
        return Status(Phase.DONE, timed_out=True, reason=reason)
    if not record.started:
        said = f": {first_error_line(context.log_tail)}" if context.log_tail.strip() else ""
        return Status(
            Phase.DONE,
            error=f"{context.where} could not start its container ({context.image}){said}",
            reason=state or "container start failed",
        )
    return Status(
        Phase.DONE, exit_code=record.exit_code, oom=record.oom, reason=state or "exit record"
    )


CGROUP_SOURCE = "cgroup, read in the container by the job script"
SACCT_SOURCE = "sacct MaxRSS and TotalCPU: the job's own processes"


def status(
    job: SlurmJob | None, record: ExitRecord | None, running: bool, context: Context
) -> Status | None:
    """The attempt's Status from its exit record (empty while it runs: ``running``) and Slurm's
    answer on its job this round (None: Slurm does not list it); None: nothing known yet. An
    ended attempt carries the image its container ran (podman gives the bare digest docker
    prefixes with sha256:) and what was measured of it: details["usage"], the container's cgroup
    as the element script recorded it, else sacct's figures for the job (the container itself
    under apptainer, only the client under docker); sacct's stay beside the cgroup's as
    ``sacct_max_rss`` and ``sacct_total_cpu``."""
    found = verdict(job, record, running, context)
    if found is None or found.phase is not Phase.DONE:
        return found
    details = dict(found.details)
    cgroup = record.usage() if record else {}
    sacct = {"max_rss": job.max_rss, "total_cpu": job.total_cpu} if job else {}
    sacct = {key: value for key, value in sacct.items() if value is not None}
    if cgroup:
        beside = {f"sacct_{key}": value for key, value in sacct.items()}
        details["usage"] = {**cgroup, "source": CGROUP_SOURCE, **beside}
    elif sacct:  # in the trace's words
        names = {"max_rss": "memory_peak", "total_cpu": "cpu_seconds"}
        details["usage"] = {**{names[k]: v for k, v in sacct.items()}, "source": SACCT_SOURCE}
    if record and record.image_id:
        image = record.image_id
        details["image_id"] = image if ":" in image else f"sha256:{image}"
    return replace(found, details=details)


def from_files(
    last: Status, record: ExitRecord | None, running: bool, context: Context
) -> Status | None:
    """Between two looks at Slurm: a final record is the attempt's end, a script that started
    runs, and else the last status (Slurm's word then) stands; None when a signal ended the
    script and Slurm's verdict is wanted now."""
    if record is not None:
        return status(None, record, running, context) if final(record) else None
    if running and last.phase is Phase.QUEUED:
        return Status(Phase.RUNNING, reason="its script started")
    return last


def accounted(job: SlurmJob | None) -> bool:
    """sacct has the job's end, and so its final MaxRSS and TotalCPU: slurmdbd records it a
    moment after the end (on the rig, sacct said RUNNING and TotalCPU 00:00:00 for 0.3 s)."""
    return job is not None and job.state not in WAITING | ALLOCATED


def merged(job: SlurmJob | None, accounting: SlurmJob) -> SlurmJob:
    """squeue's word on the job (the fresher) with sacct's figures; sacct's alone without it."""
    if job is None:
        return accounting
    return replace(job, max_rss=accounting.max_rss, total_cpu=accounting.total_cpu)


def verdict(
    job: SlurmJob | None, record: ExitRecord | None, running: bool, context: Context
) -> Status | None:
    """A final record is the container's own exit, as is any record of a job Slurm does not list.
    Otherwise Slurm's verdicts on how a job ended (preemption, node loss, its time limit, OOM, a
    cancellation) come first."""
    if final(record) or (job is None and record):
        return from_record(record, context, job.state if job else "")
    if job is None:
        return Status(Phase.RUNNING, reason="its script started") if running else None
    state, reason = job.state, job.reason
    if state in WAITING:
        if state == "PENDING" and NEVER_STARTS.match(reason):
            return Status(
                Phase.DONE,
                error=f"Slurm will never start {context.where}: it is pending with reason {reason}",
                reason=f"{state} ({reason})",
                lingering=True,  # still queued: the tracker cancels it
            )
        if running:  # Slurm's answer predates the script's start
            return Status(Phase.RUNNING, reason="its script started")
        return Status(
            Phase.QUEUED,
            reason=f"{state} ({reason})" if reason else state,
            waits_at=reason if waits_at_limit(job) else "",
        )
    if state in ALLOCATED:
        return Status(Phase.RUNNING, reason=state)
    if state in INTERRUPTED:
        return Status(Phase.DONE, interrupted=True, reason=f"{context.where} ended {state}")
    if state == TIMEOUT:
        return Status(Phase.DONE, timed_out=True, reason=f"{context.where}: Slurm ended it TIMEOUT")
    if state == CANCELLED:
        by = "" if context.cancelled_by_us else " outside this run (scancel by a user or admin)"
        return Status(Phase.DONE, error=f"{context.where} was cancelled{by}", reason=state)
    if state == OUT_OF_MEMORY:
        code = record.exit_code if record else (job.exit_code or 137)
        return Status(Phase.DONE, exit_code=code, oom=True, reason=state)
    if record:
        return from_record(record, context, state)
    if job.exit_code == MISSING_FILESYSTEM_EXIT:
        return Status(
            Phase.DONE,
            error=f"{context.where}: the node cannot read {context.node_path}; mount the shared "
            "filesystem on the Slurm nodes at [omnibio_slurm] node_mount_path",
            reason=state,
        )
    if job.exit_code == EXIT_NO_ELEMENT:
        return Status(Phase.DONE, error=f"{context.where} ran without an element", reason=state)
    return None  # ended, but its record is not visible yet (or never will be: ``unrecorded``)


def unrecorded(job: SlurmJob, context: Context, now: float) -> Status:
    """Slurm says the job ended and its exit record is not visible here: RECORD_GRACE seconds
    after Slurm's EndTime the record is not coming, and Slurm's exit code and state are all we
    know."""
    if job.ended_at is not None and now - job.ended_at < RECORD_GRACE:
        return Status(Phase.RUNNING, reason=f"{job.state}, waiting for its exit record")
    signal = f", signal {job.signal}" if job.signal else ""
    return Status(
        Phase.DONE,
        error=f"{context.where} ended {job.state} (exit code {job.exit_code}{signal}) before its "
        f"script recorded the container's exit; see {context.node_path}",
        reason=job.state,
    )


def job_ids(handles: Iterable[str]) -> list[str]:
    """The distinct job ids to ask about: an array's base id covers all its elements."""
    return sorted({h.split("_", 1)[0] for h in handles}, key=lambda j: (len(j), j))
