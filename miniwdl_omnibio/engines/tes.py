"""omnibio_tes: each task attempt is one GA4GH TES v1.1 task with one executor.

Shared-filesystem mode: the server's workers mount the run directory's filesystem at
``mount_path`` (as a Funnel worker with a host volume does), so the working directory, streams
and results stay in place; the read-only view for inputs is one ``file://`` DIRECTORY input.

Status costs one MINIMAL list per non-terminal state per poll, filtered by this process's
launcher tag: finished tasks are never listed again. A task that no longer shows in those lists
is fetched alone in FULL view, once, for its end state, exit code and logs.
"""

import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import tes
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ..attempt import TAG_RUN_ID, Mount, TaskAttempt
from ..config import Settings
from ..sharedfs import SharedFilesystem
from .base import Engine, Phase, Status, Submitted
from .tes_client import Credentials, Refused, TesClient, TesProblem, pause

LAUNCHER_TAG = "omnibio.launcher"  # one value per miniwdl process: what polling and shutdown list
# Listed every poll, one call each; a task of ours in none of them is fetched alone.
LISTED_STATES = ("QUEUED", "INITIALIZING", "RUNNING")
ACTIVE_STATES = ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING")
STARTED_STATES = ("INITIALIZING", "RUNNING", "PAUSED", "CANCELING")
LOG_LINES = 5  # system log lines quoted in an error
STDERR_TAIL_CHARS = 2000
MAX_PAGE_SIZE = 2047  # the spec: page_size must be less than 2048


@dataclass(frozen=True)
class TesSettings:
    """The [omnibio_tes] section, read and checked once at start."""

    url: str
    credentials: Credentials
    request_timeout: int
    max_retries: int
    poll_seconds: float
    page_size: int
    default_time_limit: int | None
    backend_parameters: Mapping[str, str]
    backend_parameters_strict: bool
    max_cpu: int
    max_memory: int
    filesystem: SharedFilesystem

    @classmethod
    def load(cls, cfg: miniwdl_config.Loader) -> "TesSettings":
        settings = Settings(cfg, "omnibio_tes")
        url = settings.text("url", required=True).rstrip("/")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise settings.fail("url", f"{url!r} is not an http:// or https:// URL")
        if parsed.username or parsed.password:
            raise settings.fail(
                "url", "must not contain credentials; use user + password_env, or token_env"
            )
        page_size = settings.integer("page_size", minimum=1)
        if page_size > MAX_PAGE_SIZE:
            raise settings.fail(
                "page_size", f"{page_size} is too large; TES servers accept at most 2047"
            )
        return cls(
            url=url,
            credentials=credentials(settings),
            request_timeout=settings.integer("request_timeout", minimum=1),
            max_retries=settings.integer("max_retries", minimum=0),
            poll_seconds=settings.number("poll_seconds", minimum=0.1),
            page_size=page_size,
            default_time_limit=settings.integer("default_time_limit", minimum=0) or None,
            backend_parameters=string_map(
                settings.json_object("backend_parameters"), "[omnibio_tes] backend_parameters"
            ),
            backend_parameters_strict=settings.flag("backend_parameters_strict"),
            max_cpu=settings.integer("max_cpu", minimum=1),
            max_memory=settings.size("max_memory"),
            filesystem=SharedFilesystem.from_settings(settings),
        )


def credentials(settings: Settings) -> Credentials:
    """Basic auth (user + the password in $password_env) or a bearer token in $token_env."""
    user = settings.text("user") or None
    password_env, token_env = settings.text("password_env"), settings.text("token_env")
    if user and token_env:
        raise settings.fail(
            "token_env", "is set together with user; use either basic auth or a bearer token"
        )
    if password_env and not user:
        raise settings.fail("user", "is required with password_env (basic auth)")
    if user and not password_env:
        raise settings.fail(
            "password_env",
            "must name the environment variable holding the password of [omnibio_tes] user",
        )
    if not (user or token_env):
        return Credentials(None, None, "[omnibio_tes] token_env, or user and password_env")
    key, variable = ("password_env", password_env) if user else ("token_env", token_env)
    secret = os.environ.get(variable)
    if not secret:
        raise settings.fail(key, f"names the environment variable {variable}, which is not set")
    hint = f"[omnibio_tes] {'user and ' if user else ''}{key} (the secret in ${variable})"
    return Credentials(user, secret, hint)


def string_map(value: Any, what: str) -> dict[str, str]:
    """backend_parameters as TES wants them: string values (true/false for booleans)."""
    if not isinstance(value, dict):
        raise Error.RuntimeError(f"{what} must be an object of names to values, not {value!r}")
    out: dict[str, str] = {}
    for key, item in value.items():
        out[str(key)] = ("true" if item else "false") if isinstance(item, bool) else str(item)
    return out


def merge_parameters(base: Mapping[str, str], override: Mapping[str, str]) -> dict[str, str]:
    """backend_parameters keys are case-insensitive (the spec; TES on Azure rejects two keys
    that differ only by case): a key of ``override`` replaces ``base``'s key of any case."""
    merged = dict(base)
    for key, value in override.items():
        for old in [k for k in merged if k.lower() == key.lower()]:
            del merged[old]
        merged[key] = value
    return merged


