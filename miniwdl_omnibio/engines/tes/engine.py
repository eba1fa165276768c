"""omnibio_tes: each task attempt is one GA4GH TES v1.1 task with one executor.

Staging mode (the default, as TES servers work: Funnel, TESK, poiesis, TES on Azure): inputs go
to the server as URLs in the ``staging_uri`` object store, the command as ``content``; the
working directory and streams come back as outputs, downloaded into the run directory when
the task has ended (``collect``), before miniwdl reads them. Shared-filesystem mode (opt-in,
``mount_path``): the workers mount the run directories' filesystem, so nothing moves; a probe
task proves it at start.

Status costs one MINIMAL list per waiting or running state per poll, filtered by this process's
launcher tag: finished tasks are never listed again. A task that no longer shows in those lists
is fetched alone in FULL view, once, for its end state, exit code and logs.

A server's list filters are never trusted: TESK ignores every filter but the page and the view
(tesk-api ``TesServiceImpl.listTasks``; the Python TESK's ``list_tasks.py``), so a list "by our
launcher tag" can hold everyone's tasks. Before it adopts or cancels a listed task, the engine
reads the task's own tags (BASIC view). Once a list shows a task outside its filter (another
state, or a task whose own tags are not this process's), polls GET each outstanding task in
MINIMAL view instead: requests per poll stay one per task this process waits for.
"""

import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tes
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ...attempt import TAG_RUN_ID, Mount, TaskAttempt
from ...runtime.store import StoreError, open_store
from ..base import Accepted, Engine, Status, Submitted
from .client import Refused, TesClient, TesProblem, pause
from .probe import probe
from .settings import TesSettings, string_map
from .staging import CONTENT_MAX_BYTES, MINIWDL_INPUTS, StagePlan, Stager, plan
from .task import (
    check_shared_mounts,
    gigabytes,
    making_directories,
    merge_parameters,
    staged_command,
    staged_outputs,
    supported_backend_parameters,
    task_status,
)

LAUNCHER_TAG = "omnibio.launcher"  # one value per miniwdl process: what polling and shutdown list
# Listed every poll, one call each, in the order a task goes through them (a task moving on
# between two calls shows in a later one); a task of ours in none of them is fetched alone.
LISTED_STATES = ("QUEUED", "INITIALIZING", "RUNNING")
ACTIVE_STATES = ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING")


@dataclass(frozen=True)
class TesRequest:
    """A TES task for one attempt; in staging mode its inputs are staged at submission."""

    task: tes.Task
    run_id: str
    notes: tuple[str, ...] = ()  # warnings for the task log (a GPU TES cannot request, ...)
    staging: StagePlan | None = None
    run_key: str = ""  # staging: the key below which this process's objects go


