"""The Slurm client commands, and what the engine checks about the cluster at start.

Every call goes through ``SlurmCli.run``: one place that sets SLURM_CONF, bounds the time a
command may take, counts the calls (the benchmark reports them per task) and turns a failure
into one line quoting Slurm's own words.
"""

import collections
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from WDL import Error

from ..base import QueueFull

TOOLS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol")
COMMAND_TIMEOUT = 120.0  # seconds; slurmctld answers in well under a second when healthy


class SlurmProblem(Error.RuntimeError):
    """A Slurm command failed; the message is one line naming the command and Slurm's reason."""


def first_error_line(stderr: str) -> str:
    """The most telling line of a Slurm command's stderr ("sbatch: error: ...")."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors[-1] if errors else lines[-1] if lines else "no message")[:300]


# sbatch refused because the queue of the user (association, account, QOS) is full: slurmctld's
# _job_create (src/slurmctld/job_mgr.c) answers ESLURM_ACCOUNTING_POLICY with the reason as the
# message, which sbatch prints as "sbatch: error: <reason>" (_unpack_return_code2_msg,
# src/common/slurm_protocol_pack.c) before "Batch job submission failed: <strerror>". These are
# the reasons acct_policy_validate() gives for the submit counts (src/slurmctld/acct_policy.c),
# which count each element of an array (MaxSubmitJobsPerUser, MaxSubmitJobs, GrpSubmitJobs in
# resource_limits.shtml).
SUBMIT_LIMITS = frozenset(
    {
        "QOSMaxSubmitJobPerUserLimit",  # MaxSubmitJobsPerUser of the QOS
        "AssocMaxSubmitJobLimit",  # MaxSubmitJobs of the user's association
        "QOSGrpSubmitJobsLimit",  # GrpSubmitJobs of the QOS
        "AssocGrpSubmitJobsLimit",  # GrpSubmitJobs of an association
        "MaxSubmitJobsPerAccount",  # MaxSubmitJobsPerAccount of the QOS
    }
)
# ESLURM_ACCOUNTING_POLICY's text (src/common/slurm_errno.c), the same for every limit
ACCOUNTING_POLICY = "Job violates accounting/QOS policy"


def sbatch_refusal(stderr: str) -> SlurmProblem | QueueFull:
    """sbatch's refusal as one line with every error it printed. QueueFull when the user's
    queue is full (the tracker holds the refused jobs until jobs end): its ``limit`` is the one
    Slurm named on a line before "Batch job submission failed", "" when sbatch gave only
    ESLURM_ACCOUNTING_POLICY's text (a job_submit plugin's refusal, or a Slurm that sends no
    reason)."""
    said = [line.split("error:", 1)[1].strip() for line in stderr.splitlines() if "error:" in line]
    message = f"omnibio_slurm: sbatch failed: {'; '.join(said) or first_error_line(stderr)}"[:400]
    named = [reason for reason in said if ACCOUNTING_POLICY not in reason]
    limit = next((name for name in named if name in SUBMIT_LIMITS), None if named else "")
    if ACCOUNTING_POLICY in stderr and limit is not None:
        return QueueFull(message, limit)
    return SlurmProblem(message)


class SlurmCli:
    def __init__(self, slurm_conf: str) -> None:
        self.env = dict(os.environ)
        if slurm_conf:
            self.env["SLURM_CONF"] = slurm_conf
        # the times squeue and sacct print (EndTime, End): ISO 8601, whatever the user's own
        # SLURM_TIME_FORMAT (squeue(1), ENVIRONMENT VARIABLES)
        self.env["SLURM_TIME_FORMAT"] = "standard"
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def run(
        self, argv: Sequence[str], check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        with self._lock:
            self.counts[argv[0]] += 1
        try:
            done = subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise SlurmProblem(
                f"omnibio_slurm: {argv[0]} did not answer within {COMMAND_TIMEOUT:.0f} s"
            ) from None
        if check and done.returncode != 0:
            raise SlurmProblem(f"omnibio_slurm: {argv[0]} failed: {first_error_line(done.stderr)}")
        return done


@dataclass(frozen=True)
class Partition:
    default: bool
    max_cpu: int  # the largest node's CPUs
    max_memory: int  # ... and memory, in bytes
    gpus: int  # the most GPUs (gres gpu) on one node


SINFO_FORMAT = "%P|%c|%m|%G"  # sinfo(1): partition (* = default), CPUs, memory in MB, gres


def gres_gpus(gres: str) -> int:
    """GPUs in a sinfo %G value such as gpu:2, gpu:a100:4(S:0-1) or (null)."""
    items = [item.split("(")[0].split(":") for item in gres.split(",")]
    return sum(int(p[-1]) for p in items if p[0] == "gpu" and len(p) > 1 and p[-1].isdigit())


def parse_sinfo(text: str) -> dict[str, Partition]:
    """One line per partition and node configuration: keep each partition's largest node."""
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 4:
            continue
        raw, cpus, memory, gres = fields[:4]
        name = raw.rstrip("*")
        # sinfo prints a range such as 4+ when nodes of one line differ; the first figure counts
        cpu = int("".join(c for c in cpus.split("+")[0] if c.isdigit()) or 0)
        mem = int("".join(c for c in memory.split("+")[0] if c.isdigit()) or 0) << 20
        old = found.get(name) or Partition(False, 0, 0, 0)
        found[name] = Partition(
            default=raw.endswith("*") or old.default,
            max_cpu=max(cpu, old.max_cpu),
            max_memory=max(mem, old.max_memory),
            gpus=max(gres_gpus(gres), old.gpus),
        )
    return found


def accounting_enabled(scontrol_config: str) -> bool:
    """``scontrol show config``: sacct has answers unless AccountingStorageType is none."""
    for line in scontrol_config.splitlines():
        key, _sep, value = line.partition("=")
        if key.strip() == "AccountingStorageType":
            return value.strip() not in ("", "accounting_storage/none")
    return False


# squeue -O fields for the start-time search for jobs of dead launchers: each job (an array once:
# squeue(1) ArrayJobID is the job's own id when it is no array) and its --comment
ORPHAN_FORMAT = "ArrayJobID:24|,Comment:400|"


def orphaned_jobs(squeue_output: str, ended: Callable[[str], bool]) -> list[str]:
    """Job ids whose --comment names a launcher that ``ended`` (launcher.ended: a SIGKILLed
    miniwdl could not scancel them). Jobs of other hosts or PID namespaces, and of live
    launchers, are never touched."""
    found = set()
    for line in squeue_output.splitlines():
        job_id, _sep, rest = (part.strip() for part in line.partition("|"))
        comment = rest.rstrip("|").strip()
        words = dict(w.split("=", 1) for w in comment.split() if "=" in w)
        if comment.startswith("omnibio ") and job_id.isdigit() and ended(words.get("launcher", "")):
            found.add(job_id)
    return sorted(found, key=int)
