"""omnibio_docker: each task attempt is one local container, started through the Docker API.

Speed comes from doing less per task: no swarm service, one create/start/wait/remove, image
lookups cached per process, and (by default) no network namespace built per container: all
tasks of a run join one sandbox namespace made once (docs/docker.md, "What a task can reach").
A container's end is pushed: the daemon's event stream wakes the tracker for it at once, and the
tracker's polling is only the safety net.
"""

import contextlib
import json
import logging
import os
import posixpath
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import docker
import requests
from docker.types import DeviceRequest
from docker.types import Mount as DockerMount
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ...attempt import TAG_RUN, TaskAttempt
from ..base import QUEUED, RUNNING, Accepted, Engine, Phase, Status, Submitted
from ..jobscript import ExitRecord, exit_record, read_exit_record
from ..jobscript import command as jobscript_command
from .settings import DockerSettings

# One value per miniwdl process, "<host>:<pid namespace>:<pid>:<random>": what shutdown removes,
# and what a later run on this host uses to remove what a killed process left behind.
LAUNCHER_LABEL = "omnibio.launcher"
SANDBOX_LABEL = "omnibio.sandbox"
NETWORK_MODES = ("sandbox", "bridge", "none", "host")
# The sandbox holds the shared network namespace open. It runs in the first task's image (every
# WDL image has /bin/sh), blocks on its open stdin and exits on TERM.
SANDBOX_COMMAND = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; while :; do read -r _ || exec sleep 2147483647; done",
]
QUEUED_STATES = ("created", "restarting")
RUNNING_STATES = ("running", "paused")
# a fetch of at most this many containers inspects each; more are answered by one listing (a
# listing of this process's containers costs about as much as a few inspects)
INSPECT_AT_MOST = 8
RECONNECT_MAX = 30.0  # seconds between two attempts to reopen a broken event stream, at most
# the directory of the task's host directory that holds its attempts' exit records, mounted at
# the same place under the task's container directory (the parent of its working directory)
RECORD_DIR = "omnibio_record"
USAGE_SOURCE = "container cgroup, read by the job script"
# a record written as root goes to the launcher's user: miniwdl chmods the whole run directory
# at the end (WDL.runtime.task: chmod_R_plus), which fails on a file another user owns
HAND_BACK = (
    f'[ "$(id -u 2>/dev/null)" = 0 ] && chown {os.geteuid()}:{os.getegid()} "$EXIT" 2>/dev/null'
)


class Admission:
    """Queues attempts until their cpu and memory fit the host: docker itself never queues."""

    def __init__(self, cpu: int, memory: int) -> None:
        self.cpu, self.memory = cpu, memory
        self.used_cpu = self.used_memory = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(
        self, cpu: int, memory: int, terminating: Callable[[], bool], logger: logging.Logger
    ) -> Iterator[None]:
        cpu, memory = min(cpu, self.cpu), min(memory, self.memory)
        waited = False
        with self._cond:
            while self.used_cpu + cpu > self.cpu or self.used_memory + memory > self.memory:
                if not waited:
                    logger.info(_("waiting for host resources", cpu=cpu, memory=memory))
                    waited = True
                if terminating():
                    break  # the lifecycle raises Terminated right after
                self._cond.wait(0.5)
            self.used_cpu += cpu
            self.used_memory += memory
        try:
            yield
        finally:
            with self._cond:
                self.used_cpu -= cpu
                self.used_memory -= memory
                self._cond.notify_all()


