"""omnibio_tes: each task attempt is one GA4GH TES v1.1 task with one executor.

The server's workers mount the shared filesystem at ``mount_path`` (as Funnel or TESK workers
mount a shared volume), so the working directory, streams and results stay in place. The
read-only view for inputs is one ``file://`` DIRECTORY input the server localizes in place.
Status comes from one paged MINIMAL list of this process's tasks per poll (filtered by tag);
a task is fetched in FULL view once, when it has finished, for its exit code and logs.
"""

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import requests
import tes
from tes.utils import UnmarshalError, camel_to_snake, unmarshal
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ..attempt import TAG_RUN, Mount, TaskAttempt
from ..config import Settings
from ..sharedfs import SharedFilesystem
from .base import QUEUED, RUNNING, Engine, Phase, Poller, Status

API_PATH = "/ga4gh/tes/v1"
LAUNCHER_TAG = "omnibio.launcher"  # one value per miniwdl process: what polling and shutdown list
ACTIVE_STATES = ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED")
STARTED_STATES = ("INITIALIZING", "RUNNING", "PAUSED")
# a task the list does not show yet (eventually consistent servers) is looked up alone after this
LIST_GRACE_SECONDS = 30.0
LOG_LINES = 5  # system log lines quoted in an error
STDERR_TAIL_CHARS = 2000


@dataclass
class Tracked:
    """What the engine remembers about one submitted TES task."""

    name: str  # the attempt's RUN_ID, also the TES task name
    workflow_run: str
    submitted: float  # time.monotonic()
    time_limit: int | None
    started: float | None = None  # first seen INITIALIZING, RUNNING or PAUSED
    canceled_by_us: str | None = None  # why we canceled it: "cancel" or "time limit"
    done: bool = False


@dataclass(frozen=True)
class Credentials:
    user: str | None  # basic auth when set
    secret: str | None  # the password, or else the bearer token
    hint: str  # how to name them in an error: config keys and variable names, never the value

    @property
    def kind(self) -> str:
        return "basic" if self.user else "bearer" if self.secret else "none"


class TesProblem(Error.RuntimeError):
    """A failed exchange with the TES server, as one line naming the server."""


def describe_http_failure(url: str, action: str, exn: Exception, credentials: Credentials) -> str:
    """One line for a failed request; quotes no header, so no credential."""
    response = getattr(exn, "response", None)
    if response is None:
        # py-tes reports a refused or timed-out connection as an HTTPError without a response
        reason = (
            "connection refused or timed out"
            if isinstance(exn, requests.HTTPError)
            else type(exn).__name__
        )
        return f"omnibio_tes: no answer from the TES server at {url} while trying to {action} ({reason}); check [omnibio_tes] url and that the server is up"
    if response.status_code in (401, 403) and credentials.kind == "none":
        return f"omnibio_tes: the TES server at {url} requires credentials (HTTP {response.status_code}) to {action}; set {credentials.hint}"
    if response.status_code in (401, 403):
        return (
            f"omnibio_tes: the TES server at {url} rejected our credentials (HTTP {response.status_code}) "
            f"while trying to {action}; check {credentials.hint}"
        )
    said = ""
    if "json" in response.headers.get("Content-Type", ""):
        said = ": " + " ".join(response.text.split())[:300]
    return f"omnibio_tes: the TES server at {url} answered HTTP {response.status_code} while trying to {action}{said}"


def auth_kwargs(client: tes.HTTPClient) -> dict[str, Any]:
    """The credentials py-tes sends, for the calls it cannot make itself (filtered task lists)."""
    if client.token:
        return {"headers": {"Authorization": f"Bearer {client.token}"}}
    if client.user is not None and client.password is not None:
        return {"auth": (client.user, client.password)}
    return {}