class TesEngine(Engine[TesRequest]):
    section = "omnibio_tes"
    runtime_keys = ("omnibio_backend_parameters",)
    # disk_gb is a request the server may or may not honour: a value with no size is warned
    # about and left out, as on every backend (miniwdl parity: disks: "ignored" runs)

    def __init__(
        self,
        settings: TesSettings,
        client: TesClient,
        info: Mapping[str, Any],
        stager: Stager | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.stager = stager
        self.filesystem = settings.filesystem
        self.poll_seconds = settings.poll_seconds
        self.default_time_limit = settings.default_time_limit
        self.supported_parameters = frozenset(k.lower() for k in supported_backend_parameters(info))
        self.launcher = uuid.uuid4().hex[:16]
        self._warned: set[str] = set()
        self._attempt_keys: dict[str, str] = {}  # handle -> staged outputs of its attempt
        self._ours: set[str] = set()  # ids of tasks known to carry this process's launcher tag
        self.ignoring: str | None = None  # how the server showed it ignores filters (None: not)
        self.logger = logging.getLogger("omnibio_tes")  # start() passes the run's
        self._run_keys: set[str] = set()  # staged below these keys: removed at exit
        self._lock = threading.Lock()

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "TesEngine":
        settings = TesSettings.load(cfg)
        client = TesClient(
            settings.url, settings.credentials, settings.request_timeout, settings.max_retries
        )
        info = client.service_info()
        stager = open_stager(cfg, settings) if settings.staging_uri else None
        engine = cls(settings, client, info, stager)
        engine.logger = logger
        try:
            listed = next(iter(client.list_tasks(engine.launcher_tags(), page_size=1)), None)
        except TesProblem as failed:
            raise TesProblem(f"{failed} (listing tasks at {client.api}/tasks)") from None
        if listed is not None:  # no task carries a launcher value made a moment ago
            engine.filters_ignored(f"listed task {listed['id']} by a new launcher tag")
        problem = engine.unsupported_parameters(settings.backend_parameters)
        if problem and settings.backend_parameters_strict:
            raise settings.fail(
                "backend_parameters", problem + " and backend_parameters_strict = true"
            )
        if problem:
            logger.warning(problem)
        fs = settings.filesystem
        if fs:
            probe(client, fs, settings.probe_image, settings.probe_timeout, engine.probe_tags())
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_tes",
                url=client.api,
                server=info.get("name"),
                version=info.get("version"),
                auth=settings.credentials.kind,
                staging_uri=settings.staging_uri or None,
                mount_path=fs.container_root if fs else None,
                readonly_mount_path=fs.readonly_root if fs else None,
                backend_parameters=sorted(engine.supported_parameters),
            ),
        )
        if stager:
            logger.log(
                NOTICE_LEVEL,
                "omnibio_tes stages task files through the object store: a task's stderr "
                "reaches the log only when the task has ended",
            )
        return engine

    def resource_limits(self) -> dict[str, int]:
        return {"cpu": self.settings.max_cpu, "mem_bytes": self.settings.max_memory}

    def launcher_tags(self) -> list[tuple[str, str]]:
        return [(LAUNCHER_TAG, self.launcher)]

    def probe_tags(self) -> dict[str, str]:
        return {LAUNCHER_TAG: self.launcher, "omnibio.probe": "shared-filesystem"}

    def run_key(self, attempt: TaskAttempt) -> str:
        return f"{attempt.workflow_run}.{self.launcher}"

    # --- translation -----------------------------------------------------------------------

    def unsupported_parameters(self, parameters: Mapping[str, str]) -> str | None:
        """The problem with backend_parameters the server's service-info does not list."""
        unsupported = sorted(k for k in parameters if k.lower() not in self.supported_parameters)
        if not unsupported:
            return None
        supported = ", ".join(sorted(self.supported_parameters)) or "none"
        return (
            f"the TES server at {self.settings.url} does not support backend_parameters "
            f"{', '.join(unsupported)} (its service-info lists: {supported})"
        )

    def translate(self, attempt: TaskAttempt) -> TesRequest:
        settings, resources = self.settings, attempt.resources
        strict = settings.backend_parameters_strict
        parameters = dict(settings.backend_parameters)
        if "omnibio_backend_parameters" in attempt.runtime:
            parameters = merge_parameters(
                parameters,
                string_map(
                    attempt.runtime["omnibio_backend_parameters"],
                    "runtime.omnibio_backend_parameters",
                ),
            )
        notes: list[str] = []
        problem = self.unsupported_parameters(parameters)
        if problem and strict:
            raise Error.RuntimeError(
                f"runtime.omnibio_backend_parameters: {problem} and [omnibio_tes] "
                "backend_parameters_strict = true"
            )
        if problem:
            notes.append(problem)
        if resources.gpu:
            notes.append(
                "TES 1.1 has no GPU resource; request one through "
                "runtime.omnibio_backend_parameters"
            )
        if attempt.user or attempt.privileged:
            notes.append("TES has no container user or privileged mode; the image's defaults apply")
        command, outputs, staging = list(attempt.argv), None, None
        if self.stager:
            staging = plan(attempt, self.stager.store, self.run_key(attempt))
            command = staged_command(attempt, staging)
            outputs = staged_outputs(staging, self.stager.store)
        else:
            assert settings.filesystem
            check_shared_mounts(attempt.mounts, settings.filesystem)
        task = tes.Task(
            name=attempt.run_id,
            description=f"{attempt.workflow_run} {attempt.call} attempt {attempt.attempt}",
            executors=[
                tes.Executor(
                    image=attempt.image,
                    command=command,
                    workdir=attempt.workdir,
                    env=dict(attempt.env),
                )
            ],
            outputs=outputs,
            resources=tes.Resources(
                cpu_cores=resources.cpu,
                ram_gb=gigabytes(resources.memory_limit or resources.memory_reservation),
                disk_gb=gigabytes(resources.disk),
                preemptible=resources.preemptible,
                backend_parameters=parameters or None,
                backend_parameters_strict=strict if parameters else None,
            ),
            tags={**attempt.tags, LAUNCHER_TAG: self.launcher},
        )
        return TesRequest(task, attempt.run_id, tuple(notes), staging, self.run_key(attempt))

    # --- the attempt -----------------------------------------------------------------------

    def submit(self, request: TesRequest, logger: logging.Logger) -> Accepted:
        for note in request.notes:
            self._warn_once(logger, note)
        document = request.task.as_dict()
        if request.staging:
            with self._lock:
                self._run_keys.add(request.run_key)
            document.update(self.stage_inputs(request.staging, request.run_key, document))
        handle = self.create_once(document, request.run_id, logger)
        with self._lock:
            self._ours.add(handle)
        if request.staging:
            with self._lock:
                self._attempt_keys[handle] = request.staging.attempt_key
        logger.info(_("TES task", id=handle, url=self.client.api))
        return Accepted(handle)

    def stage_inputs(
        self, staging: StagePlan, run_key: str, document: Mapping[str, Any]
    ) -> dict[str, Any]:
        """inputs (and volumes for empty directories) of a staged task: each input uploaded
        once per content or passed through, the command as content."""
        assert self.stager
        inputs: list[tes.Input] = []
        volumes: list[str] = []
        mounts = list(staging.inputs) + copied_inputs(staging)
        try:
            for mount in mounts:
                url, directory = self.stager.stage(mount.host_path, run_key)
                if url is None:
                    volumes.append(mount.container_path)
                    continue
                kind = "DIRECTORY" if directory else "FILE"
                inputs.append(tes.Input(url=url, path=mount.container_path, type=kind))
            if staging.command:
                inputs.append(self.command_input(staging.command.host_path, staging, run_key))
        except StoreError as exn:
            raise Error.RuntimeError(f"omnibio_tes: staging inputs failed: {exn}") from None
        staged: dict[str, Any] = {"inputs": [i.as_dict() for i in inputs]}
        if volumes:
            staged["volumes"] = list(document.get("volumes") or []) + volumes
            # guess: a server may bind only the outermost of nested paths and leave a volume
            # inside the working directory unmade (the spec and Funnel's AddTmpVolume make it;
            # the test server did not), so the command makes them too
            first, *rest = document["executors"]
            command = making_directories(first["command"], volumes)
            staged["executors"] = [{**first, "command": command}, *rest]
        return staged

    def command_input(self, host_path: str, staging: StagePlan, run_key: str) -> tes.Input:
        assert self.stager and staging.command
        container_path = staging.command.container_path
        if os.path.getsize(host_path) <= CONTENT_MAX_BYTES:
            with open(host_path, encoding="utf-8") as infile:
                return tes.Input(content=infile.read(), path=container_path, type="FILE")
        url, _directory = self.stager.stage(host_path, run_key)
        return tes.Input(url=url, path=container_path, type="FILE")

    def create_once(self, document: dict[str, Any], run_id: str, logger: logging.Logger) -> str:
        """POST the task; after a failure that may have created it (no answer, 5xx, 429), wait,
        then look for it by its own tags and POST again only when the server has none."""
        client = self.client
        action = f"create the task {run_id}"
        for attempt in range(client.max_retries + 1):
            try:
                return client.create(document)
            except Refused as refused:
                if not refused.retryable or attempt == client.max_retries:
                    raise TesProblem(client.describe(refused, action)) from None
                seconds = pause(attempt, refused.retry_after)
                logger.warning(
                    _("TES task creation failed; retrying", error=str(refused), seconds=seconds)
                )
                client.sleep(seconds)
            existing = self.created_by_failed_request(run_id)
            if existing is not None:
                logger.info(_("TES task was created by the failed request", id=existing))
                return existing
        raise AssertionError("unreachable")

    def created_by_failed_request(self, run_id: str) -> str | None:
        """The first listed task whose own tags carry this launcher and ``run_id``. The name
        (the run id) and the tags narrow the list where the server honours them; a listed task
        they do not describe shows that it does not, and is passed over."""
        tags = [*self.launcher_tags(), (TAG_RUN_ID, run_id)]
        for task in self.client.list_tasks(
            tags, view="BASIC", page_size=self.settings.page_size, name_prefix=run_id
        ):
            if self.owns(task, run_id):
                return str(task["id"])
            self.filters_ignored(f"listed task {task['id']} by tags it does not carry")
        return None

    def owns(self, task: Mapping[str, Any], run_id: str | None = None) -> bool:
        """The task's own tags carry this process's launcher value (and the run id, if given)."""
        tags = task.get("tags")
        if not isinstance(tags, Mapping) or tags.get(LAUNCHER_TAG) != self.launcher:
            return False
        return run_id is None or tags.get(TAG_RUN_ID) == run_id

    def filters_ignored(self, evidence: str) -> None:
        """The server listed a task outside the filter sent: from now on, polls GET each
        outstanding task and shutdown reads every listed task's tags. Logged once."""
        with self._lock:
            if self.ignoring is not None:
                return
            self.ignoring = evidence
        self.logger.log(
            NOTICE_LEVEL,
            _(
                "the TES server ignores list filters; status polls get each task alone",
                url=self.client.api,
                evidence=evidence,
            ),
        )

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """One MINIMAL list per state a task waits or runs in, or (the server ignores filters)
        one MINIMAL GET per task; FULL, alone, once a task has ended or is in no list."""
        if not records:
            return {}
        wanted = {record.handle: record for record in records}
        states = None if self.ignoring else self.listed_states(wanted)
        alone = states is None
        if states is None:
            states = {}
            for handle in wanted:
                minimal = self.client.get(handle, "MINIMAL", retry=False)
                if minimal is not None:  # None: not known (yet); the grace period applies
                    states[handle] = str(minimal.get("state") or "UNKNOWN").upper()
        statuses: dict[str, Status] = {}
        for handle, record in wanted.items():
            state = states.get(handle)
            if state in ACTIVE_STATES:
                statuses[handle] = task_status({"id": handle, "state": state}, record.cancelled)
                continue
            if state is None and alone:
                continue
            task = self.client.get(handle, "FULL", retry=False)
            if task is not None:  # None: not known (yet); the tracker's grace period applies
                statuses[handle] = task_status(task, record.cancelled)
        return statuses

    def listed_states(self, wanted: Mapping[str, Submitted]) -> dict[str, str] | None:
        """The states of ``wanted`` tasks from the lists by state and launcher tag; None when a
        list holds a task outside its filter (the server ignores it). A listed id this process
        did not create is checked once by its own tags (BASIC): a task of ours whose create
        answer was lost, or another client's."""
        states: dict[str, str] = {}
        for listed in LISTED_STATES:
            for task in self.client.list_tasks(
                self.launcher_tags(), state=listed, page_size=self.settings.page_size, retry=False
            ):
                state = str(task.get("state") or "UNKNOWN").upper()
                if state != listed:
                    self.filters_ignored(f"listed task {task['id']} {state} as {listed}")
                    return None
                if not self.known_ours(task["id"]):
                    self.filters_ignored(f"listed task {task['id']} by tags it does not carry")
                    return None
                if task["id"] in wanted:
                    states[task["id"]] = state
        return states

    def known_ours(self, task_id: str) -> bool:
        """Whether the task carries this process's launcher tag: remembered, else read once."""
        with self._lock:
            if task_id in self._ours:
                return True
        task = self.client.get(task_id, "BASIC", retry=False)
        if task is None or not self.owns(task):
            return task is None  # gone since listed: no evidence either way
        with self._lock:
            self._ours.add(task_id)
        return True

    def collect(self, record: Submitted, status: Status, logger: logging.Logger) -> None:
        """Staging: download the outputs of a task that ran its command into the run
        directory, before the lifecycle reads the exit code, the streams and results."""
        handle, attempt = record.handle, record.attempt
        if not self.stager or status.exit_code is None:
            return
        outputs = plan(attempt, self.stager.store, self.run_key(attempt)).outputs
        try:
            missing = self.stager.collect(outputs)
        except (StoreError, OSError) as exn:
            raise Error.RuntimeError(
                f"omnibio_tes: could not download the outputs of TES task {handle}: {exn}"
            ) from None
        if missing:
            logger.warning(_("TES task outputs not uploaded by the server", missing=missing))
        tail = status.details.get("tes_stderr_tail")
        if attempt.stderr_path and tail and os.path.getsize(attempt.stderr_path) == 0:
            with open(attempt.stderr_path, "w", encoding="utf-8") as outfile:
                outfile.write(str(tail))  # the executor log's copy: better than nothing

    def cancel(self, record: Submitted, logger: logging.Logger) -> None:
        self.cancel_task(record.handle, logger)

    def cancel_task(self, handle: str, logger: logging.Logger) -> None:
        try:
            self.client.cancel(handle)
            logger.info(_("TES task canceled", id=handle))
        except Exception as exn:
            logger.warning(_("TES task cancel failed", id=handle, error=str(exn)[:300]))

    def release(self, record: Submitted, logger: logging.Logger) -> None:
        """Staging: the attempt's outputs are in the run directory now; remove their objects."""
        handle = record.handle
        with self._lock:
            key = self._attempt_keys.pop(handle, None)
        if key and self.stager and not self.settings.keep_staged:
            try:
                self.stager.store.delete_below(key)
            except StoreError as exn:
                logger.warning(_("could not remove staged outputs", key=key, error=str(exn)))

    def shutdown(self, logger: logging.Logger) -> None:
        """Cancel every unfinished task whose own tags carry this process's launcher, tracked
        or not (e.g. one a create created although its answer was lost), and no other task;
        remove what was staged."""
        active: set[str] = set()
        try:
            active = self.own_active_tasks()
        except Exception as exn:
            logger.warning(
                _(
                    "could not list this run's TES tasks at shutdown",
                    url=self.client.api,
                    error=str(exn)[:300],
                )
            )
        for handle in sorted(active):
            self.cancel_task(handle, logger)
        if not self.stager or self.settings.keep_staged:
            return
        with self._lock:
            run_keys = sorted(self._run_keys)
        for run_key in run_keys:
            try:
                self.stager.store.delete_below(self.stager.store.key(run_key))
            except Exception as exn:  # at exit: whatever goes wrong, say so and go on
                logger.warning(_("could not remove staged objects", key=run_key, error=str(exn)))

    def own_active_tasks(self) -> set[str]:
        """Unfinished tasks whose own tags (BASIC view) carry this launcher: one list per
        unfinished state by the launcher tag; where the server ignores filters, one pass over
        every task it lists, each checked."""
        found: set[str] = set()
        for listed in () if self.ignoring else ACTIVE_STATES:
            for task in self.client.list_tasks(
                self.launcher_tags(), state=listed, view="BASIC", page_size=self.settings.page_size
            ):
                state = str(task.get("state") or "UNKNOWN").upper()
                # Funnel reads state=UNKNOWN as no state filter (boltdb ListTasks)
                if not self.owns(task) or (listed != "UNKNOWN" and state != listed):
                    self.filters_ignored(f"listed task {task['id']} outside the filter sent")
                    break
                if state in ACTIVE_STATES:
                    found.add(str(task["id"]))
            if self.ignoring:
                break
        if not self.ignoring:
            return found
        for task in self.client.list_tasks(
            self.launcher_tags(), view="BASIC", page_size=self.settings.page_size
        ):
            state = str(task.get("state") or "UNKNOWN").upper()
            if state in ACTIVE_STATES and self.owns(task):
                found.add(str(task["id"]))
        return found

    def _warn_once(self, logger: logging.Logger, message: str) -> None:
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
        logger.warning(message)


