"""omnibio_slurm: each task attempt is one Slurm job, or one element of an ``sbatch --array``.

The nodes mount the shared filesystem holding the run directory; each attempt's job script
(``<task dir>/slurm/attemptN.sh``, see translate.py) runs its container with docker, podman or
apptainer and records the exit. The tracker hands the attempts that became ready together to
``submit_many``: one sbatch per group of equal sbatch options (an array); sbatch's refusal for a
submit limit is QueueFull, which the tracker holds until jobs end. Every fetch reads the
exit records the job scripts write (empty while the job runs), which answer most rounds; the
tracker's full rounds (every squeue_seconds) add one squeue (``--states=all`` shows jobs that
ended within MinJobAge) for the jobs the records say nothing final about, and with accounting
one sacct for the jobs squeue no longer lists and for the figures of those that ended. The
tracker gathers cancellations into one ``cancel_many``: one scancel.
"""

import contextlib
import itertools
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ... import launcher
from ...attempt import TaskAttempt
from ...retrying import pause_before
from ..base import Accepted, Engine, Phase, QueueFull, Status, Submission, Submitted, sent_by_group
from ..jobscript import ExitRecord, clear, read_exit_record
from . import cluster
from . import status as mapping
from .cluster import Partition, SlurmCli, SlurmProblem
from .settings import SlurmSettings
from .translate import (
    SlurmRequest,
    batch_script,
    misfit,
    node_path,
    probe_argv,
    sbatch_argv,
    translate,
)

# seconds an ended attempt waits for sacct's figures, from its exit record: slurmdbd records a
# job's end a moment after it (on the rig, 0.3 s)
SACCT_WAIT = 5.0
PROBE_PAUSE = 5.0  # seconds between two squeue of the probe job at most
LOG_TAIL_BYTES = 4000


