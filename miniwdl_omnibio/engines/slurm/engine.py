"""omnibio_slurm: each task attempt is one Slurm job, or one element of an ``sbatch --array``.

The nodes mount the shared filesystem holding the run directory; each attempt's job script
(``<task dir>/slurm/attemptN.sh``, see slurm_script.py) runs its container with docker, podman
or apptainer and records the exit. Attempts that become ready together go in one sbatch
(equal sbatch options: one array); the status of every job of this process is one squeue per
poll that needs it: the exit records the job scripts write (empty while the job runs) answer most
polls, and squeue (``--states=all`` shows jobs that ended within MinJobAge), then sacct when the
cluster has accounting, answer the rest. Cancellations gather into one scancel.
"""

import contextlib
import functools
import logging
import math
import os
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ...attempt import TaskAttempt
from ...gathering import Cancellations, Gathering, Waiting, settle
from ...placement.sharedfs import SharedFilesystem
from ...settings import Settings
from ..base import Accepted, Engine, Phase, Status, Submitted
from ..jobscript import ExitRecord, read_exit_record
from . import status as mapping
from .cluster import (
    ORPHAN_FORMAT,
    SINFO_FORMAT,
    Partition,
    SlurmCli,
    SlurmProblem,
    accounting_enabled,
    orphaned_jobs,
    parse_sinfo,
    probe_script,
    process_identity,
)
from .hold import Held, HeldSubmissions, SubmitLimit, sbatch_refusal
from .translate import (
    SlurmRequest,
    SlurmSettings,
    batch_script,
    node_path,
    sbatch_argv,
    translate,
)

GATHER_MAX = 10.0  # seconds the first of a burst of submissions waits for the rest at most
CANCEL_LINGER = 1.5  # seconds without a new cancellation before the gathered ones' scancel
CANCEL_MAX = 10.0  # ... and at most this long after the first
RECORD_GRACE = 60.0  # seconds an ended job's exit record may take to show on this host (NFS)
LOG_TAIL_BYTES = 4000


Pending = Waiting[SlurmRequest, str]


