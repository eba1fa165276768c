"""omnibio_docker: each task attempt is one local container, started through the Docker API.

Speed comes from doing less per task: no swarm service; per task one create, start and remove
(in the background), and nothing else: the image is resolved once per process, and a
container's end is pushed by the daemon's die event, which wakes the tracker, and read from the
attempt's exit record (an inspect only where the job script wrote none). By default no network
namespace is built per container either: all tasks of a run join one sandbox namespace made
once (docs/docker.md, "What a task can reach"). The tracker's polling, one listing a round, is
only the safety net.
"""

import contextlib
import functools
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import docker
import requests
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ... import launcher
from ...attempt import TAG_RUN, TaskAttempt
from ...retrying import pause_before, retry
from ..base import Accepted, Engine, Status, Submitted
from ..jobscript import clear, read_exit_record
from .settings import DockerSettings
from .status import NOT_ENDED, inspected, recorded, removed
from .translate import LAUNCHER_LABEL, DockerRequest, docker_request

SANDBOX_LABEL = "omnibio.sandbox"
NETWORK_MODES = ("sandbox", "bridge", "none", "host")
# The sandbox holds the shared network namespace open. It runs in the first task's image (every
# WDL image has /bin/sh), blocks on its open stdin and exits on TERM.
SANDBOX_COMMAND = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; while :; do read -r _ || exec sleep 2147483647; done",
]
RECONNECT_MAX = 30.0  # seconds between two attempts to reopen a broken event stream, at most
# dockerd fails a pull once the manifest's HEAD and GET both answered 503 (seen with dockerd
# 20.10), so on a 5xx or a timeout the engine pulls again, after 1 s, then 2 s. Not retried: an
# unknown image, a refusal (401, 403, 429 toomanyrequests) or no registry listening at all.
PULL_TRIES = 3
TRANSIENT_PULL = re.compile(r"\b50[0-4]\b|timeout|timed out|connection reset|unexpected EOF", re.I)


class Admission:
    """Queues attempts until their cpu and memory fit the host: docker itself never queues."""

    def __init__(self, cpu: int, memory: int) -> None:
        self.total = (cpu, memory)
        self.used = (0, 0)
        self._cond = threading.Condition()

    def _fits(self, want: tuple[int, int]) -> bool:
        (cpu, memory), (used_cpu, used_memory) = self.total, self.used
        return used_cpu + want[0] <= cpu and used_memory + want[1] <= memory

    @contextlib.contextmanager
    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> Iterator[None]:
        resources = attempt.resources
        memory = resources.memory_reservation or resources.memory_limit
        want = (min(resources.cpu, self.total[0]), min(memory, self.total[1]))
        with self._cond:
            if not self._fits(want):
                logger.info(_("waiting for host resources", cpu=want[0], memory=want[1]))
            while not self._fits(want) and not terminating():  # else Terminated comes next
                self._cond.wait(0.5)
            self.used = (self.used[0] + want[0], self.used[1] + want[1])
        try:
            yield
        finally:
            with self._cond:
                self.used = (self.used[0] - want[0], self.used[1] - want[1])
                self._cond.notify_all()