def read_service_info(client: tes.HTTPClient, url: str, credentials: Credentials) -> dict[str, Any]:
    """GET /service-info through py-tes; fails unless it describes a TES service."""
    where = f"{url}{API_PATH}/service-info"
    try:
        info: Any = client.get_service_info().as_dict()
    except requests.exceptions.JSONDecodeError:
        raise TesProblem(
            f"omnibio_tes: {url} is not a TES server: {where} answered something that is not JSON"
        ) from None
    except requests.RequestException as exn:
        response = getattr(exn, "response", None)
        if response is not None and response.status_code == 404:
            raise TesProblem(
                f"omnibio_tes: {url} is not a TES server: GET {where} answered HTTP 404"
            ) from None
        raise TesProblem(describe_http_failure(url, f"read {where}", exn, credentials)) from None
    except (UnmarshalError, TypeError):
        # py-tes refuses keys it does not model; a TES server may add its own, so judge by type
        try:
            info = requests.get(where, timeout=client.timeout, **auth_kwargs(client)).json()
        except (requests.RequestException, ValueError):
            info = None
        info = {camel_to_snake(k): v for k, v in info.items()} if isinstance(info, dict) else {}
    service_type = info.get("type") if isinstance(info.get("type"), dict) else {}
    if str(service_type.get("artifact", "")).lower() != "tes":
        raise TesProblem(
            f"omnibio_tes: {url} is not a TES server: {where} names no TES service "
            f"(type.artifact is {service_type.get('artifact')!r}, not 'tes')"
        )
    return info