@dataclass(eq=False)  # one engine per process, compared by identity
class SlurmEngine(Engine[SlurmRequest]):
    section = "omnibio_slurm"
    runtime_keys = ("slurm_partition", "slurm_account", "slurm_qos")
    memory_is_limit = True  # --mem is what the node sets aside; the container may use that much
    enforces_time_limit = True  # the job script at the second, Slurm's --time in minutes behind it
    gather_max_seconds = 10.0  # a scatter's attempts reach submit over seconds on a busy host
    cancel_gather_seconds = 1.5  # one scancel for the cancellations of a Ctrl-C

    cli: SlurmCli
    settings: SlurmSettings
    partitions: dict[str, Partition]
    accounting: bool
    logger: logging.Logger
    # the probe's wait (tests pass their own)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        settings = self.settings
        self.sweep_seconds = settings.squeue_seconds
        self.gather_seconds = settings.submit_linger
        self.max_array_size = settings.max_array_size
        # in every job's --comment: a later run on this host cancels the jobs of a dead launcher
        self.launcher = launcher.identity()
        partition = self.partition(settings.partition)
        if partition is None:
            raise settings.fail(
                "partition",
                f"Slurm has no partition {settings.partition!r} "
                f"(sinfo lists: {', '.join(sorted(self.partitions)) or 'none'})"
                if settings.partition
                else "is empty and the cluster has no default partition",
            )
        self.limits = {
            "cpu": settings.max_cpu or partition.max_cpu,
            "mem_bytes": settings.max_memory or partition.max_memory,
        }
        self._wake: Callable[[str, bool], None] = lambda handle, full: None

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "SlurmEngine":
        settings = SlurmSettings.load(cfg)
        missing = [tool for tool in cluster.TOOLS if shutil.which(tool) is None]
        if missing:
            raise Error.RuntimeError(
                f"omnibio_slurm: {', '.join(missing)} not found on PATH; install the Slurm "
                "client commands (Debian: slurm-client) on this host"
            )
        cli = SlurmCli(settings.slurm_conf)
        try:
            sinfo = cli.run(["sinfo", "--noheader", f"--format={cluster.SINFO_FORMAT}"]).stdout
            config = cli.run(["scontrol", "show", "config"]).stdout
        except SlurmProblem as exn:
            raise SlurmProblem(f"{exn} (is slurmctld running and reachable?)") from None
        accounting = cluster.accounting_enabled(config)
        engine = cls(cli, settings, cluster.parse_sinfo(sinfo), accounting, logger)
        engine.check_account()
        engine.cancel_orphans()
        if settings.probe:
            engine.probe()
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_slurm",
                partition=settings.partition or "(default)",
                runtime=settings.runtime,
                accounting=accounting,
                mount_path=settings.filesystem.container_root,
                node_mount_path=settings.node_root,
                **engine.limits,
            ),
        )
        return engine

    def partition(self, name: str) -> Partition | None:
        if name:
            return self.partitions.get(name)
        return next((p for p in self.partitions.values() if p.default), None)

    def check_account(self) -> None:
        """With accounting, an unknown account or QOS is refused at start (without it, Slurm
        accepts any and the check is not possible)."""
        if not self.accounting:
            return
        for key in ("account", "qos"):
            name = getattr(self.settings, key)
            if not name:
                continue
            found = self.cli.run(
                ["sacctmgr", "--noheader", "--parsable2", "show", key, name, "format=Name"],
                check=False,
            )
            if found.returncode == 0 and name not in found.stdout.split():
                raise self.settings.fail(key, f"Slurm's accounting knows no {key} {name!r}")

    def cancel_orphans(self) -> None:
        """scancel, in one call, the jobs left by miniwdl processes of this host that died
        without cancelling them (SIGKILL, a lost session): one squeue of this user's jobs."""
        listed = self.cli.run(
            ["squeue", "--noheader", "--me", f"--Format={cluster.ORPHAN_FORMAT}"], check=False
        )
        if listed.returncode != 0:
            self.logger.warning(_("omnibio_slurm: could not list jobs", error=listed.stderr[:300]))
            return
        orphans = cluster.orphaned_jobs(listed.stdout, launcher.ended)
        if orphans:
            self.logger.log(
                NOTICE_LEVEL,
                _("cancelling Slurm jobs of a dead miniwdl process", jobs=" ".join(orphans)),
            )
            self.cli.run(["scancel", *orphans], check=False)

    def probe(self) -> None:
        """One tiny job: does the node see the shared filesystem and have the container runtime?"""
        here, root = os.getcwd(), self.settings.host_root
        directory = here if here == root or here.startswith(root + "/") else root
        token = uuid.uuid4().hex
        host_file = os.path.join(directory, f".omnibio-slurm-probe-{token[:12]}")
        try:
            with open(host_file, "w") as out:
                out.write(token)
        except OSError as exn:
            self.logger.warning(_("omnibio_slurm probe skipped", reason=str(exn)))
            return
        node_file = node_path(host_file, self.settings)
        try:
            done = self.cli.run(probe_argv(self.settings, node_file, token), check=False)
            if done.returncode != 0:
                refusal = cluster.sbatch_refusal(done.stderr)
                if not isinstance(refusal, QueueFull):
                    raise refusal
                # the user's queue is full: the tracker will hold the run's own jobs the same way
                self.logger.warning(
                    _("omnibio_slurm probe skipped; not checked", reason=str(refusal))
                )
                return
            job = self.wait_probe(done.stdout.strip().split(";")[0])
        finally:
            with contextlib.suppress(OSError):
                os.unlink(host_file)
        if job is None:
            return
        failures = {  # probe_argv's exit codes
            3: f"a Slurm node cannot read {node_file}: mount the shared filesystem on the nodes "
            f"at [omnibio_slurm] node_mount_path ({self.settings.node_root})",
            4: f"{self.settings.runtime} is not on the PATH of the Slurm nodes "
            "([omnibio_slurm] container_runtime)",
        }
        if job.exit_code in failures:
            raise Error.RuntimeError(f"omnibio_slurm: {failures[job.exit_code]}")
        if job.state != "COMPLETED":
            raise Error.RuntimeError(
                f"omnibio_slurm: the probe job {job.job_id} ended {job.state} "
                f"(exit code {job.exit_code}, reason {job.reason or 'none'})"
            )

    def wait_probe(self, job_id: str) -> mapping.SlurmJob | None:
        """The probe job once it ended; None, with a warning, at the timeout. squeue at once,
        then after 1 s, 2 s, 4 s ... (at most PROBE_PAUSE; retrying.pause_before): quick on an
        idle cluster, few calls while the probe waits in a queue. A probe waiting at a user's or
        account's limit (the user's jobs of other runs hold it) waits like any job, with one line
        naming the limit."""
        timeout = self.settings.probe_timeout
        deadline = self.clock() + timeout
        limit = ""
        for tries in itertools.count(1):
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
                self.logger.info(_("omnibio_slurm probe job waits at a Slurm limit", limit=limit))
            if self.clock() >= deadline:
                break
            self.sleep(pause_before(tries, None, PROBE_PAUSE))
        self.cli.run(["scancel", job_id], check=False)
        self.logger.warning(
            _("omnibio_slurm probe job did not run in time; not checked", seconds=timeout)
        )
        return None

    def translate(self, attempt: TaskAttempt) -> SlurmRequest:
        """runtime.slurm_partition, slurm_account and slurm_qos override the section's keys."""
        overrides: dict[str, Any] = {
            key: str(attempt.runtime[f"slurm_{key}"])
            for key in ("partition", "account", "qos")
            if attempt.runtime.get(f"slurm_{key}")
        }
        return translate(attempt, replace(self.settings, **overrides))

    def submit_many(
        self, submissions: Sequence[Submission[SlurmRequest]]
    ) -> list[Accepted | Exception]:
        """One sbatch per group of equal sbatch options, an array of at most max_array_size
        (a group of one is a plain job); a request no node can hold fails alone, and a full
        queue is each request's QueueFull."""
        results: dict[int, Accepted | Exception] = {}
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, each in enumerate(submissions):
            try:
                self.prepare(each.request)
                groups.setdefault(each.request.options, []).append(index)
            except Exception as exn:
                results[index] = exn
        size = self.max_array_size
        chunks = [
            m[start : start + size] for m in groups.values() for start in range(0, len(m), size)
        ]
        results |= sent_by_group(chunks, lambda c: self._sbatch([submissions[i] for i in c]))
        return [results[index] for index in range(len(submissions))]

    def prepare(self, request: SlurmRequest) -> None:
        """Refuse a request no node of its partition can hold (it would pend forever); write
        the element's script and environment."""
        if problem := misfit(request, self.partition(request.partition)):
            raise Error.RuntimeError(problem)
        files = request.files
        os.makedirs(files.host_dir, exist_ok=True)
        clear(files.record, files.host("usage"), files.host("wait"))
        # the environment may hold secrets: readable by the user only, never on a command line
        descriptor = os.open(files.host("env"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(request.env)
        with open(files.host("sh"), "w") as out:
            out.write(request.script)

    def _sbatch(self, chunk: Sequence[Submission[SlurmRequest]]) -> list[Accepted]:
        """One sbatch: an array's elements (grouped by its job id, which scancel takes for them
        all), or a plain job."""
        requests = [each.request for each in chunk]
        done = self.cli.run(
            sbatch_argv(requests, self.launcher), check=False, stdin=batch_script(requests)
        )
        if done.returncode != 0:
            raise cluster.sbatch_refusal(done.stderr)
        job_id = done.stdout.strip().split(";")[0]  # --parsable: "id" or "id;cluster"
        if not job_id.isdigit():
            raise SlurmProblem(f"omnibio_slurm: sbatch answered no job id: {done.stdout[:200]!r}")
        self.logger.info(_("sbatch", job=job_id, elements=len(requests)))
        group = job_id if len(chunk) > 1 else None
        handles = [f"{job_id}_{i}" for i in range(len(chunk))] if group else [job_id]
        for each, handle in zip(chunk, handles, strict=True):
            each.logger.info(_("Slurm job", id=handle, script=each.request.files.node("sh")))
        return [Accepted(handle, group=group) for handle in handles]

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

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """The exit records, then in a full round squeue and sacct (see the module's docstring)."""
        seen = {r.handle: read_exit_record(r.request.files.record) for r in records}
        jobs: dict[str, mapping.SlurmJob] | None = None
        gone: set[str] = set()  # squeue no longer lists them
        if full:
            unsettled = [r.handle for r in records if not mapping.final(seen[r.handle][1])]
            jobs = self.squeue(mapping.job_ids(unsettled))
            gone = {job for job in unsettled if job not in jobs}
        statuses = {r.handle: self.status(r, *seen[r.handle], jobs) for r in records}
        ended = {h for h, s in statuses.items() if seen[h][1] and s and s.phase is Phase.DONE}
        if self.accounting and (gone or ended):
            asked = gone | ended
            done = self.cli.run(
                ["sacct", "--noheader", "--parsable2", f"--jobs={','.join(mapping.job_ids(asked))}"]
                + [f"--format={mapping.SACCT_FORMAT}"]
            )
            accounted = mapping.parse_sacct(done.stdout)
            for record in (r for r in records if r.handle in asked):
                handle = record.handle
                found = accounted.get(handle)
                if found and (handle in gone or mapping.accounted(found)):
                    merged = {handle: mapping.merged((jobs or {}).get(handle), found)}
                    statuses[handle] = self.status(record, *seen[handle], merged)
                elif handle in ended:
                    statuses[handle] = self.without_sacct(record, statuses[handle])
        return {h: s for h, s in statuses.items() if s is not None}

    def status(
        self,
        record: Submitted,
        running: bool,
        exit_record: ExitRecord | None,
        jobs: dict[str, mapping.SlurmJob] | None,
    ) -> Status | None:
        """``jobs``: Slurm's answer this round; None when it was not asked, and the files and
        the last status answer (a record a signal ended wakes the tracker for Slurm's verdict)."""
        context = mapping.Context(
            where=f"Slurm job {record.handle} ({record.attempt.run_id})",
            cancelled_by_us=record.cancelled,
            image=record.attempt.image,
            log_tail=_log_tail(record.request) if exit_record and not exit_record.started else "",
            node_path=record.request.files.node("sh"),
        )
        if jobs is None:
            found = mapping.from_files(record.status, exit_record, running, context)
            if found is None:
                self._wake(record.handle, True)  # squeue's verdict now
            return found or record.status
        job = jobs.get(record.handle)
        found = mapping.status(job, exit_record, running, context)
        return mapping.unrecorded(job, context, time.time()) if found is None and job else found

    def without_sacct(self, record: Submitted, status: Status | None) -> Status | None:
        """An ended attempt sacct has no figures for yet waits SACCT_WAIT seconds from its exit
        record (not when this run cancelled it), then goes without them."""
        try:
            age = time.time() - os.path.getmtime(record.request.files.record)
        except OSError:
            age = SACCT_WAIT
        if age < SACCT_WAIT and not record.cancelled:
            return Status(Phase.RUNNING, reason="ended; waiting for sacct's figures")
        record.logger.info(
            _("sacct has no figures for the job; its usage goes without", job=record.handle)
        )
        return status

    def on_wake(self, wake: Callable[[str, bool], None]) -> None:
        self._wake = wake

    def cancel_many(
        self, records: Sequence[Submitted], whole_groups: frozenset[str], logger: logging.Logger
    ) -> None:
        """One scancel for the batch: a whole array by its job id (scancel(1): "If the job ID of
        a job array is specified without an array ID value ... all job array elements will be
        cancelled"), any other attempt by its handle."""
        ids = {r.handle for r in records if r.group not in whole_groups} | whole_groups
        try:
            self.cli.run(["scancel", *sorted(ids)], check=False)
            logger.info(_("scancel", jobs=len(records)))
        except Exception as exn:
            logger.warning(_("scancel failed", error=str(exn)[:300]))

    def failure_details(self, record: Submitted, status: Status) -> dict[str, Any]:
        details = {"slurm_job": record.handle, "slurm_script": record.request.files.node("sh")}
        tail = _log_tail(record.request).strip()
        return details | ({"slurm_log_tail": tail[-2000:]} if tail else {})

    def shutdown(self, logger: logging.Logger) -> None:
        logger.info(_("omnibio_slurm commands", **dict(self.cli.counts)))


def _log_tail(request: SlurmRequest) -> str:
    """The last LOG_TAIL_BYTES of the element script's own output (the runtime's errors)."""
    path = request.files.host("log")
    try:
        with open(path, "rb") as infile:
            infile.seek(max(0, os.path.getsize(path) - LOG_TAIL_BYTES))
            return infile.read().decode("utf-8", "replace")
    except OSError:
        return ""