class DieEvents:
    """The daemon's event stream, filtered to the die events of one launcher's containers
    (Docker Engine API, GET /events: filters type, event and label): each one wakes the tracker
    for its container at once. A broken stream (dockerd restarted, a socket proxy that forbids
    /events) is reopened with backoff from the time of the last event seen, so the daemon
    replays the gap; while it is down the tracker's polling notices the ends.

    The stream is read through the client's own HTTP session, not ``APIClient.events``: that
    one turns an HTTP error (a proxy's 403) into an empty stream, hiding the daemon's reason."""

    def __init__(self, api: docker.APIClient, launcher: str, since: str | None) -> None:
        self.api = api
        label = f"{LAUNCHER_LABEL}={launcher}"
        self.filters = json.dumps({"type": ["container"], "event": ["die"], "label": [label]})
        self.since = since  # the daemon's own time, as seconds.nanoseconds
        self._closed = threading.Event()

    def follow(self, wake: Callable[[str, bool], None], logger: logging.Logger) -> None:
        threading.Thread(
            target=self._run, args=(wake, logger), name="omnibio_docker-events", daemon=True
        ).start()

    def _run(self, wake: Callable[[str, bool], None], logger: logging.Logger) -> None:
        delay = 1.0
        while not self._closed.is_set():
            try:
                with self._open() as response:
                    for line in response.iter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        nanos = int(event["timeNano"])
                        self.since = f"{nanos // 10**9}.{nanos % 10**9:09d}"
                        wake(str(event["Actor"]["ID"]), False)
                        delay = 1.0
                error = "the daemon ended it"
            except Exception as exn:
                error = str(exn)[:300] or type(exn).__name__
            if self._closed.is_set():
                return
            logger.log(
                logging.WARNING if delay == 1.0 else logging.DEBUG,
                _(
                    "docker event stream broken; container ends are noticed by polling until "
                    "it is reopened",
                    error=error,
                    retry_seconds=delay,
                ),
            )
            self._closed.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _open(self) -> requests.Response:
        response = self.api.get(
            f"{self.api.base_url}/v{self.api.api_version}/events",
            params={"since": self.since, "filters": self.filters},
            stream=True,
            timeout=None,
        )
        if not response.ok:
            reason = response.text.strip().splitlines()[0][:300] if response.text.strip() else ""
            raise RuntimeError(f"GET /events: HTTP {response.status_code} {reason}".strip())
        return response

    def close(self) -> None:
        """Stop following, at shutdown. The open stream is left to end with the process: closing
        the response would wait for the lock of the read in progress, i.e. for the next event."""
        self._closed.set()


@dataclass(frozen=True)
class DockerRequest:
    """Everything create_container needs, but the image id and network the host resolves."""

    image: str
    argv: tuple[str, ...]
    workdir: str
    env: Mapping[str, str]
    user: str | None
    labels: Mapping[str, str]
    name: str  # a random suffix is added at submission
    host_config: Mapping[str, Any]  # create_host_config keywords, network_mode aside
    network: str | None  # runtime.docker_network when allowed; None: the engine's network
    record: str  # host path of the attempt's exit record (its directory is made at submission)
    notes: tuple[str, ...] = ()  # warnings for the task log (e.g. a refused docker_network)