class DieEvents:
    """The daemon's event stream, filtered to the die events of one launcher's containers
    (Docker Engine API, GET /events: filters type, event and label): each one wakes the tracker
    for its container at once. A broken stream (dockerd restarted, a socket proxy that forbids
    /events) is reopened with backoff from the time of the last event seen, so the daemon
    replays the gap; while it is down the tracker's polling notices the ends.

    The stream is read through the client's own HTTP session, not ``APIClient.events``: that
    one turns an HTTP error (a proxy's 403) into an empty stream, hiding the daemon's reason.
    At shutdown ``closed`` is set and the open stream left to end with the process: closing the
    response would wait for the lock of the read in progress, i.e. for the next event."""

    def __init__(self, api: docker.APIClient, label: str, since: str | None) -> None:
        self.api = api
        self.filters = json.dumps({"type": ["container"], "event": ["die"], "label": [label]})
        self.since = since  # the daemon's own time, as seconds.nanoseconds
        self.closed = threading.Event()

    def follow(self, wake: Callable[[str, bool], None], logger: logging.Logger) -> None:
        failures = 0
        url = f"{self.api.base_url}/v{self.api.api_version}/events"
        while not self.closed.is_set():
            try:
                params = {"since": self.since, "filters": self.filters}
                with self.api.get(url, params=params, stream=True, timeout=None) as response:
                    if not response.ok:
                        reason = (response.text.strip().splitlines() or [""])[0][:300]
                        raise RuntimeError(
                            f"GET /events: HTTP {response.status_code} {reason}".strip()
                        )
                    for line in filter(None, response.iter_lines()):
                        event = json.loads(line)
                        nanos = int(event["timeNano"])
                        self.since = f"{nanos // 10**9}.{nanos % 10**9:09d}"
                        wake(str(event["Actor"]["ID"]), False)  # the cheap look: the record
                        failures = 0
                error = "the daemon ended it"
            except Exception as exn:
                error = str(exn)[:300] or type(exn).__name__
            if self.closed.is_set():
                return
            failures += 1
            delay = pause_before(failures, None, RECONNECT_MAX)
            logger.log(
                logging.WARNING if failures == 1 else logging.DEBUG,
                _(
                    "docker event stream broken; container ends are noticed by polling until "
                    "it is reopened",
                    error=error,
                    retry_seconds=delay,
                ),
            )
            self.closed.wait(delay)


