"""omnibio_tes: each task attempt is one GA4GH TES v1.1 task with one executor.

Staging mode (the default, as TES servers work: Funnel, TESK, poiesis, TES on Azure) moves task
files through the ``staging_uri`` object store (``staging.py``); shared-filesystem mode (opt-in,
``mount_path``) moves nothing, once a probe task proved that the workers see the run directories
(``probe.py``). This module does the I/O: ``translate.py`` and ``status.py`` are pure.

Every poll is a full one (``sweep_seconds`` None). List filters are never trusted: TESK ignores
every filter but the page and the view (tesk-api ``TesServiceImpl.listTasks``; the Python TESK's
``list_tasks.py``). A listed task is adopted or cancelled only by its own tags (BASIC view).
"""

import logging
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ...attempt import TAG_RUN_ID, TaskAttempt
from ...runtime.store import StoreError, open_store
from ..base import Accepted, Engine, Status, Submitted
from .client import Refused, TesClient, TesProblem
from .probe import probe
from .settings import TesSettings
from .staging import Stager
from .status import ACTIVE_STATES, LISTED_STATES, state_of, task_status
from .translate import (
    LAUNCHER_TAG,
    TesRequest,
    supported_backend_parameters,
    tes_request,
    unsupported_parameters,
)


@dataclass(eq=False)  # one engine per process, compared by identity
class TesEngine(Engine[TesRequest]):
    section = "omnibio_tes"
    runtime_keys = ("omnibio_backend_parameters",)

    settings: TesSettings
    client: TesClient
    info: InitVar[Mapping[str, Any]]  # service-info: the backend_parameters it supports
    stager: Stager | None = None
    logger: logging.Logger = logging.getLogger("omnibio_tes")  # start() passes the run's
    launcher: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    ignoring: str | None = None  # how the server showed it ignores filters (None: not)
    _run_keys: set[str] = field(default_factory=set)  # staged below these keys: removed at exit
    # listed tasks no record names (a create whose answer was lost after its retry looked,
    # an attempt the tracker is done with) whose own tags carry this launcher: read once
    _strays: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self, info: Mapping[str, Any]) -> None:
        self.supported_parameters = supported_backend_parameters(info)
        self.limits = {"cpu": self.settings.max_cpu, "mem_bytes": self.settings.max_memory}

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "TesEngine":
        settings = TesSettings.load(cfg)
        client = TesClient(
            settings.url, settings.credentials, settings.request_timeout, settings.max_retries
        )
        info = client.service_info()
        stager = open_stager(cfg, settings) if settings.staging_uri else None
        engine = cls(settings, client, info, stager, logger)
        try:
            listed = next(client.list_tasks(engine.launcher_tags(), page_size=1), None)
        except TesProblem as failed:
            raise TesProblem(f"{failed} (listing tasks at {client.api}/tasks)") from None
        if listed is not None:  # no task carries a launcher value made a moment ago
            engine.filters_ignored(f"listed task {listed['id']} by a new launcher tag")
        supported = engine.supported_parameters
        problem = unsupported_parameters(settings.backend_parameters, supported, settings.url)
        if problem and settings.backend_parameters_strict:
            raise settings.fail(
                "backend_parameters", problem + " and backend_parameters_strict = true"
            )
        if problem:
            logger.warning(problem)
        fs = settings.filesystem
        if fs:
            probe(client, fs, settings.probe_image, settings.probe_timeout, engine.launcher)
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
                backend_parameters=sorted(supported),
            ),
        )
        if stager:
            logger.log(
                NOTICE_LEVEL,
                "omnibio_tes stages task files through the object store: a task's stderr "
                "reaches the log only when the task has ended",
            )
        return engine

    def launcher_tags(self) -> list[tuple[str, str]]:
        return [(LAUNCHER_TAG, self.launcher)]

    def translate(self, attempt: TaskAttempt) -> TesRequest:
        store = self.stager.store if self.stager else None
        return tes_request(attempt, self.settings, self.launcher, self.supported_parameters, store)

    def submit(self, request: TesRequest, logger: logging.Logger) -> Accepted:
        document = request.task.as_dict()
        if request.staging:
            assert self.stager
            with self._lock:
                self._run_keys.add(request.staging.run_key)
            try:
                document.update(self.stager.files(request.staging, document))
            except StoreError as exn:
                raise Error.RuntimeError(f"omnibio_tes: staging inputs failed: {exn}") from None
        handle = self.create_once(document, request.task.name, logger)
        logger.info(_("TES task", id=handle, url=self.client.api))
        return Accepted(handle)

    def create_once(self, document: dict[str, Any], run_id: str, logger: logging.Logger) -> str:
        """POST the task; after a failure that may have created it (no answer, 5xx, 429), wait,
        then look for it by its own tags (and its name, the run id, where the server honours
        that filter) and POST again only when the server has none."""
        failed: list[Refused] = []

        def once() -> str:
            if failed:
                ours = self.own_tasks([(TAG_RUN_ID, run_id)], name_prefix=run_id)
                existing = next((str(task["id"]) for task in ours), None)
                if existing is not None:
                    logger.info(_("TES task was created by the failed request", id=existing))
                    return existing
            try:
                return self.client.create(document)
            except Refused as refused:
                failed.append(refused)
                raise

        def pause(seconds: float) -> None:
            error = str(failed[-1])
            logger.warning(_("TES task creation failed; retrying", error=error, seconds=seconds))
            self.client.sleep(seconds)

        return self.client.retried(once, f"create the task {run_id}", sleep=pause)

    def own_tasks(
        self, tags: Sequence[tuple[str, str]] = (), name_prefix: str | None = None
    ) -> Iterator[Mapping[str, Any]]:
        """The tasks listed (BASIC view) by this launcher's tag and ``tags`` whose own tags carry
        them all; a listed task they do not describe shows that the server ignores filters."""
        wanted, page_size = [*self.launcher_tags(), *tags], self.settings.page_size
        listed = self.client.list_tasks(
            wanted, view="BASIC", page_size=page_size, name_prefix=name_prefix
        )
        for task in listed:
            if self.owns(task, tags):
                yield task
            else:
                self.filters_ignored(f"listed task {task['id']} by tags it does not carry")

    def owns(self, task: Mapping[str, Any], tags: Sequence[tuple[str, str]] = ()) -> bool:
        """The task's own tags carry this process's launcher value (and ``tags``)."""
        own = task.get("tags")
        wanted = [*self.launcher_tags(), *tags]
        return isinstance(own, Mapping) and all(own.get(k) == v for k, v in wanted)

    def filters_ignored(self, evidence: str) -> None:
        """The server listed a task outside the filter sent: from now on, polls GET each
        outstanding task and shutdown reads every listed task's tags. Logged once."""
        with self._lock:
            if self.ignoring is not None:
                return
            self.ignoring = evidence
        message = "the TES server ignores list filters; status polls get each task alone"
        self.logger.log(NOTICE_LEVEL, _(message, url=self.client.api, evidence=evidence))

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """One MINIMAL list per state a task waits or runs in (an ended task is never listed
        again), or (filters ignored) one MINIMAL GET per task; FULL, alone, once a task has
        ended or is in no list."""
        listed = None if self.ignoring else self.listed_states({r.handle for r in records})
        statuses: dict[str, Status] = {}
        for record in records:
            if listed is None:  # None from get: not known (yet); the tracker's grace period
                task = self.client.get(record.handle, "MINIMAL", again=False)
            else:
                task = {"id": record.handle, "state": listed.get(record.handle, "UNLISTED")}
            if task is not None and state_of(task) not in ACTIVE_STATES:
                task = self.client.get(record.handle, "FULL", again=False)
            if task is not None:
                statuses[record.handle] = task_status(task, record.cancelled)
        return statuses

    def listed_states(self, handles: set[str]) -> dict[str, str] | None:
        """The states of the tasks listed by state and launcher tag; None when a list holds a
        task outside its filter. A listed task no record names is read once by its own tags."""
        states: dict[str, str] = {}
        tags, page_size = self.launcher_tags(), self.settings.page_size
        for listed in LISTED_STATES:
            for task in self.client.list_tasks(tags, listed, page_size=page_size, again=False):
                task_id, state = task["id"], state_of(task)
                if state != listed:
                    self.filters_ignored(f"listed task {task_id} {state} as {listed}")
                    return None
                if task_id not in handles and task_id not in self._strays:
                    # None: gone since listed, no evidence either way
                    read = self.client.get(task_id, "BASIC", again=False)
                    if read is not None and not self.owns(read):
                        self.filters_ignored(f"listed task {task_id} by tags it does not carry")
                        return None
                    self._strays.add(task_id)  # only the tracker's one thread fetches
                states[task_id] = state
        return states

    def collect(self, record: Submitted, status: Status, logger: logging.Logger) -> None:
        """Staging: download the outputs of a task that ran its command into the run
        directory, before the lifecycle reads the exit code, the streams and results."""
        staging, stderr = record.request.staging, record.attempt.stderr_path
        if not (self.stager and staging) or status.exit_code is None:
            return
        try:
            missing = self.stager.collect(staging.outputs)
        except (StoreError, OSError) as exn:
            raise Error.RuntimeError(
                f"omnibio_tes: could not download the outputs of TES task {record.handle}: {exn}"
            ) from None
        if missing:
            logger.warning(_("TES task outputs not uploaded by the server", missing=missing))
        tail = status.details.get("tes_stderr_tail")
        if tail and os.path.getsize(stderr) == 0:
            with open(stderr, "w", encoding="utf-8") as outfile:
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
        staging = record.request.staging
        if staging and self.stager and not self.settings.keep_staged:
            try:
                self.stager.store.delete_below(staging.attempt_key)
            except StoreError as exn:
                logger.warning(
                    _("could not remove staged outputs", key=staging.attempt_key, error=str(exn))
                )

    def shutdown(self, logger: logging.Logger) -> None:
        """Cancel every unfinished task whose own tags carry this process's launcher, tracked or
        not (one whose create answer was lost, say), and no other; remove what was staged."""
        active: list[str] = []
        try:  # every listed task where the server ignores filters, each checked by its own tags
            active = [str(t["id"]) for t in self.own_tasks() if state_of(t) in ACTIVE_STATES]
        except Exception as exn:
            message = "could not list this run's TES tasks at shutdown"
            logger.warning(_(message, url=self.client.api, error=str(exn)[:300]))
        for handle in sorted(active):
            self.cancel_task(handle, logger)
        if not self.stager or self.settings.keep_staged:
            return
        for run_key in sorted(self._run_keys):  # every attempt was cancelled: none adds one
            try:
                self.stager.store.delete_below(self.stager.store.key(run_key))
            except Exception as exn:  # at exit: whatever goes wrong, say so and go on
                logger.warning(_("could not remove staged objects", key=run_key, error=str(exn)))


def open_stager(cfg: miniwdl_config.Loader, settings: TesSettings) -> Stager:
    """The staging store, checked writable now (a bad staging_uri fails at start)."""
    try:
        store = open_store(settings.staging_uri, settings.max_retries)
    except (ValueError, RuntimeError) as exn:  # RuntimeError: its SDK is not installed
        raise settings.fail("staging_uri", str(exn)) from None
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