class DockerEngine(Engine[DockerRequest]):
    section = "omnibio_docker"
    runtime_keys = ("docker_network",)
    # miniwdl's rule: runtime.memory reserves; a limit only under memory_limit_multiplier
    memory_is_limit = False

    def __init__(
        self,
        client: docker.DockerClient,
        settings: "DockerSettings",
        limits: dict[str, int],
        since: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """``since``: the daemon's time at start, where the event stream begins; ``logger``:
        where the event stream's own lines go (start's)."""
        self.client = client
        self.api = client.api
        self.network = settings.network
        self.allow_networks = settings.allow_networks
        self.pull_policy = settings.pull
        self.poll_seconds = settings.poll_seconds
        self.default_time_limit = settings.default_time_limit
        self.limits = limits
        admission = settings.admission
        self.admission = Admission(limits["cpu"], limits["mem_bytes"]) if admission else None
        self.launcher = f"{_process_identity()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._images: dict[str, str] = {}
        self._images_lock = threading.Lock()
        self._sandbox: str | None = None
        self._sandbox_lock = threading.Lock()
        self.events = DieEvents(self.api, self.launcher, since)
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
        since = _event_time(str(info.get("SystemTime", "")))
        engine = cls(client, settings, limits, since=since, logger=logger)
        engine.reap_orphans(logger)
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_docker",
                server=info.get("ServerVersion"),
                network=network,
                admission=bool(engine.admission),
                **limits,
            ),
        )
        return engine

    def resource_limits(self) -> dict[str, int]:
        return self.limits

    def reserve(
        self, attempt: TaskAttempt, terminating: Callable[[], bool], logger: logging.Logger
    ) -> AbstractContextManager[None]:
        if not self.admission:
            return contextlib.nullcontext()
        resources = attempt.resources
        memory = resources.memory_reservation or resources.memory_limit
        return self.admission.reserve(resources.cpu, memory, terminating, logger)

    # --- translation -----------------------------------------------------------------------

    def translate(self, attempt: TaskAttempt) -> DockerRequest:
        resources = attempt.resources
        record_dir = posixpath.join(posixpath.dirname(attempt.workdir), RECORD_DIR)
        host_config: dict[str, Any] = dict(
            mounts=[
                DockerMount(m.container_path, m.host_path, type="bind", read_only=m.read_only)
                for m in attempt.mounts
            ]
            + [DockerMount(record_dir, record_host_dir(attempt.host_dir), type="bind")],
            nano_cpus=resources.cpu * 1_000_000_000,
            group_add=[str(os.getegid())],
            privileged=attempt.privileged,
        )
        if resources.memory_limit:
            host_config["mem_limit"] = resources.memory_limit
        if resources.memory_reservation:
            host_config["mem_reservation"] = min(
                resources.memory_reservation, resources.memory_limit or resources.memory_reservation
            )
        if resources.gpu:
            host_config["device_requests"] = [
                DeviceRequest(count=resources.gpu, capabilities=[["gpu"]])
            ]
        network: str | None = None
        notes: tuple[str, ...] = ()
        requested = attempt.runtime.get("docker_network")
        if requested and requested in self.allow_networks:
            network = str(requested)
        elif requested:
            notes = (
                f"runtime.docker_network {requested!r} ignored: not in [omnibio_docker] "
                "allow_networks",
            )
        safe_run_id = "".join(c if c.isalnum() or c in "_.-" else "-" for c in attempt.run_id)
        record = exit_record(record_dir, attempt.attempt)
        missing = f"{record_dir} is not mounted"  # docker refuses a missing bind source first
        return DockerRequest(
            image=attempt.image,
            argv=tuple(
                jobscript_command(attempt.argv, record, record_dir, missing, recorded=HAND_BACK)
            ),
            workdir=attempt.workdir,
            env=attempt.env,
            user=attempt.user,
            labels={**attempt.tags, LAUNCHER_LABEL: self.launcher},
            name=f"omnibio-{safe_run_id[-160:]}",
            host_config=host_config,
            network=network,
            record=record_path(attempt),
            notes=notes,
        )

    # --- images and network ----------------------------------------------------------------

    def image(self, tag: str, logger: logging.Logger) -> str:
        """The image id for a tag: local first, pulled per policy, logged with its digest once."""
        with self._images_lock:
            if tag in self._images:
                return self._images[tag]
            attrs = None
            if self.pull_policy != "always":
                with contextlib.suppress(docker.errors.ImageNotFound):
                    attrs = self.api.inspect_image(tag)
            if attrs is None:
                if self.pull_policy == "never":
                    raise Error.RuntimeError(
                        f"docker image {tag} is not on this host and [omnibio_docker] pull = never"
                    )
                logger.log(NOTICE_LEVEL, _("docker pull", image=tag))
                try:
                    self._pull(tag)
                    attrs = self.api.inspect_image(tag)
                except docker.errors.APIError as exn:
                    state = (
                        "could not be pulled ([omnibio_docker] pull = always)"
                        if self.pull_policy == "always"
                        else "is not on this host and could not be pulled"
                    )
                    raise Error.RuntimeError(
                        f"docker image {tag} {state}: {_first_line(exn)}"
                    ) from None
            digests = attrs.get("RepoDigests") or []
            logger.log(
                NOTICE_LEVEL,
                _("docker image", tag=tag, id=attrs["Id"], digest=digests[0] if digests else None),
            )
            self._images[tag] = attrs["Id"]
            return str(attrs["Id"])

    def _pull(self, tag: str) -> None:
        """docker pull. A failure met after dockerd's HTTP 200 (e.g. a layer it cannot unpack)
        comes inside the progress stream, which docker-py's images.pull ignores."""
        for event in self.api.pull(tag, stream=True, decode=True):
            if "error" in event:
                raise docker.errors.APIError(str(event["error"]))

    def network_mode(self, request: DockerRequest, image_id: str, logger: logging.Logger) -> str:
        if request.network:
            return request.network
        if self.network != "sandbox":
            return self.network
        return "container:" + self.sandbox(image_id, request.labels[TAG_RUN], logger)

    def sandbox(self, image_id: str, workflow_run: str, logger: logging.Logger) -> str:
        """The run's shared network namespace, created on first use (recreated if it died)."""
        with self._sandbox_lock:
            if self._sandbox:
                with contextlib.suppress(docker.errors.NotFound):
                    if self.api.inspect_container(self._sandbox)["State"]["Running"]:
                        return self._sandbox
            created = self.api.create_container(
                image_id,
                SANDBOX_COMMAND,
                stdin_open=True,
                labels={LAUNCHER_LABEL: self.launcher, SANDBOX_LABEL: "1", TAG_RUN: workflow_run},
                name="omnibio-sandbox-" + self.launcher.replace(":", "-"),
                host_config=self.api.create_host_config(network_mode="bridge", auto_remove=False),
            )
            self._sandbox = str(created["Id"])
            self.api.start(self._sandbox)
            logger.info(_("docker network sandbox", container=self._sandbox[:12]))
            return self._sandbox

    # --- the attempt -----------------------------------------------------------------------

    def submit(self, request: DockerRequest, logger: logging.Logger) -> Accepted:
        for note in request.notes:
            logger.warning(note)
        image_id = self.image(request.image, logger)
        network = self.network_mode(request, image_id, logger)
        prepare_record(request.record)
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
        handle = str(created["Id"])
        try:
            self.api.start(handle)
        except docker.errors.APIError as exn:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_container(handle, force=True)
            reason = _first_line(exn)
            if "device_requests" in request.host_config and (
                "gpu" in reason or "device driver" in reason
            ):
                reason += "; runtime.gpu needs a GPU and the NVIDIA container toolkit on this host"
            raise Error.RuntimeError(
                f"docker could not start the container of {request.image}: {reason}"
            ) from None
        logger.info(
            _("docker container", id=handle[:12], image=request.image, network=network[:22])
        )
        return Accepted(handle)

    def fetch(self, records: Sequence[Submitted], full: bool) -> dict[str, Status]:
        """An inspect of each container when few are asked (as after a die event), else one
        listing of this process's containers and an inspect of each that has exited. The listing
        can still say running just after the die event, while an inspect waits until dockerd
        has finished the container's exit (seen on dockerd 20.10: the listing said running and
        the inspect, 0.1 to 0.3 s later, exited, for each of five containers)."""
        listed: dict[str, str] | None = None
        if len(records) > INSPECT_AT_MOST:
            containers = self.api.containers(
                all=True, filters={"label": f"{LAUNCHER_LABEL}={self.launcher}"}
            )
            listed = {c["Id"]: c.get("State", "") for c in containers}
        statuses = {}
        for record in records:
            status = self._status(record.handle, listed)
            if status.phase is Phase.DONE and status.exit_code is not None:
                status = with_usage(status, read_exit_record(record_path(record.attempt))[1])
            statuses[record.handle] = status
        return statuses

    def _status(self, handle: str, listed: Mapping[str, str] | None) -> Status:
        state = listed.get(handle) if listed is not None else ""
        if state not in QUEUED_STATES + RUNNING_STATES and state is not None:
            try:
                inspected = self.api.inspect_container(handle)
            except docker.errors.NotFound:
                state = None
            else:
                state = str(inspected["State"].get("Status", ""))
                if state not in QUEUED_STATES + RUNNING_STATES:
                    return container_status(inspected["State"], inspected.get("Image"))
        if state is None:  # the daemon answers for its own containers at once: it is gone
            return Status(Phase.DONE, error=f"docker container {handle[:12]} was removed")
        return QUEUED if state in QUEUED_STATES else RUNNING

    def on_wake(self, wake: Callable[[str, bool], None]) -> None:
        self.events.follow(wake, self._logger)

    def cancel(self, record: Submitted, logger: logging.Logger) -> None:
        handle = record.handle
        with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
            self.api.remove_container(handle, force=True)
            logger.info(_("docker container removed", id=handle[:12]))

    def release(self, record: Submitted, logger: logging.Logger) -> None:
        handle = record.handle
        with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
            self.api.remove_container(handle, force=True)

    def shutdown(self, logger: logging.Logger) -> None:
        """Remove every container this process started (tasks and the sandbox), found by label."""
        self.events.close()
        try:
            leftovers = self.api.containers(
                all=True, quiet=True, filters={"label": f"{LAUNCHER_LABEL}={self.launcher}"}
            )
        except Exception as exn:
            logger.warning(_("could not list containers to clean up", error=str(exn)))
            return
        for container in leftovers:
            try:
                self.api.remove_container(container["Id"], force=True)
            except docker.errors.NotFound:
                pass
            except Exception as exn:
                logger.warning(
                    _("could not remove container", id=container["Id"][:12], error=str(exn))
                )
        self._sandbox = None

    def reap_orphans(self, logger: logging.Logger) -> None:
        """Remove containers left by miniwdl processes of this host that died (e.g. SIGKILL)."""
        identity = _process_identity()
        for container in self.api.containers(all=True, filters={"label": LAUNCHER_LABEL}):
            owner, _sep, rest = (
                container["Labels"][LAUNCHER_LABEL].rpartition(":")[0].rpartition(":")
            )
            if owner == identity and rest.isdigit() and not os.path.exists(f"/proc/{rest}"):
                logger.info(
                    _(
                        "removing a container of a dead miniwdl process",
                        id=container["Id"][:12],
                        pid=rest,
                    )
                )
                with contextlib.suppress(docker.errors.APIError):
                    self.api.remove_container(container["Id"], force=True)