class DockerEngine(Engine[DockerRequest]):
    """An attempt's memo is the id of the image its container runs. A die event wakes the
    tracker for the cheap look (``full`` False), so only containers that ended are fetched that
    way; ``sweep_seconds`` stays None: every polling round is full."""

    section = "omnibio_docker"
    settings: DockerSettings
    runtime_keys = ("docker_network",)
    # miniwdl's rule: runtime.memory reserves; a limit only under memory_limit_multiplier
    memory_is_limit = False

    def __init__(
        self,
        client: docker.DockerClient,
        settings: DockerSettings,
        limits: dict[str, int],
        since: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """``since``: the daemon's time at start, where the event stream begins; ``logger``:
        where the event stream's own lines go (start's)."""
        self.api = client.api
        self.settings = settings
        self.limits = limits
        self.admission = Admission(limits["cpu"], limits["mem_bytes"])
        # this process (launcher.py), and this engine of it: tests start several in one process
        self.launcher = f"{launcher.identity()}/{uuid.uuid4().hex[:8]}"
        self.mine = {"label": f"{LAUNCHER_LABEL}={self.launcher}"}  # this process's containers
        self._images: dict[str, str] = {}  # tag -> id
        # a lock per tag: a tag is pulled once per process, and no pull holds back a task on
        # another image (setdefault is atomic: no lock for the dict itself)
        self._image_locks: dict[str, threading.Lock] = {}
        self._sandbox: tuple[str, Future[None]] | None = None  # its id, and its start
        self._sandbox_lock = threading.Lock()
        self.events = DieEvents(self.api, self.mine["label"], since)
        # daemon calls no task waits for: removals, the sandbox's start, at shutdown its removal
        self._background = ThreadPoolExecutor(2, "omnibio_docker-background")
        self._logger = logger or logging.getLogger(__name__)

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "DockerEngine":
        settings = DockerSettings.load(cfg)
        try:
            client = docker.from_env(version="auto", timeout=600)
            info = client.info()
        except Exception as exn:
            where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise Error.RuntimeError(
                f"omnibio_docker cannot reach the Docker daemon at {where} "
                f"({type(exn).__name__}); start dockerd or set DOCKER_HOST"
            ) from None
        network = settings.network
        if network not in NETWORK_MODES:
            try:
                client.networks.get(network)
            except docker.errors.NotFound:
                raise settings.fail(
                    "network",
                    f"{network!r} is neither one of {', '.join(NETWORK_MODES)} nor an existing "
                    "docker network",
                ) from None
        limits = {
            "cpu": settings.max_cpu or int(info["NCPU"]),
            "mem_bytes": settings.max_memory or int(info["MemTotal"]),
        }
        engine = cls(client, settings, limits, _event_time(str(info.get("SystemTime", ""))), logger)
        engine.reap_orphans(logger)
        server, admission = info.get("ServerVersion"), settings.admission
        logger.log(
            NOTICE_LEVEL,
            _("omnibio_docker", server=server, network=network, admission=admission, **limits),
        )
        return engine

    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> AbstractContextManager[None]:
        if not self.settings.admission:
            return contextlib.nullcontext()
        return self.admission.reserve(attempt, terminating, logger)

    def translate(self, attempt: TaskAttempt) -> DockerRequest:
        return docker_request(attempt, self.launcher, self.settings.allow_networks)

    # --- images and network ----------------------------------------------------------------

    def image(self, tag: str, logger: logging.Logger) -> str:
        """The image id for a tag: local first, pulled per policy, logged with its digest once."""
        with self._image_locks.setdefault(tag, threading.Lock()):
            if tag not in self._images:
                attrs = None
                if self.settings.pull != "always":
                    with contextlib.suppress(docker.errors.ImageNotFound):
                        attrs = self.api.inspect_image(tag)
                attrs = attrs or self._pull(tag, logger)
                digest = (attrs.get("RepoDigests") or [None])[0]
                logger.log(NOTICE_LEVEL, _("docker image", tag=tag, id=attrs["Id"], digest=digest))
                self._images[tag] = str(attrs["Id"])
            return self._images[tag]

    def _pull(self, tag: str, logger: logging.Logger) -> dict[str, Any]:
        """docker pull, then the image's attributes. A failure met after dockerd's HTTP 200 (e.g.
        a layer it cannot unpack) comes inside the progress stream, which images.pull ignores."""
        if self.settings.pull == "never":
            raise Error.RuntimeError(
                f"docker image {tag} is not on this host and [omnibio_docker] pull = never"
            )
        logger.log(NOTICE_LEVEL, _("docker pull", image=tag))

        def pull() -> dict[str, Any]:
            for event in self.api.pull(tag, stream=True, decode=True):
                if "error" in event:
                    raise docker.errors.APIError(str(event["error"]))
            return dict(self.api.inspect_image(tag))

        def transient(exn: Exception) -> bool:
            reason = _first_line(exn) if isinstance(exn, docker.errors.APIError) else ""
            if TRANSIENT_PULL.search(reason):
                logger.warning(_("docker pull failed", image=tag, error=reason))
                return True
            return False

        try:
            return retry(pull, transient, PULL_TRIES)
        except docker.errors.APIError as exn:
            state = "is not on this host and could not be pulled"
            if self.settings.pull == "always":
                state = "could not be pulled ([omnibio_docker] pull = always)"
            raise Error.RuntimeError(f"docker image {tag} {state}: {_first_line(exn)}") from None

    def sandbox(
        self, image_id: str, workflow_run: str, logger: logging.Logger
    ) -> tuple[str, Future[None]]:
        """The run's shared network namespace, made on first use and again once a task could not
        join it because it died (``_sandbox_died``): no look at it per task. Its id, and its start,
        under way while the first tasks' containers are created (docker lets a container join a
        namespace that does not run yet; only its start needs it running)."""
        with self._sandbox_lock:
            if self._sandbox:
                return self._sandbox
            name = "omnibio-sandbox-" + re.sub(r"[:/]", "-", self.launcher)
            self._remove(name)  # the one that died, if any
            created = self.api.create_container(
                image_id,
                SANDBOX_COMMAND,
                stdin_open=True,
                labels={LAUNCHER_LABEL: self.launcher, SANDBOX_LABEL: "1", TAG_RUN: workflow_run},
                name=name,
                host_config=self.api.create_host_config(network_mode="bridge"),
            )
            sandbox = str(created["Id"])
            self._sandbox = (sandbox, self._background.submit(self.api.start, sandbox))
            logger.info(_("docker network sandbox", container=sandbox[:12]))
            return self._sandbox

    def _sandbox_died(self, exn: Exception) -> float | bool:
        """The verdict on a container that could not be created or started: again at once if
        the sandbox it was to join no longer runs (a new one is made), else give up."""
        sandbox = self._sandbox
        if sandbox is None or not isinstance(exn, docker.errors.APIError):
            return False
        with contextlib.suppress(docker.errors.NotFound):
            if self.api.inspect_container(sandbox[0])["State"]["Running"]:
                return False
        with self._sandbox_lock:
            if self._sandbox == sandbox:  # not one another thread has made since
                self._sandbox = None
        return 0.0

    # --- the attempt -----------------------------------------------------------------------

    def submit(self, request: DockerRequest, logger: logging.Logger) -> Accepted:
        self.image(request.image, logger)  # pulled, or refused, before anything is made
        record_dir = os.path.dirname(request.record)
        os.makedirs(record_dir, exist_ok=True)
        os.chmod(record_dir, 0o770)  # writable by the container's user, in our group (group_add)
        clear(request.record)

        def again(exn: Exception) -> float | bool:
            """Again at once if the image left the host since it was resolved (e.g. docker image
            prune -a between two tasks): resolved anew, pulled per policy; else _sandbox_died."""
            if not isinstance(exn, docker.errors.ImageNotFound):
                return self._sandbox_died(exn)
            logger.warning(_("docker image gone from this host", tag=request.image))
            self._images.pop(request.image, None)
            return 0.0

        try:
            handle, network, image_id = retry(lambda: self._launch(request, logger), again, 2)
        except docker.errors.APIError as exn:
            reason = _first_line(exn)
            if "device_requests" in request.host_config and re.search("gpu|device driver", reason):
                reason += "; runtime.gpu needs a GPU and the NVIDIA container toolkit on this host"
            raise Error.RuntimeError(
                f"docker could not start the container of {request.image}: {reason}"
            ) from None
        logger.info(
            _("docker container", id=handle[:12], image=request.image, network=network[:22])
        )
        return Accepted(handle, image_id)

    def _launch(self, request: DockerRequest, logger: logging.Logger) -> tuple[str, str, str]:
        """Create and start the container (removed again if it does not start): its id, its
        network mode and the id of its image."""
        image_id = self.image(request.image, logger)
        network = request.network or self.settings.network
        sandbox_started: Future[None] | None = None
        if not request.network and network == "sandbox":
            sandbox, sandbox_started = self.sandbox(image_id, request.labels[TAG_RUN], logger)
            network = "container:" + sandbox
        created = self.api.create_container(
            image_id,
            list(request.argv),
            working_dir=request.workdir,
            environment=dict(request.env),
            user=request.user,
            labels=dict(request.labels),
            name=f"{request.name}-{uuid.uuid4().hex[:6]}",
            host_config=self.api.create_host_config(network_mode=network, **request.host_config),
        )
        try:
            if sandbox_started:
                sandbox_started.result()  # its start's error, if any, is this one's
            self.api.start(created["Id"])
        except docker.errors.APIError:
            self._remove(created["Id"])
            raise
        return str(created["Id"]), network, image_id

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """Not full (containers of die events): how each ended. Full: one listing of this
        process's containers, then how each ended that it does not list as queued or running.
        Just after the die event the listing can still say running (dockerd 20.10: for 0.1 to
        0.3 s), so it only tells which containers are still out."""
        listing = self.api.containers(all=True, filters=self.mine) if full else []
        states = {c["Id"]: str(c.get("State", "")) for c in listing}
        statuses = {}
        for record in records:
            state = states.get(record.handle) if full else "exited"
            status = removed(record.handle) if state is None else NOT_ENDED.get(state)
            statuses[record.handle] = status or self._ended(record)
        return statuses

    def _ended(self, record: Submitted) -> Status:
        """An ended container by its exit record; by docker's inspect where the job script did
        not write one (it was killed, or never ran)."""
        _started, exit_record = read_exit_record(record.request.record)
        if exit_record is not None:
            return recorded(exit_record, record.memo)
        try:
            return inspected(self.api.inspect_container(record.handle)["State"], record.memo)
        except docker.errors.NotFound:
            return removed(record.handle)

    def on_wake(self, wake: Callable[[str, bool], None]) -> None:
        follow = functools.partial(self.events.follow, wake, self._logger)
        threading.Thread(target=follow, name="omnibio_docker-events", daemon=True).start()

    def cancel(self, record: Submitted, logger: logging.Logger) -> None:
        if self._remove(record.handle):
            logger.info(_("docker container removed", id=record.handle[:12]))

    def release(self, record: Submitted, logger: logging.Logger) -> None:
        """The exited container is removed in the background: the task goes on meanwhile (its
        outputs, the next task's create and start), and shutdown waits for what is left."""
        try:
            self._background.submit(self._remove, record.handle)
        except RuntimeError:  # the interpreter is exiting: no new thread, so at once
            self._remove(record.handle)

    def _remove(self, container: str, logger: logging.Logger | None = None) -> bool:
        """Remove a container, stopping it if it runs. False if the daemon did not; why is a
        warning to ``logger`` unless the container was gone already."""
        try:
            self.api.remove_container(container, force=True)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exn:
            if logger and not isinstance(exn, docker.errors.NotFound):
                logger.warning(_("could not remove container", id=container[:12], error=str(exn)))
            return False
        return True

    def shutdown(self, logger: logging.Logger) -> None:
        """Remove every container this process started (tasks and the sandbox), found by label;
        the sandbox, the slowest (its network), beside the last tasks' removals still under way."""
        self.events.closed.set()
        sandbox = self._sandbox  # once: a task's verdict may set it to None meanwhile
        if sandbox:
            with contextlib.suppress(RuntimeError):  # shut down already: the listing finds it
                self._background.submit(self._remove, sandbox[0], logger)
        self._background.shutdown(wait=True)
        try:
            leftovers = self.api.containers(all=True, quiet=True, filters=self.mine)
        except Exception as exn:
            logger.warning(_("could not list containers to clean up", error=str(exn)))
            return
        for container in leftovers:
            self._remove(container["Id"], logger)

    def reap_orphans(self, logger: logging.Logger) -> None:
        """Remove containers left by miniwdl processes of this host that died (e.g. SIGKILL)."""
        for container in self.api.containers(all=True, filters={"label": LAUNCHER_LABEL}):
            owner = container["Labels"][LAUNCHER_LABEL].partition("/")[0]
            if launcher.ended(owner):
                logger.info(
                    _(
                        "removing a container of a dead miniwdl process",
                        id=container["Id"][:12],
                        launcher=owner,
                    )
                )
                self._remove(container["Id"])


def _event_time(system_time: str) -> str | None:
    """dockerd's SystemTime (RFC 3339 with nanoseconds, its own time zone) as the
    seconds.nanoseconds that GET /events takes for ``since`` (it does not parse RFC 3339 there,
    only the docker CLI does); None if it is not in that form: the stream then starts now."""
    match = re.fullmatch(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", system_time
    )
    if not match:
        return None
    seconds = int(datetime.fromisoformat(match[1] + match[3].replace("Z", "+00:00")).timestamp())
    return f"{seconds}.{(match[2] or '').ljust(9, '0')[:9]}"


def _first_line(exn: docker.errors.APIError) -> str:
    return (exn.explanation or str(exn)).strip().splitlines()[0][:300]