def gigabytes(size: int | None) -> float | None:
    """TES sizes are in GB; rounding up to the MB never grants less than asked."""
    if not size:
        return None
    return -(-size // 1_000_000) / 1000


def shared_inputs(mounts: Sequence[Mount], fs: SharedFilesystem) -> list[tes.Input]:
    """The attempt's mounts in TES terms, on a shared filesystem.

    A read-write mount must be the shared filesystem where the workers mount it (mount_path):
    the worker provides it, a task document cannot. A read-only mount becomes a ``file://``
    DIRECTORY input of the worker's path, placed at the mount's container path.
    """
    inputs = []
    for mount in mounts:
        worker_path = fs.to_container(mount.host_path)
        if mount.read_only:
            inputs.append(
                tes.Input(
                    url="file://" + worker_path,
                    path=mount.container_path,
                    type="DIRECTORY",
                    name="omnibio-readonly-view",
                    description="the shared filesystem, read-only, localized in place",
                )
            )
        elif mount.container_path != worker_path:
            raise Error.RuntimeError(
                f"omnibio_tes cannot mount {mount.host_path} read-write at "
                f"{mount.container_path}: TES workers see the shared filesystem only at "
                f"[omnibio_tes] mount_path ({fs.container_root})"
            )
    return inputs


@dataclass(frozen=True)
class TesRequest:
    """A TES task for one attempt, and what to tell the task log when it is submitted."""

    task: tes.Task
    run_id: str
    notes: tuple[str, ...] = ()  # warnings (a GPU TES cannot request, ...)


def task_status(task: Mapping[str, Any], cancelled: bool) -> Status:
    """The Status of a TES task as the server shows it (any view; FULL for the logs)."""
    state = str(task.get("state") or "UNKNOWN").upper()
    if state in ("UNKNOWN", "QUEUED"):
        return Status(Phase.QUEUED, reason=state)
    if state in STARTED_STATES:
        return Status(Phase.RUNNING, reason=state)
    logs = task.get("logs")
    log = logs[-1] if isinstance(logs, list) and logs and isinstance(logs[-1], dict) else {}
    executor_logs = [e for e in log.get("logs") or [] if isinstance(e, dict)]
    exit_code = next(
        (e["exit_code"] for e in reversed(executor_logs) if isinstance(e.get("exit_code"), int)),
        None,
    )
    system_logs = [
        " ".join(str(line).split()) for line in log.get("system_logs") or [] if str(line).strip()
    ]
    said = "; ".join(system_logs[-LOG_LINES:]) or "no system logs"
    where = f"TES task {task.get('id')} ({task.get('name') or 'unnamed'})"
    if state == "COMPLETE":
        return Status(Phase.DONE, exit_code=exit_code or 0, reason=state)
    if state == "EXECUTOR_ERROR" and exit_code is not None:
        details: dict[str, Any] = {"tes_task": task.get("id"), "tes_state": state}
        stderr = str(executor_logs[-1].get("stderr") or "")
        if stderr.strip():
            details["tes_stderr_tail"] = stderr[-STDERR_TAIL_CHARS:]
        if system_logs:
            details["tes_system_logs"] = system_logs[-LOG_LINES:]
        return Status(Phase.DONE, exit_code=exit_code, reason=state, details=details)
    if state == "EXECUTOR_ERROR":
        return Status(
            Phase.DONE, error=f"{where} ended in EXECUTOR_ERROR without an exit code: {said}"
        )
    if state == "PREEMPTED":
        return Status(Phase.DONE, interrupted=True, reason=f"{where} was PREEMPTED: {said}")
    if state == "CANCELED" and cancelled:
        return Status(Phase.DONE, error=f"{where} was canceled", reason=state)
    if state == "CANCELED":
        return Status(
            Phase.DONE, error=f"the TES server canceled {where}; this run did not: {said}"
        )
    return Status(Phase.DONE, error=f"{where} ended in {state}: {said}", reason=state)


class TesEngine(Engine[TesRequest]):
    section = "omnibio_tes"
    runtime_keys = ("omnibio_backend_parameters",)
    # disk_gb is a request the server may or may not honour: a value with no size is warned
    # about and left out, as on every backend (miniwdl parity: disks: "ignored" runs)
    fetch_batch = None  # one set of lists answers for every outstanding task

    def __init__(self, settings: TesSettings, client: TesClient, info: Mapping[str, Any]) -> None:
        self.settings = settings
        self.client = client
        self.filesystem = settings.filesystem
        self.poll_seconds = settings.poll_seconds
        self.default_time_limit = settings.default_time_limit
        self.supported_parameters = frozenset(
            str(k).lower() for k in supported_backend_parameters(info)
        )
        self.launcher = uuid.uuid4().hex[:16]
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "TesEngine":
        settings = TesSettings.load(cfg)
        client = TesClient(
            settings.url, settings.credentials, settings.request_timeout, settings.max_retries
        )
        info = client.service_info()
        engine = cls(settings, client, info)
        try:
            next(iter(client.list_tasks(engine.launcher_tags(), page_size=1)), None)
        except TesProblem as failed:
            raise TesProblem(f"{failed} (listing tasks at {client.api}/tasks)") from None
        problem = engine.unsupported_parameters(settings.backend_parameters)
        if problem and settings.backend_parameters_strict:
            raise Settings(cfg, cls.section).fail(
                "backend_parameters", problem + " and backend_parameters_strict = true"
            )
        if problem:
            logger.warning(problem)
        fs = settings.filesystem
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_tes",
                url=client.api,
                server=info.get("name"),
                version=info.get("version"),
                auth=settings.credentials.kind,
                mount_path=fs.container_root,
                readonly_mount_path=fs.readonly_root,
                backend_parameters=sorted(engine.supported_parameters),
            ),
        )
        return engine

    def resource_limits(self) -> dict[str, int]:
        return {"cpu": self.settings.max_cpu, "mem_bytes": self.settings.max_memory}

    def launcher_tags(self) -> list[tuple[str, str]]:
        return [(LAUNCHER_TAG, self.launcher)]

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
        settings = self.settings
        resources = attempt.resources
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
        if problem and settings.backend_parameters_strict:
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
        task = tes.Task(
            name=attempt.run_id,
            description=f"{attempt.workflow_run} {attempt.call} attempt {attempt.attempt}",
            executors=[
                tes.Executor(
                    image=attempt.image,
                    command=list(attempt.argv),
                    workdir=attempt.workdir,
                    env=dict(attempt.env),
                )
            ],
            inputs=shared_inputs(attempt.mounts, settings.filesystem) or None,
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
        return TesRequest(task, attempt.run_id, tuple(notes))

    # --- the attempt -----------------------------------------------------------------------

    def submit(self, request: TesRequest, logger: logging.Logger) -> str:
        for note in request.notes:
            self._warn_once(logger, note)
        handle = self.create_once(request.task.as_dict(), request.run_id, logger)
        logger.info(_("TES task", id=handle, url=self.client.api))
        return handle

    def create_once(self, document: dict[str, Any], run_id: str, logger: logging.Logger) -> str:
        """POST the task; after a failure that may have created it (no answer, 5xx, 429), wait,
        then look for it by its run id tag and POST again only when the server lists none."""
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
                client._sleep(seconds)
            tags = [*self.launcher_tags(), (TAG_RUN_ID, run_id)]
            existing = next(iter(client.list_tasks(tags)), None)
            if existing is not None:
                logger.info(_("TES task was created by the failed request", id=existing["id"]))
                return str(existing["id"])
        raise AssertionError("unreachable")

    def fetch(self, records: Sequence[Submitted]) -> dict[str, Status]:
        """One MINIMAL list per state a task waits or runs in; FULL for the rest, alone."""
        if not records:
            return {}
        wanted = {record.handle: record for record in records}
        states: dict[str, str | None] = {}
        for listed in LISTED_STATES:
            for task in self.client.list_tasks(
                self.launcher_tags(), state=listed, page_size=self.settings.page_size, retry=False
            ):
                if task["id"] in wanted:
                    states[task["id"]] = str(task.get("state") or "UNKNOWN").upper()
        statuses: dict[str, Status] = {}
        for handle, record in wanted.items():
            state = states.get(handle)
            if state in LISTED_STATES:
                statuses[handle] = task_status({"id": handle, "state": state}, record.cancelled)
                continue
            full = self.client.get(handle, "FULL")
            if full is not None:  # None: not known (yet); the tracker's grace period applies
                statuses[handle] = task_status(full, record.cancelled)
        return statuses

    def cancel(self, handle: str, logger: logging.Logger) -> None:
        try:
            self.client.cancel(handle)
            logger.info(_("TES task canceled", id=handle))
        except Exception as exn:
            logger.warning(_("TES task cancel failed", id=handle, error=str(exn)[:300]))

    def shutdown(self, logger: logging.Logger) -> None:
        """Cancel every task of this process the server lists as not finished, tracked or not
        (e.g. one a create created although its answer was lost)."""
        active: set[str] = set()
        try:
            for state in ACTIVE_STATES:
                for task in self.client.list_tasks(self.launcher_tags(), state=state):
                    if str(task.get("state") or "UNKNOWN").upper() in ACTIVE_STATES:
                        active.add(task["id"])
        except Exception as exn:
            logger.warning(
                _(
                    "could not list this run's TES tasks at shutdown",
                    url=self.client.api,
                    error=str(exn)[:300],
                )
            )
        for handle in sorted(active):
            self.cancel(handle, logger)

    def _warn_once(self, logger: logging.Logger, message: str) -> None:
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
        logger.warning(message)


def supported_backend_parameters(info: Mapping[str, Any]) -> list[str]:
    """service-info's tesResources_backend_parameters, whatever the case of its name."""
    for key, value in info.items():
        if key.replace("_", "").lower() == "tesresourcesbackendparameters":
            return [str(v) for v in value] if isinstance(value, list) else []
    return []