class Submissions:
    """Requests that arrive close together share sbatch calls: one per group of equal sbatch
    options, as an array (a group of one is a plain job). Requests gather until none came for
    ``linger`` seconds (a scatter's attempts reach submit over seconds on a busy host), at most
    GATHER_MAX."""

    def __init__(
        self,
        send: Callable[[list[SlurmRequest]], list[str]],
        linger: float,
        size: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._send = send
        self._size = size
        self.gathering = Gathering(self._flush, linger, GATHER_MAX, clock, sleep)

    def add(self, request: SlurmRequest) -> str:
        handle = self.gathering.add(request)
        assert handle
        return handle

    def _flush(self, batch: list[Pending]) -> None:
        groups: dict[tuple[str, ...], list[Pending]] = {}
        for pending in batch:
            groups.setdefault(pending.item.options, []).append(pending)
        for members in groups.values():
            for start in range(0, len(members), self._size):
                chunk = members[start : start + self._size]
                settle(chunk, functools.partial(self._send, [p.item for p in chunk]))


class SlurmEngine(Engine[SlurmRequest]):
    section = "omnibio_slurm"
    runtime_keys = ("slurm_partition", "slurm_account", "slurm_qos")
    memory_is_limit = True  # --mem is what the node sets aside; the container may use that much
    enforces_time_limit = True  # the job script at the second, Slurm's --time in minutes behind it
    # the probe's wait (tests pass their own)
    clock: Callable[[], float] = staticmethod(time.monotonic)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(
        self,
        cli: SlurmCli,
        settings: SlurmSettings,
        fs: SharedFilesystem,
        partitions: dict[str, Partition],
        accounting: bool,
        logger: logging.Logger,
    ) -> None:
        self.cli = cli
        self.filesystem = fs
        self.partitions = partitions
        self.accounting = accounting
        self.logger = logger
        self.poll_seconds = settings.poll_seconds
        self.squeue_seconds = settings.squeue_seconds
        self.default_time_limit = settings.default_time_limit
        # in every job's --comment: a later run on this host cancels the jobs of a dead launcher
        self.launcher = f"{process_identity()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.settings = settings
        partition = self.partition(self.settings.partition)
        if partition is None:
            raise settings.fail(
                "partition",
                f"Slurm has no partition {self.settings.partition!r} "
                f"(sinfo lists: {', '.join(sorted(partitions)) or 'none'})"
                if self.settings.partition
                else "is empty and the cluster has no default partition",
            )
        self.limits = {
            "cpu": settings.max_cpu or partition.max_cpu,
            "mem_bytes": settings.max_memory or partition.max_memory,
        }
        self.held = HeldSubmissions(self._sbatch, self._outstanding, logger)
        self.submissions = Submissions(
            self.held.submit,
            settings.submit_linger,
            settings.max_array_size,
        )
        self.cancellations = Cancellations(self._scancel, CANCEL_LINGER, CANCEL_MAX)
        self._lock = threading.Lock()
        self._requests: dict[str, SlurmRequest] = {}  # handle -> request, until released
        self._ended_unrecorded: dict[str, float] = {}  # handle -> when first seen so
        self._jobs: dict[str, mapping.SlurmJob] = {}  # Slurm's last word on each handle
        self._asked_at = -math.inf  # when squeue last answered
        self._limits: frozenset[str] = frozenset()  # the limits jobs of this run wait at

    # --- start -----------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "SlurmEngine":
        settings = SlurmSettings.load(cfg)
        missing = SlurmCli.missing_tools()
        if missing:
            raise Error.RuntimeError(
                f"omnibio_slurm: {', '.join(missing)} not found on PATH; install the Slurm "
                "client commands (Debian: slurm-client) on this host"
            )
        cli = SlurmCli(settings.slurm_conf)
        fs = settings.filesystem
        try:
            partitions = parse_sinfo(
                cli.run(["sinfo", "--noheader", f"--format={SINFO_FORMAT}"]).stdout
            )
            config = cli.run(["scontrol", "show", "config"]).stdout
        except SlurmProblem as exn:
            raise SlurmProblem(f"{exn} (is slurmctld running and reachable?)") from None
        engine = cls(cli, settings, fs, partitions, accounting_enabled(config), logger)
        engine.check_account(settings)
        engine.cancel_orphans(logger)
        if settings.probe:
            engine.probe(settings.probe_timeout, logger)
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_slurm",
                partition=engine.settings.partition or "(default)",
                runtime=engine.settings.runtime,
                accounting=engine.accounting,
                mount_path=fs.container_root,
                node_mount_path=engine.settings.node_root,
                **engine.limits,
            ),
        )
        return engine

    def partition(self, name: str) -> Partition | None:
        if name:
            return self.partitions.get(name)
        return next((p for p in self.partitions.values() if p.default), None)

    def check_account(self, settings: Settings) -> None:
        """With accounting, an unknown account or QOS is refused at start (without it, Slurm
        accepts any and the check is not possible)."""
        if not self.accounting:
            return
        for key, entity in (("account", "account"), ("qos", "qos")):
            name = getattr(self.settings, key)
            if not name:
                continue
            found = self.cli.run(
                ["sacctmgr", "--noheader", "--parsable2", "show", entity, name, "format=Name"],
                check=False,
            )
            if found.returncode == 0 and name not in found.stdout.split():
                raise settings.fail(key, f"Slurm's accounting knows no {entity} {name!r}")

    def cancel_orphans(self, logger: logging.Logger) -> None:
        """scancel, in one call, the jobs left by miniwdl processes of this host that died
        without cancelling them (SIGKILL, a lost session): one squeue of this user's jobs."""
        listed = self.cli.run(
            ["squeue", "--noheader", "--me", f"--Format={ORPHAN_FORMAT}"], check=False
        )
        if listed.returncode != 0:
            logger.warning(_("omnibio_slurm: could not list jobs", error=listed.stderr[:300]))
            return
        orphans = orphaned_jobs(listed.stdout, process_identity(), _alive)
        if orphans:
            logger.log(
                NOTICE_LEVEL,
                _("cancelling Slurm jobs of a dead miniwdl process", jobs=" ".join(orphans)),
            )
            self.cli.run(["scancel", *orphans], check=False)

    def probe(self, timeout: int, logger: logging.Logger) -> None:
        """One tiny job: does the node see the shared filesystem and have the container runtime?"""
        here = os.getcwd()
        fs = self.filesystem
        assert fs
        directory = here if here == fs.host_root or here.startswith(fs.host_root + "/") else None
        directory = directory or fs.host_root
        token = uuid.uuid4().hex
        host_file = os.path.join(directory, f".omnibio-slurm-probe-{token[:12]}")
        try:
            with open(host_file, "w") as out:
                out.write(token)
        except OSError as exn:
            logger.warning(_("omnibio_slurm probe skipped", reason=str(exn)))
            return
        node_file = self.node_path(host_file)
        try:
            done = self.cli.run(
                ["sbatch", "--parsable", *self.probe_options(), "--output=/dev/null"]
                + ["--error=/dev/null", "--job-name=omnibio-probe"]
                + [f"--wrap={probe_script(shlex.quote(node_file), token, self.settings.runtime)}"],
                check=False,
            )
            if done.returncode != 0:
                refusal = sbatch_refusal(done.stderr)
                if not isinstance(refusal, SubmitLimit):
                    raise refusal
                # the user's queue is full: the run's own jobs will be held the same way
                logger.warning(_("omnibio_slurm probe skipped; not checked", reason=str(refusal)))
                return
            job = self.wait_probe(done.stdout.strip().split(";")[0], timeout, logger)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(host_file)
        if job is None:
            logger.warning(
                _("omnibio_slurm probe job did not run in time; not checked", seconds=timeout)
            )
            return
        if job.exit_code == 3:
            raise Error.RuntimeError(
                f"omnibio_slurm: a Slurm node cannot read {node_file}: mount the shared "
                "filesystem on the nodes at [omnibio_slurm] node_mount_path "
                f"({self.settings.node_root})"
            )
        if job.exit_code == 4:
            raise Error.RuntimeError(
                f"omnibio_slurm: {self.settings.runtime} is not on the PATH of the Slurm nodes "
                "([omnibio_slurm] container_runtime)"
            )
        if job.state != "COMPLETED":
            raise Error.RuntimeError(
                f"omnibio_slurm: the probe job {job.job_id} ended {job.state} "
                f"(exit code {job.exit_code}, reason {job.reason or 'none'})"
            )

    def probe_options(self) -> list[str]:
        options = ["--cpus-per-task=1", "--mem=16M", "--time=1", *self.settings.extra_options]
        for key in ("partition", "account", "qos"):
            if getattr(self.settings, key):
                options.append(f"--{key}={getattr(self.settings, key)}")
        return options

    def wait_probe(
        self, job_id: str, timeout: int, logger: logging.Logger
    ) -> mapping.SlurmJob | None:
        """The probe job once it ended; None at the timeout. squeue at 0.5 s, 1 s, 2 s ... (at
        most every 5 s): quick on an idle cluster, few calls while the probe waits in a queue.
        A probe waiting at a user's or account's limit (the user's jobs of other runs hold it)
        waits like any job, with one line naming the limit."""
        deadline = self.clock() + timeout
        pause = 0.5
        limit = ""
        while True:
            job = self.squeue([job_id]).get(job_id)
            if job and job.state not in mapping.WAITING | mapping.ALLOCATED:
                return job
            if job and job.state == "PENDING" and mapping.NEVER_STARTS.match(job.reason):
                self.cli.run(["scancel", job_id], check=False)
                raise Error.RuntimeError(
                    f"omnibio_slurm: Slurm will never start jobs of this configuration: the "
                    f"probe job is pending with reason {job.reason}"
                )
            if job and mapping.waits_at_limit(job) and job.reason != limit:
                limit = job.reason
                logger.info(_("omnibio_slurm probe job waits at a Slurm limit", limit=limit))
            if self.clock() > deadline:
                self.cli.run(["scancel", job_id], check=False)
                return None
            self.sleep(min(pause, max(0.0, deadline - self.clock())))
            pause = min(pause * 2, 5.0)

    def resource_limits(self) -> dict[str, int]:
        return self.limits

    def node_path(self, host_path: str) -> str:
        return node_path(host_path, self.settings.host_root, self.settings.node_root)

    # --- the attempt -----------------------------------------------------------------------

    def translate(self, attempt: TaskAttempt) -> SlurmRequest:
        overrides = {
            key: str(attempt.runtime[f"slurm_{key}"])
            for key in ("partition", "account", "qos")
            if attempt.runtime.get(f"slurm_{key}")
        }
        return translate(attempt, self.settings, overrides)

    def check_fits(self, request: SlurmRequest) -> None:
        """A request no node of its partition can hold would pend forever: one line instead."""
        partition = self.partition(request.partition)
        where = f"partition {request.partition or '(default)'}"
        if partition is None:
            raise Error.RuntimeError(
                f"runtime.slurm_partition: Slurm has no partition {request.partition!r}"
            )
        if request.cpu > partition.max_cpu:
            raise Error.RuntimeError(
                f"runtime.cpu {request.cpu} is more than any node of {where} has "
                f"({partition.max_cpu})"
            )
        if request.memory > partition.max_memory:
            raise Error.RuntimeError(
                f"runtime.memory {request.memory} bytes is more than any node of {where} has "
                f"({partition.max_memory})"
            )
        if request.gpu > partition.gpus:
            raise Error.RuntimeError(
                f"runtime.gpu: no node of {where} has {request.gpu} GPU(s) (sinfo lists gres "
                f"gpu:{partition.gpus} at most)"
            )

    def submit(self, request: SlurmRequest, logger: logging.Logger) -> Accepted:
        self.check_fits(request)
        files = request.files
        os.makedirs(files.host_dir, exist_ok=True)
        for path in (files.record, files.host("usage"), files.host("wait")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        # the environment may hold secrets: readable by the user only, never on a command line
        descriptor = os.open(files.host("env"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(request.env)
        with open(files.host("sh"), "w") as out:
            out.write(request.script)
        handle = self.submissions.add(request)
        with self._lock:
            self._requests[handle] = request
        logger.info(_("Slurm job", id=handle, script=files.node("sh")))
        return Accepted(handle)

    def _sbatch(self, requests: list[SlurmRequest]) -> list[str]:
        """One sbatch for requests with equal options: an array's element handles, or a plain
        job's id. A full queue raises SubmitLimit (held_submissions holds the requests)."""
        done = self.cli.run(
            sbatch_argv(requests, self.launcher), check=False, stdin=batch_script(requests)
        )
        if done.returncode != 0:
            raise sbatch_refusal(done.stderr)
        job_id = done.stdout.strip().split(";")[0]  # --parsable: "id" or "id;cluster"
        if not job_id.isdigit():
            raise SlurmProblem(f"omnibio_slurm: sbatch answered no job id: {done.stdout[:200]!r}")
        self.logger.info(_("sbatch", job=job_id, elements=len(requests)))
        return [f"{job_id}_{i}" for i in range(len(requests))] if len(requests) > 1 else [job_id]

    def _outstanding(self) -> int:
        """Attempts of this run whose job Slurm holds (sent, not released)."""
        with self._lock:
            handles = list(self._requests)
        return sum(1 for h in handles if self.held.slurm_handle(h))

    # --- status ----------------------------------------------------------------------------

    def squeue(self, job_ids: Sequence[str]) -> dict[str, mapping.SlurmJob]:
        """Every element of the given jobs, in any state slurmctld still holds (squeue(1):
        --states=all; --array lists each element of an array on its own line)."""
        if not job_ids:
            return {}
        done = self.cli.run(
            ["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(job_ids)}"]
            + [f"--Format={mapping.SQUEUE_FORMAT}"],
            check=False,
        )
        if done.returncode != 0:
            if "Invalid job id" in done.stderr:
                return {}  # none of them is known any more (all ended before MinJobAge)
            raise SlurmProblem(f"omnibio_slurm: squeue failed: {done.stderr.strip()[:300]}")
        return mapping.parse_squeue(done.stdout)

    def sacct(self, job_ids: Sequence[str]) -> dict[str, mapping.SlurmJob]:
        done = self.cli.run(
            ["sacct", "--noheader", "--parsable2", f"--jobs={','.join(job_ids)}"]
            + [f"--format={mapping.SACCT_FORMAT}"]
        )
        return mapping.parse_sacct(done.stdout)

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """The element scripts' files first (read on the shared filesystem, no Slurm command);
        one squeue (and sacct) every ``squeue_seconds`` for the attempts they say nothing final
        about, or at once when a record needs Slurm's verdict (a signal ended the script)."""
        now = time.monotonic()
        seen: dict[str, tuple[SlurmRequest, ExitRecord | None, bool]] = {}
        for record in records:
            with self._lock:
                request = self._requests.get(record.handle)
            if request is not None:
                running, exit_record = read_exit_record(request.files.record)
                seen[record.handle] = (request, exit_record, running)
        unsettled = [
            h for h, (_r, rec, _run) in seen.items() if rec is None or not mapping.final(rec)
        ]
        verdict_wanted = any(rec and not mapping.final(rec) for _r, rec, _run in seen.values())
        if unsettled and (verdict_wanted or now - self._asked_at >= self.squeue_seconds):
            self.ask_slurm(unsettled, now)
        statuses = {}
        for record in records:
            if record.handle in seen:
                status = self.status(record, *seen[record.handle], now)
                if status is not None:
                    statuses[record.handle] = status
        return statuses

    def ask_slurm(self, handles: list[str], now: float) -> None:
        """One squeue for the jobs of ``handles`` (sacct for those it no longer lists); held
        submissions have no job to ask about yet."""
        slurm = {h: s for h in handles if (s := self.held.slurm_handle(h))}
        jobs = self.squeue(mapping.job_ids(slurm.values()))
        gone = [s for s in slurm.values() if s not in jobs]
        if gone and self.accounting:
            jobs.update(self.sacct(mapping.job_ids(gone)))
        with self._lock:
            for handle in handles:
                if slurm.get(handle) in jobs:
                    self._jobs[handle] = jobs[slurm[handle]]
                else:
                    self._jobs.pop(handle, None)
            self._asked_at = now
        self.log_limits(jobs.values())

    def log_limits(self, jobs: Iterable[mapping.SlurmJob]) -> None:
        """One line when the limits jobs of this run wait at change (not one per poll)."""
        waiting = [job.reason for job in jobs if mapping.waits_at_limit(job)]
        limits = frozenset(waiting)
        with self._lock:
            changed, self._limits = limits != self._limits, limits
        if changed:
            self.logger.log(
                NOTICE_LEVEL,
                _(
                    "omnibio_slurm: jobs wait until jobs holding a Slurm limit end"
                    if limits
                    else "omnibio_slurm: no job waits at a Slurm limit now",
                    limits=" ".join(sorted(limits)) or None,
                    jobs=len(waiting),
                ),
            )

    def status(
        self,
        record: Submitted,
        request: SlurmRequest,
        exit_record: ExitRecord | None,
        running: bool,
        now: float,
    ) -> Status | None:
        held = self.held.get(record.handle)
        if held and not held.slurm:
            return held_status(held, request)
        with self._lock:
            job = self._jobs.get(record.handle)
            asked_since = self._asked_at >= max(record.submitted_at, held.sent_at if held else 0)
        files = request.files
        context = mapping.Context(
            where=f"Slurm job {self.held.slurm_handle(record.handle)} ({request.run_id})",
            cancelled_by_us=record.cancelled,
            image=record.attempt.image,
            log_tail=_read(files.host("log"), LOG_TAIL_BYTES)
            if exit_record and not exit_record.started
            else "",
            node_path=files.node("sh"),
        )
        status = mapping.status(job, exit_record, running, context)
        if status is None and job is None and not asked_since:
            return Status(Phase.QUEUED, reason="submitted")  # not asked about since sbatch
        if status is not None or job is None:
            return status
        # ended, but its exit record is not visible here yet: give the filesystem a moment
        with self._lock:
            first = self._ended_unrecorded.setdefault(record.handle, now)
        if now - first < RECORD_GRACE:
            return Status(Phase.RUNNING, reason=f"{job.state}, waiting for its exit record")
        return mapping.ended_without_record(job, context)

    # --- the end ---------------------------------------------------------------------------

    def cancel(self, record: Submitted, logger: logging.Logger) -> None:
        handle = record.handle
        if not self.held.cancel(handle):
            self.cancellations.add(self.held.slurm_handle(handle) or handle)

    def _scancel(self, handles: list[str]) -> None:
        try:
            self.cli.run(["scancel", *sorted(set(handles))], check=False)
            self.logger.info(_("scancel", jobs=len(set(handles))))
        except Exception as exn:
            self.logger.warning(_("scancel failed", error=str(exn)[:300]))

    def release(self, record: Submitted, logger: logging.Logger) -> None:
        handle = record.handle
        with self._lock:
            self._requests.pop(handle, None)
            self._ended_unrecorded.pop(handle, None)
            self._jobs.pop(handle, None)
        self.held.release(handle)

    def failure_details(self, record: Submitted, status: Status) -> dict[str, Any]:
        handle = record.handle
        with self._lock:
            request = self._requests.get(handle)
        if request is None:
            return {}
        details: dict[str, Any] = {
            "slurm_job": self.held.slurm_handle(handle) or handle,
            "slurm_script": request.files.node("sh"),
        }
        tail = _read(request.files.host("log"), LOG_TAIL_BYTES).strip()
        if tail:
            details["slurm_log_tail"] = tail[-2000:]
        return details

    def shutdown(self, logger: logging.Logger) -> None:
        """Drop what is still held, send the cancellations still gathering, and log how many
        Slurm commands this took."""
        self.held.stop()
        self.cancellations.flush()
        logger.info(_("omnibio_slurm commands", **dict(self.cli.counts)))


def held_status(held: Held, request: SlurmRequest) -> Status:
    """A submission not sent to Slurm: queued behind the submit limit, dropped, or refused."""
    if held.cancelled:
        return Status(
            Phase.DONE,
            error=f"{request.run_id} was cancelled before Slurm accepted its job",
            reason="cancelled while held",
        )
    if held.error:
        return Status(Phase.DONE, error=held.error, reason="sbatch refused it")
    return Status(Phase.QUEUED, reason="held: the Slurm submit limit is reached")


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _read(path: str, tail: int | None = None) -> str:
    try:
        with open(path, "rb") as infile:
            if tail:
                infile.seek(max(0, os.path.getsize(path) - tail))
            return infile.read().decode("utf-8", "replace")
    except OSError:
        return ""