def copied_inputs(staging: StagePlan) -> list[Mount]:
    """Inputs [file_io] copy_input_files put into the working directory on this host: the
    working directory is an output, so they go to the task as one input of their own."""
    work = next((o for o in staging.outputs if o.key.endswith("/work")), None)
    if work is None or any(MINIWDL_INPUTS in m.container_path for m in staging.inputs):
        return []
    copied = os.path.join(work.host_path, MINIWDL_INPUTS)
    if not os.path.isdir(copied):
        return []
    return [Mount(copied, f"{work.container_path}/{MINIWDL_INPUTS}", True)]


def open_stager(cfg: miniwdl_config.Loader, settings: TesSettings) -> Stager:
    """The staging store, checked writable now (a bad staging_uri fails at start)."""
    try:
        store = open_store(settings.staging_uri, settings.max_retries)
    except ValueError as exn:
        raise settings.fail("staging_uri", str(exn)) from None
    except ImportError as exn:
        raise settings.fail(
            "staging_uri", f"needs {exn.name} (pip install 'miniwdl-omnibio[tes]')"
        ) from None
    check = store.key(f".omnibio-write-check-{uuid.uuid4().hex[:12]}")
    try:
        store.put_bytes(b"", check)
        store.delete([check])
    except StoreError as exn:
        raise settings.fail("staging_uri", f"cannot write there: {exn}") from None
    cache = cfg["download_cache"]
    cache_dir = cache["dir"] if cache.get_bool("get") else None
    if cache_dir and not os.path.isabs(cache_dir):
        cache_dir = os.path.join(cfg["file_io"]["root"], cache_dir)
    return Stager(store, cache_dir)