def tes_inputs(mounts: tuple[Mount, ...], fs: SharedFilesystem) -> list[tes.Input]:
    """Express the attempt's mounts in TES terms.

    A read-write mount must be the shared filesystem where the workers mount it (mount_path):
    the worker provides it, a task document cannot. A read-only mount becomes a ``file://``
    DIRECTORY input of the worker's path, placed at the mount's container path; the server
    localizes it in place and read-only, as TES localizes every input.
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
                f"omnibio_tes cannot mount {mount.host_path} read-write at {mount.container_path}: TES workers "
                f"see the shared filesystem only at [omnibio_tes] mount_path ({fs.container_root})"
            )
    return inputs


def gigabytes(size: int | None) -> float | None:
    """TES sizes are in GB; rounding up to the MB never grants less than asked."""
    if not size:
        return None
    return -(-size // 1_000_000) / 1000


def string_map(value: Any, what: str) -> dict[str, str]:
    """backend_parameters as TES wants them: string values (true/false for booleans)."""
    if not isinstance(value, dict):
        raise Error.RuntimeError(f"{what} must be an object of names to values, not {value!r}")
    out = {}
    for key, item in value.items():
        out[str(key)] = ("true" if item else "false") if isinstance(item, bool) else str(item)
    return out


class TesEngine(Engine):
    section = "omnibio_tes"
    runtime_keys = ("omnibio_backend_parameters",)

    def __init__(
        self,
        client: tes.HTTPClient,
        url: str,
        credentials: Credentials,
        settings: Settings,
        fs: SharedFilesystem,
        info: dict[str, Any],
        logger: logging.Logger,
    ) -> None:
        self.client = client
        self.url = url
        self.credentials = credentials
        self.tasks_url = f"{url}{API_PATH}/tasks"
        self.filesystem = fs
        self.logger = logger
        self.period = settings.number("poll_seconds", minimum=0.1)
        self.poll_seconds = min(1.0, self.period)
        self.page_size = settings.integer("page_size", minimum=1)
        if self.page_size >= 2048:
            raise settings.fail(
                "page_size", f"{self.page_size} is too large; TES servers accept at most 2047"
            )
        self.default_time_limit = settings.integer("default_time_limit", minimum=0) or None
        self.backend_parameters = string_map(
            settings.json_object("backend_parameters"), "[omnibio_tes] backend_parameters"
        )
        self.backend_parameters_strict = settings.flag("backend_parameters_strict")
        self.supported_parameters = {
            str(k).lower() for k in info.get("tes_resources_backend_parameters") or []
        }
        self.limits = {
            "cpu": settings.integer("max_cpu", minimum=1),
            "mem_bytes": settings.size("max_memory"),
        }
        self.launcher = uuid.uuid4().hex[:16]
        self._tracked: dict[str, Tracked] = {}
        self._lock = threading.Lock()
        self._submitted = False
        self._session = requests.Session()  # keep-alive for the list calls
        self._session_lock = threading.Lock()
        self._unlisted_warned = False
        self._warned_parameters: set[str] = set()
        problem = self.unsupported_parameters(self.backend_parameters)
        if problem and self.backend_parameters_strict:
            raise settings.fail(
                "backend_parameters", problem + " and backend_parameters_strict = true"
            )
        if problem:
            logger.warning(problem)
        self.poller: Poller | None = None

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "TesEngine":
        settings = Settings(cfg, cls.section)
        url = settings.text("url", required=True).rstrip("/")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise settings.fail("url", f"{url!r} is not an http:// or https:// URL")
        if parsed.username or parsed.password:
            raise settings.fail(
                "url", "must not contain credentials; use user + password_env, or token_env"
            )
        if url.endswith(API_PATH):
            url = url[: -len(API_PATH)]  # py-tes appends it
        credentials = cls._credentials(settings)
        fs = SharedFilesystem.from_settings(settings)
        client = tes.HTTPClient(
            url,
            timeout=settings.integer("request_timeout", minimum=1),
            user=credentials.user,
            password=credentials.secret if credentials.user else None,
            token=None if credentials.user else credentials.secret,
        )
        info = read_service_info(client, url, credentials)
        engine = cls(client, url, credentials, settings, fs, info, logger)
        try:
            list(engine.list_tasks(engine.run_filter(None), page_size=1))
        except (requests.exceptions.JSONDecodeError, UnmarshalError, TypeError):
            raise TesProblem(
                f"omnibio_tes: {url} is not a TES server: GET {engine.tasks_url} answered no TES task list"
            ) from None
        except requests.RequestException as exn:
            raise TesProblem(
                describe_http_failure(url, f"list tasks at {engine.tasks_url}", exn, credentials)
            ) from None
        storage = [
            str(s)[len("file://") :].rstrip("/")
            for s in info.get("storage") or []
            if str(s).startswith("file://")
        ]
        if storage and not any(
            fs.container_root == s or fs.container_root.startswith(s + "/") for s in storage
        ):
            logger.warning(
                _(
                    "the TES server's service-info lists no file:// storage holding [omnibio_tes] mount_path",
                    mount_path=fs.container_root,
                    storage=storage,
                )
            )
        engine.poller = Poller(
            "omnibio_tes-poller", engine._fetch, engine.period, logger, batch=1 << 30
        )
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_tes",
                url=url,
                server=info.get("name"),
                version=info.get("version"),
                auth=credentials.kind,
                mount_path=fs.container_root,
                readonly_mount_path=fs.readonly_root,
                backend_parameters=sorted(engine.supported_parameters),
            ),
        )
        return engine

    @staticmethod
    def _credentials(settings: Settings) -> Credentials:
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
        return Credentials(
            user,
            secret,
            f"[omnibio_tes] {'user and ' if user else ''}{key} (the secret in ${variable})",
        )

    def resource_limits(self) -> dict[str, int]:
        return self.limits

    # --- the attempt -----------------------------------------------------------------------

    def unsupported_parameters(self, parameters: dict[str, str]) -> str | None:
        """The problem with backend_parameters the server's service-info does not list, if any."""
        unsupported = sorted(k for k in parameters if k.lower() not in self.supported_parameters)
        if not unsupported:
            return None
        supported = ", ".join(sorted(self.supported_parameters)) or "none"
        return f"the TES server at {self.url} does not support backend_parameters {', '.join(unsupported)} (its service-info lists: {supported})"

    def task_document(self, attempt: TaskAttempt, logger: logging.Logger) -> tes.Task:
        """The TES task for an attempt: one executor, resources, tags, the read-only view as input."""
        assert self.filesystem
        resources = attempt.resources
        parameters = dict(self.backend_parameters)
        if "omnibio_backend_parameters" in attempt.runtime:
            parameters.update(
                string_map(
                    attempt.runtime["omnibio_backend_parameters"],
                    "runtime.omnibio_backend_parameters",
                )
            )
        problem = self.unsupported_parameters(parameters)
        if problem and self.backend_parameters_strict:
            raise Error.RuntimeError(
                f"runtime.omnibio_backend_parameters: {problem} and [omnibio_tes] backend_parameters_strict = true"
            )
        if problem and problem not in self._warned_parameters:
            self._warned_parameters.add(problem)
            logger.warning(problem)
        if resources.gpu:
            logger.warning(
                _(
                    "TES 1.1 has no GPU resource; request one through runtime.omnibio_backend_parameters",
                    gpu=resources.gpu,
                )
            )
        if attempt.user or attempt.privileged:
            logger.warning(
                _(
                    "TES has no container user or privileged mode; the image's defaults apply",
                    user=attempt.user,
                    privileged=attempt.privileged,
                )
            )
        return tes.Task(
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
            inputs=tes_inputs(attempt.mounts, self.filesystem) or None,
            resources=tes.Resources(
                cpu_cores=resources.cpu,
                ram_gb=gigabytes(resources.memory_limit or resources.memory_reservation),
                disk_gb=gigabytes(resources.disk),
                preemptible=resources.preemptible,
                backend_parameters=parameters or None,
                backend_parameters_strict=self.backend_parameters_strict if parameters else None,
            ),
            tags={**attempt.tags, LAUNCHER_TAG: self.launcher},
        )

    def submit(self, attempt: TaskAttempt, logger: logging.Logger) -> str:
        assert self.poller
        document = self.task_document(attempt, logger)
        self._submitted = True  # from here on, shutdown lists the server's tasks of this process
        try:
            handle = str(self.client.create_task(document))
        except requests.RequestException as exn:
            raise TesProblem(
                describe_http_failure(
                    self.url, f"create the task {attempt.run_id}", exn, self.credentials
                )
            ) from None
        with self._lock:
            self._tracked[handle] = Tracked(
                attempt.run_id, attempt.workflow_run, time.monotonic(), attempt.resources.time_limit
            )
        self.poller.watch(handle)
        logger.info(_("TES task", id=handle, image=attempt.image, url=self.url))
        return handle

    def wait(self, handle: str, timeout: float) -> Status:
        assert self.poller
        return self.poller.wait(handle, timeout)

    def cancel(self, handle: str, logger: logging.Logger) -> None:
        with self._lock:
            tracked = self._tracked.get(handle)
            if tracked and not tracked.canceled_by_us:
                tracked.canceled_by_us = "cancel"
        try:
            self.client.cancel_task(handle)
            logger.info(_("TES task canceled", id=handle))
        except Exception as exn:
            logger.warning(_("TES task cancel failed", id=handle, error=type(exn).__name__))

    def release(self, handle: str, logger: logging.Logger) -> None:
        if self.poller:
            self.poller.forget(handle)
        with self._lock:
            self._tracked.pop(handle, None)

    def shutdown(self, logger: logging.Logger) -> None:
        """Cancel every task of this process that is not finished, as the server lists them."""
        if not self._submitted:
            return
        with self._lock:
            active = {h for h, t in self._tracked.items() if not t.done}
        try:
            for task in self.list_tasks(self.run_filter(None)):
                if task.state in ACTIVE_STATES:
                    active.add(task.id)
        except Exception as exn:
            logger.warning(
                _(
                    "could not list this run's TES tasks at shutdown",
                    url=self.url,
                    error=type(exn).__name__,
                )
            )
        for handle in sorted(active):
            self.cancel(handle, logger)

    # --- status ----------------------------------------------------------------------------

    def run_filter(self, workflow_run: str | None) -> dict[str, Any]:
        """List parameters selecting this process's tasks: TES 1.1 tags, and the name prefix."""
        params: dict[str, Any] = {"tag_key": [LAUNCHER_TAG], "tag_value": [self.launcher]}
        if workflow_run:
            params = {
                "tag_key": [LAUNCHER_TAG, TAG_RUN],
                "tag_value": [self.launcher, workflow_run],
                "name_prefix": workflow_run + ".",
            }
        return params

    def list_tasks(
        self, params: dict[str, Any], page_size: int | None = None, wanted: set[str] | None = None
    ) -> Iterator[tes.Task]:
        """MINIMAL tasks page by page (py-tes lists without filters); stops once ``wanted`` are all seen.

        ``page_size`` given: that one page only.
        """
        token: str | None = None
        remaining = set(wanted) if wanted is not None else None
        while True:
            query = dict(params, view="MINIMAL", page_size=page_size or self.page_size)
            if token:
                query["page_token"] = token
            with self._session_lock:
                response = self._session.get(
                    self.tasks_url,
                    params=query,
                    timeout=self.client.timeout,
                    **auth_kwargs(self.client),
                )
            response.raise_for_status()
            page = unmarshal(response.json(), tes.models.ListTasksResponse)
            for task in page.tasks or []:
                yield task
                if remaining is not None:
                    remaining.discard(task.id)
            token = page.next_page_token
            if not token or page_size or remaining == set():
                return

    def _fetch(self, handles: list[str]) -> dict[str, Status]:
        """The Poller's call: one paged list for all outstanding tasks, FULL view for finished ones."""
        with self._lock:
            tracked = {h: self._tracked[h] for h in handles if h in self._tracked}
        if not tracked:
            return {}
        runs = {t.workflow_run for t in tracked.values()}
        states: dict[str, str] = {}
        for task in self.list_tasks(
            self.run_filter(runs.pop() if len(runs) == 1 else None), wanted=set(tracked)
        ):
            if task.id in tracked:
                states[task.id] = task.state or "UNKNOWN"
        now = time.monotonic()
        statuses = {}
        for handle, track in tracked.items():
            state = states.get(handle)
            if state is None:
                if now - track.submitted < LIST_GRACE_SECONDS:
                    continue
                state = self._lookup(handle)
            if state is None:
                status = Status(
                    Phase.DONE,
                    error=f"the TES server at {self.url} no longer knows task {handle} ({track.name})",
                )
            else:
                status = self._status(handle, track, state, now)
            track.done = status.phase is Phase.DONE
            statuses[handle] = status
        return statuses

    def _lookup(self, handle: str) -> str | None:
        """The state of a task the list does not show (e.g. a server ignoring tag filters); None if gone."""
        if not self._unlisted_warned:
            self._unlisted_warned = True
            self.logger.warning(
                _(
                    "the TES server's task list omits a task of this run; polling such tasks one by one",
                    id=handle,
                )
            )
        # not py-tes: it retries other base paths on a 5xx, and their 404 would read as "gone"
        with self._session_lock:
            response = self._session.get(
                f"{self.tasks_url}/{handle}",
                params={"view": "MINIMAL"},
                timeout=self.client.timeout,
                **auth_kwargs(self.client),
            )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return unmarshal(response.json(), tes.Task).state or "UNKNOWN"

    def _status(self, handle: str, track: Tracked, state: str, now: float) -> Status:
        if state not in ACTIVE_STATES:
            return self._finished(handle, track, state)
        if state in STARTED_STATES and track.started is None:
            track.started = now
        if (
            track.time_limit
            and track.started is not None
            and not track.canceled_by_us
            and now - track.started > track.time_limit
        ):
            self.logger.warning(
                _(
                    "TES task exceeded its time limit; canceling",
                    id=handle,
                    seconds=track.time_limit,
                )
            )
            self.client.cancel_task(
                handle
            )  # raises to the Poller (which retries) before we record it
            track.canceled_by_us = "time limit"
        return QUEUED if track.started is None else RUNNING

    def _finished(self, handle: str, track: Tracked, state: str) -> Status:
        """Status of a finished task from its FULL view: exit code, system logs, stderr tail."""
        task = self.client.get_task(handle, view="FULL")
        state = task.state or state
        log = task.logs[-1] if task.logs else None
        executor_logs = (log.logs if log else None) or []
        exit_code = next(
            (e.exit_code for e in reversed(executor_logs) if e.exit_code is not None), None
        )
        system_logs = [
            " ".join(line.split())
            for line in (log.system_logs if log else None) or []
            if line.strip()
        ]
        said = "; ".join(system_logs[-LOG_LINES:]) or "no system logs"
        where = f"TES task {handle} ({track.name})"
        if state == "COMPLETE":
            return Status(Phase.DONE, exit_code=exit_code or 0, reason=state)
        if state == "EXECUTOR_ERROR":
            if exit_code is None:
                return Status(
                    Phase.DONE,
                    error=f"{where} ended in EXECUTOR_ERROR without an exit code: {said}",
                )
            details: dict[str, Any] = {"tes_task": handle, "tes_state": state}
            stderr = executor_logs[-1].stderr or ""
            if stderr.strip():
                details["tes_stderr_tail"] = stderr[-STDERR_TAIL_CHARS:]
            if system_logs:
                details["tes_system_logs"] = system_logs[-LOG_LINES:]
            return Status(Phase.DONE, exit_code=exit_code, reason=state, details=details)
        if state == "PREEMPTED":
            return Status(Phase.DONE, interrupted=True, reason=f"{where} was PREEMPTED: {said}")
        if state in ("CANCELED", "CANCELING"):
            if track.canceled_by_us == "time limit":
                return Status(
                    Phase.DONE,
                    error=f"{where} exceeded its time limit of {track.time_limit} s and was canceled",
                )
            if track.canceled_by_us:
                return Status(Phase.DONE, error=f"{where} was canceled", reason=state)
            return Status(
                Phase.DONE, error=f"the TES server canceled {where}; this run did not: {said}"
            )
        return Status(Phase.DONE, error=f"{where} ended in {state}: {said}")