def container_status(state: Mapping[str, Any], image_id: str | None = None) -> Status:
    """The status of an exited container from its inspected State, with the id of the image
    it ran (for the trace: a tag may point elsewhere by the time anyone reads it)."""
    return Status(
        Phase.DONE,
        exit_code=int(state["ExitCode"]),
        oom=bool(state.get("OOMKilled")),
        reason=str(state.get("Error") or state.get("Status") or ""),
        details={"image_id": image_id} if image_id else {},
    )


def record_host_dir(host_dir: str) -> str:
    """The task's directory of exit records (RECORD_DIR)."""
    return os.path.join(host_dir, RECORD_DIR)


def record_path(attempt: TaskAttempt) -> str:
    """The host path of the attempt's exit record."""
    return exit_record(record_host_dir(attempt.host_dir), attempt.attempt)


def prepare_record(path: str) -> None:
    """Make the record's directory writable by the container (its user is in the launcher's
    group: group_add) and drop a record left by an earlier submission of the same attempt."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o770)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def with_usage(status: Status, record: ExitRecord | None) -> Status:
    """An exited container's status with what its exit record adds: the measured usage, and the
    cgroup's oom_kill beside docker's OOMKilled (both count the container's cgroup). The exit
    code stays docker's: the wrapper exits with the command's."""
    if record is None:
        return status
    usage = record.usage()
    details = status.details
    if usage:
        details = {**details, "usage": {**usage, "source": USAGE_SOURCE}}
    return replace(status, oom=status.oom or record.oom, details=details)


def _event_time(system_time: str) -> str | None:
    """dockerd's SystemTime (RFC 3339 with nanoseconds, its own time zone) as the
    seconds.nanoseconds that GET /events takes for ``since`` (it does not parse RFC 3339 there,
    only the docker CLI does); None if it is not in that form: the stream then starts now."""
    match = re.fullmatch(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", system_time
    )
    if not match:
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    seconds = int(datetime.fromisoformat(match[1] + zone).timestamp())
    return f"{seconds}.{(match[2] or '').ljust(9, '0')[:9]}"


def _first_line(exn: docker.errors.APIError) -> str:
    return (exn.explanation or str(exn)).strip().splitlines()[0][:300]


def _process_identity() -> str:
    """This host and PID namespace: where a pid in a launcher label means this very process."""
    return f"{socket.gethostname()}:{os.stat('/proc/self/ns/pid').st_ino}"
