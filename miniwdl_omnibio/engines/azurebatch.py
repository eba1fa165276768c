"""omnibio_azurebatch: each task attempt is one Azure Batch container task.

The pool's nodes mount the shared filesystem (NFS, Azure Files, blobfuse) that holds the run
directory, so nothing is copied: each task's container binds it read-write at ``mount_path`` and
read-only at ``readonly_mount_path`` (docker ``-v`` in containerRunOptions). One Batch job holds
all tasks of a workflow run; it is created on the first submission and terminated at the end.
Status comes from one filtered, paged ``list_tasks`` per poll for the whole run, never one GET
per task; concurrent submissions share one ``addtaskcollection`` request.
"""

import base64
import binascii
import contextlib
import hashlib
import logging
import math
import os
import re
import shlex
import threading
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.pipeline.transport import RequestsTransport
from WDL import Error
from WDL._util import NOTICE_LEVEL
from WDL._util import StructuredLogMessage as _
from WDL.runtime import config as miniwdl_config

from ..attempt import TaskAttempt
from ..config import ConfigError, Settings
from ..sharedfs import SharedFilesystem
from .base import QUEUED, RUNNING, Engine, Phase, Poller, Status

GiB = 1 << 30
ID_LENGTH = 64  # Batch ids: letters, digits, hyphens and underscores, at most 64
INVALID_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]")
# vCPUs are the number after the family letters in a VM size name (Standard_D4s_v3 -> 4); memory
# per vCPU by family, for pools whose nodes' size the config does not state (max_memory)
VM_SIZE = re.compile(r"^(?:standard_|basic_)?([a-z]+?)(\d+)", re.IGNORECASE)
GIB_PER_VCPU = {"a": 2, "b": 4, "d": 4, "e": 8, "f": 2, "h": 4, "l": 8, "m": 14, "n": 7}
POOL_SPEC_KEYS = (
    "vm_size",
    "image",
    "node_agent_sku_id",
    "dedicated_nodes",
    "low_priority_nodes",
    "task_slots_per_node",
    "container_registries",
    "container_image_names",
    "mount_configuration",
)
STATUS_FIELDS = ["id", "state", "executionInfo", "nodeInfo"]
# tasks Batch already started: the only ones a poll needs to see (queued ones stay QUEUED)
STARTED_FILTER = "state ne 'active'"
THROTTLED = (429, 503)
QUOTA_CODE = "ActiveJobAndScheduleQuotaReached"
SUBMIT_LINGER = 0.1  # seconds a submission waits for others to share its addtaskcollection
COLLECTION_MAX = 100  # tasks per addtaskcollection request (service limit)
FILE_TAIL_BYTES = 4000
MISSING_FILESYSTEM_EXIT = 125  # the command could not start: the node lacks the shared filesystem


def describe_error(exn: BaseException) -> str:
    """One line for a service or transport error: status, Batch error code and message only.

    The service's error values (e.g. AuthenticationErrorDetail with the string it signed) are
    left out: they are long and not for a log line.
    """
    if isinstance(exn, HttpResponseError):
        text = str(exn.message or exn.reason or "")
        message = re.sub(r"^\(\w+\)\s*", "", text.splitlines()[0] if text else "")
        return f"{exn.status_code} {error_code(exn) or exn.reason}: {message}".strip().rstrip(":")
    text = str(exn).splitlines()[0] if str(exn) else type(exn).__name__
    # transport errors nest urllib3's story; the socket's own words are the useful part
    cause = re.search(
        r"(\[Errno -?\d+\] [^'\")]+|Read timed out|Name or service not known|timed out)", text
    )
    return f"{type(exn).__name__}: {cause.group(1) if cause else text[:300]}"


def enum_text(value: Any) -> str:
    """An SDK enum (or a plain string the SDK did not know) as the service's lower-case word."""
    return str(getattr(value, "value", value) or "").lower()


def error_code(exn: BaseException) -> str | None:
    if isinstance(exn, HttpResponseError) and exn.error is not None:
        return getattr(exn.error, "code", None)
    return None


def batch_id(text: str, limit: int = ID_LENGTH) -> str:
    """A valid Batch id for ``text``. Ids are case-insensitive and at most 64 long: one with
    capitals, or too long, keeps its head plus a hash of the whole, so distinct texts stay distinct."""
    clean = INVALID_ID_CHARACTERS.sub("-", text).strip("-") or "x"
    if len(clean) <= limit and clean == clean.lower():
        return clean
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
    return f"{clean[: limit - 11]}-{digest}"


def node_size(vm_size: str) -> tuple[int, int] | None:
    """(vCPUs, memory bytes) estimated from an Azure VM size name, None if it has no such shape."""
    match = VM_SIZE.match(vm_size or "")
    if not match:
        return None
    family, vcpus = match.group(1).lower(), int(match.group(2))
    return vcpus, vcpus * GIB_PER_VCPU.get(family[0], 4) * GiB


class LoopbackHttp(SansIOHTTPPolicy):
    """Lets an Entra ID token go to a plain-http endpoint; used for 127.0.0.1 (an emulator) only."""

    def on_request(self, request: PipelineRequest) -> None:
        request.context.options["enforce_https"] = False


class PoolSpec:
    """pool_spec: the few settings an auto-created pool needs, as BatchPoolCreateOptions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spec = settings.json_object("pool_spec")
        unknown = sorted(set(self.spec) - set(POOL_SPEC_KEYS))
        if unknown:
            raise settings.fail(
                "pool_spec",
                f"unknown key(s) {', '.join(unknown)}; known: {', '.join(POOL_SPEC_KEYS)}",
            )

    def __bool__(self) -> bool:
        return bool(self.spec)

    def _require(self, key: str) -> Any:
        if not self.spec.get(key):
            raise self.settings.fail("pool_spec", f"needs {key!r} to create a pool")
        return self.spec[key]

    def _registry(self, entry: dict[str, Any]) -> batch_models.ContainerRegistryReference:
        password = None
        if entry.get("password_env"):
            password = os.environ.get(entry["password_env"])
            if not password:
                raise self.settings.fail(
                    "pool_spec",
                    f"container registry password variable {entry['password_env']} is not set",
                )
        identity = (
            batch_models.BatchNodeIdentityReference(resource_id=entry["identity_reference"])
            if entry.get("identity_reference")
            else None
        )
        return batch_models.ContainerRegistryReference(
            registry_server=entry.get("registry_server"),
            username=entry.get("username"),
            password=password,
            identity_reference=identity,
        )

    def options(self, pool_id: str) -> batch_models.BatchPoolCreateOptions:
        try:
            return self._options(pool_id)
        except (TypeError, ValueError, AttributeError) as exn:
            raise self.settings.fail("pool_spec", f"invalid value: {exn}") from None

    def _options(self, pool_id: str) -> batch_models.BatchPoolCreateOptions:
        image = self._require("image")
        if not isinstance(image, dict):
            raise self.settings.fail(
                "pool_spec",
                "'image' must be an object: publisher, offer, sku, version (or virtual_machine_image_id)",
            )
        dedicated, low = (
            int(self.spec.get("dedicated_nodes", 0)),
            int(self.spec.get("low_priority_nodes", 0)),
        )
        if dedicated + low < 1:
            raise self.settings.fail(
                "pool_spec", "needs dedicated_nodes or low_priority_nodes above 0"
            )
        containers = batch_models.BatchContainerConfiguration(
            type="dockerCompatible",
            container_image_names=self.spec.get("container_image_names") or None,
            container_registries=[
                self._registry(r) for r in self.spec.get("container_registries", [])
            ]
            or None,
        )
        return batch_models.BatchPoolCreateOptions(
            id=pool_id,
            vm_size=self._require("vm_size"),
            virtual_machine_configuration=batch_models.VirtualMachineConfiguration(
                image_reference=batch_models.BatchVmImageReference(**image),
                node_agent_sku_id=self._require("node_agent_sku_id"),
                container_configuration=containers,
            ),
            target_dedicated_nodes=dedicated,
            target_low_priority_nodes=low,
            task_slots_per_node=int(self.spec.get("task_slots_per_node", 1)),
            mount_configuration=[
                batch_models.MountConfiguration(m) for m in self.spec.get("mount_configuration", [])
            ]
            or None,
        )


class Submissions:
    """Concurrent submissions share one addtaskcollection request (up to 100 tasks).

    The first submitter waits ``SUBMIT_LINGER`` for company, then sends what has gathered while
    the others wait for their outcome: a scatter's tasks reach Batch in a few requests.
    """

    def __init__(self, engine: "AzureBatchEngine") -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._pending: list[tuple[batch_models.BatchTaskCreateOptions, dict[str, Any]]] = []
        self._sending = False

    def add(self, task: batch_models.BatchTaskCreateOptions) -> None:
        outcome: dict[str, Any] = {"done": threading.Event()}
        with self._lock:
            self._pending.append((task, outcome))
            lead = not self._sending
            self._sending = True
        if lead:
            time.sleep(SUBMIT_LINGER)
            while True:
                with self._lock:
                    batch, self._pending = (
                        self._pending[:COLLECTION_MAX],
                        self._pending[COLLECTION_MAX:],
                    )
                    if not batch:
                        self._sending = False
                        break
                self._send(batch)
        outcome["done"].wait()
        if outcome.get("error"):
            raise outcome["error"]

    def _send(
        self, batch: list[tuple[batch_models.BatchTaskCreateOptions, dict[str, Any]]]
    ) -> None:
        try:
            errors = self._engine.create_tasks([task for task, _ in batch])
        except Exception as exn:
            errors = {task.id: exn for task, _ in batch}
        for task, outcome in batch:
            outcome["error"] = errors.get(task.id)
            outcome["done"].set()


class AzureBatchEngine(Engine):
    section = "omnibio_azurebatch"

    def __init__(
        self,
        client: BatchClient,
        settings: Settings,
        account: str,
        pool: batch_models.BatchPool,
        filesystem: SharedFilesystem,
        node_root: str,
        limits: dict[str, int],
        logger: logging.Logger,
    ) -> None:
        self.client = client
        self.account = account
        self.pool = pool
        self.filesystem = self.shared = filesystem
        self.node_root = node_root
        self.limits = limits
        self.slots = int(pool.task_slots_per_node or 1)
        self.poll_seconds = settings.number("poll_seconds", minimum=0.2)
        self.default_time_limit = settings.integer("default_time_limit", minimum=0) or None
        self.quota_wait = settings.number("quota_wait_seconds", minimum=0)
        self.extra_run_options = shlex.split(settings.text("container_run_options"))
        self.job_id: str | None = None
        self._job_lock = threading.Lock()
        self._open: set[str] = set()  # tasks this run added that may still run (shutdown ends them)
        self._open_lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._time_limits: dict[str, int | None] = {}
        self._images: dict[str, str] = {}
        self._submissions = Submissions(self)
        self._poller = Poller(
            "omnibio-azurebatch-poll", self._fetch, self.poll_seconds, logger, batch=None
        )

    # --- start -----------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: miniwdl_config.Loader, logger: logging.Logger) -> "AzureBatchEngine":
        settings = Settings(cfg, cls.section)
        account_url = settings.text("account_url", required=True).rstrip("/")
        parts = urlsplit(account_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise settings.fail(
                "account_url",
                f"{account_url!r} is not a URL such as https://myaccount.westeurope.batch.azure.com",
            )
        filesystem = SharedFilesystem.from_settings(settings)
        node_root = (settings.text("node_mount_path") or filesystem.container_root).rstrip("/")
        if not node_root.startswith("/"):
            raise settings.fail("node_mount_path", f"{node_root!r} must be an absolute path")
        pool_id = settings.text("pool_id", required=True)
        if INVALID_ID_CHARACTERS.search(pool_id) or len(pool_id) > ID_LENGTH:
            raise settings.fail(
                "pool_id",
                f"{pool_id!r} is not a Batch pool id (letters, digits, - and _, at most 64)",
            )
        pool_spec = PoolSpec(settings)
        # the SDK's request logging would put a line per REST call into the run's log
        logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger("azure").level))
        account, credential = cls._credential(settings, parts.hostname)
        max_retries = settings.integer("max_retries", minimum=0)
        # Entra tokens travel over TLS only; a plain-http endpoint is allowed on this machine only
        loopback_token = settings.text("auth") == "entra" and parts.hostname in (
            "127.0.0.1",
            "localhost",
            "::1",
        )
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
        session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=32))
        client = BatchClient(
            account_url,
            credential,
            transport=RequestsTransport(
                session=session, session_owner=False, connection_timeout=15, read_timeout=120
            ),
            retry_total=max_retries,
            retry_status=max_retries,
            retry_connect=3,
            retry_backoff_factor=1.0,
            retry_backoff_max=60,
            per_call_policies=[LoopbackHttp()] if loopback_token else [],
        )
        pool = cls._pool(client, settings, account_url, pool_id, pool_spec, logger)
        limits = cls._limits(settings, pool)
        engine = cls(client, settings, account, pool, filesystem, node_root, limits, logger)
        logger.log(
            NOTICE_LEVEL,
            _(
                "omnibio_azurebatch",
                account_url=account_url,
                auth=settings.text("auth"),
                pool=pool_id,
                vm_size=pool.vm_size,
                task_slots_per_node=engine.slots,
                nodes=f"{pool.current_dedicated_nodes or 0} dedicated + {pool.current_low_priority_nodes or 0} low-priority",
                **limits,
            ),
        )
        return engine

    @staticmethod
    def _credential(settings: Settings, host: str) -> tuple[str, Any]:
        """(account name, credential); the shared key is read from its variable, never logged."""
        auth = settings.choice("auth", ("shared_key", "entra"))
        if auth == "entra":
            from azure.identity import (
                DefaultAzureCredential,  # managed identity, workload identity, az login
            )

            return settings.text("account_name") or host.split(".")[0], DefaultAzureCredential()
        account = settings.text("account_name") or (
            host.split(".")[0] if host.endswith(".batch.azure.com") else ""
        )
        if not account:
            raise settings.fail(
                "account_name",
                "is required with auth = shared_key when account_url is not <account>.<region>.batch.azure.com",
            )
        variable = settings.text("account_key_env", required=True)
        key = os.environ.get(variable, "").strip()
        if not key:
            raise settings.fail(
                "account_key_env",
                f"environment variable {variable} (the account's shared key) is not set",
            )
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise settings.fail(
                "account_key_env",
                f"environment variable {variable} does not hold a base64 Batch account key",
            ) from None
        return account, AzureNamedKeyCredential(account, key)

    @classmethod
    def _pool(
        cls,
        client: BatchClient,
        settings: Settings,
        account_url: str,
        pool_id: str,
        spec: PoolSpec,
        logger: logging.Logger,
    ) -> batch_models.BatchPool:
        """The pool, created from pool_spec when missing; every start-up problem is one line."""
        try:
            pool = cls._find_or_create_pool(client, pool_id, spec, logger)
        except HttpResponseError as exn:  # ClientAuthenticationError (no token at all) is one too
            code = error_code(exn)
            if exn.status_code in (None, 401, 403) or code == "AuthenticationFailed":
                raise cls._auth_failure(settings, exn) from None
            if code == "PoolNotFound":
                raise settings.fail(
                    "pool_id",
                    f"pool {pool_id!r} does not exist in {account_url}; create it (README: Azure setup) or set pool_spec",
                ) from None
            raise settings.fail(
                "pool_spec" if spec else "pool_id", f"Azure Batch refused: {describe_error(exn)}"
            ) from None
        except AzureError as exn:
            raise settings.fail(
                "account_url", f"cannot reach Azure Batch at {account_url} ({describe_error(exn)})"
            ) from None
        if enum_text(pool.state) == "deleting":
            raise settings.fail("pool_id", f"pool {pool_id!r} is being deleted")
        vm = pool.virtual_machine_configuration
        if not vm or not vm.container_configuration:
            raise settings.fail(
                "pool_id",
                f"pool {pool_id!r} has no container configuration; tasks need a pool created with containerConfiguration (README: Azure setup)",
            )
        if not (
            pool.target_dedicated_nodes or pool.target_low_priority_nodes or pool.enable_auto_scale
        ):
            logger.warning(
                _(
                    "Azure Batch pool has no nodes; tasks will wait until it is resized",
                    pool=pool_id,
                )
            )
        return pool

    @staticmethod
    def _find_or_create_pool(
        client: BatchClient, pool_id: str, spec: PoolSpec, logger: logging.Logger
    ) -> batch_models.BatchPool:
        try:
            return client.get_pool(pool_id)
        except HttpResponseError as exn:
            if error_code(exn) != "PoolNotFound" or not spec:
                raise
        logger.log(NOTICE_LEVEL, _("creating Azure Batch pool from pool_spec", pool=pool_id))
        try:
            client.create_pool(spec.options(pool_id))
        except HttpResponseError as exn:
            if error_code(exn) != "PoolExists":  # else another run created it meanwhile
                raise
        return client.get_pool(pool_id)

    @staticmethod
    def _auth_failure(settings: Settings, exn: HttpResponseError) -> ConfigError:
        reason = describe_error(exn)
        if settings.text("auth") == "entra":
            if exn.status_code is None:
                return settings.fail(
                    "auth",
                    f"no Entra ID token for Azure Batch ({reason}); set up a managed identity, workload identity or az login",
                )
            return settings.fail(
                "auth",
                f"Azure Batch did not accept the Entra ID token ({reason}); give the identity a Batch data-plane role on the account",
            )
        variable = settings.text("account_key_env")
        return settings.fail(
            "account_key_env",
            f"Azure Batch rejected the shared key in ${variable} ({reason}); use a current key of the account named in account_name",
        )

    @staticmethod
    def _limits(settings: Settings, pool: batch_models.BatchPool) -> dict[str, int]:
        estimated = node_size(pool.vm_size or "")
        cpu = (
            settings.integer("max_cpu", minimum=1)
            if settings.text("max_cpu")
            else (estimated[0] if estimated else 0)
        )
        memory = (
            settings.size("max_memory")
            if settings.text("max_memory")
            else (estimated[1] if estimated else 0)
        )
        if not cpu:
            raise settings.fail(
                "max_cpu", f"cannot tell the vCPUs of vmSize {pool.vm_size!r}; set max_cpu"
            )
        if not memory:
            raise settings.fail(
                "max_memory", f"cannot tell the memory of vmSize {pool.vm_size!r}; set max_memory"
            )
        return {"cpu": cpu, "mem_bytes": memory}

    def resource_limits(self) -> dict[str, int]:
        return self.limits

    # --- the run's job ---------------------------------------------------------------------

    def ensure_job(self, workflow_run: str, logger: logging.Logger) -> str:
        """The run's Batch job, created on first use; waits (bounded) while the job quota is full."""
        with self._job_lock:
            if self.job_id:
                return self.job_id
            job_id = f"{batch_id(workflow_run, ID_LENGTH - 9)}-{uuid.uuid4().hex[:8]}"
            options = batch_models.BatchJobCreateOptions(
                id=job_id,
                display_name=workflow_run[:1024],
                pool_info=batch_models.BatchPoolInfo(pool_id=self.pool.id),
                constraints=batch_models.BatchJobConstraints(max_task_retry_count=0),
                metadata=[
                    batch_models.BatchMetadataItem(name="omnibio.run", value=workflow_run[:512])
                ],
            )
            waited, delay = 0.0, 5.0
            while True:
                try:
                    self.client.create_job(options)
                    break
                except HttpResponseError as exn:
                    if error_code(exn) != QUOTA_CODE:
                        raise Error.RuntimeError(
                            f"Azure Batch could not create job {job_id}: {describe_error(exn)}"
                        ) from None
                    if waited >= self.quota_wait:
                        raise Error.RuntimeError(
                            f"Azure Batch account {self.account} is at its active job quota ({QUOTA_CODE}) for {int(waited)} s; "
                            "terminate or delete finished jobs, or request a higher quota"
                        ) from None
                    logger.warning(
                        _(
                            "Azure Batch active job quota reached; waiting",
                            code=QUOTA_CODE,
                            seconds=delay,
                        )
                    )
                    time.sleep(delay)
                    waited += delay
                    delay = min(delay * 2, 60.0)
            self.job_id = job_id
            logger.log(NOTICE_LEVEL, _("Azure Batch job", job=job_id, pool=self.pool.id))
            return job_id

    # --- the attempt -----------------------------------------------------------------------

    def required_slots(self, attempt: TaskAttempt) -> int | None:
        """Slots in proportion to the node's CPUs, on pools that run several tasks per node."""
        if self.slots <= 1:
            return None
        per_slot = self.limits["cpu"] / self.slots
        return max(1, min(self.slots, math.ceil(attempt.resources.cpu / per_slot)))

    def run_options(self, attempt: TaskAttempt) -> str:
        """containerRunOptions: limits, the shared filesystem's two views, working directory."""
        resources = attempt.resources
        options = ["--cpus", str(resources.cpu)]
        # runtime.memory is a hard limit here (tasks share nodes), as on other batch services
        memory = resources.memory_limit or resources.memory_reservation
        if memory:
            options += ["--memory", str(memory)]
        if resources.memory_reservation and resources.memory_reservation < memory:
            options += ["--memory-reservation", str(resources.memory_reservation)]
        for mount in attempt.mounts:
            source = self.node_path(mount.host_path)
            options += [
                "-v",
                f"{source}:{mount.container_path}" + (":ro" if mount.read_only else ""),
            ]
        options += ["--workdir", attempt.workdir]
        if attempt.user:
            options += ["--user", attempt.user]
        if attempt.privileged:
            options.append("--privileged")
        if resources.gpu:
            options += ["--gpus", str(resources.gpu)]
        for name, value in attempt.tags.items():
            options += ["--label", f"{name}={value}"]
        return shlex.join(options + self.extra_run_options)

    def node_path(self, host_path: str) -> str:
        """Where a pool node sees a path of this host's shared filesystem mount."""
        relative = os.path.relpath(host_path, self.shared.host_root)
        return self.node_root if relative == "." else os.path.join(self.node_root, relative)

    def command(self, attempt: TaskAttempt) -> list[str]:
        """attempt.argv, after a check that the node sees the shared filesystem.

        On a node without it, docker creates the bind source empty and the command's own error
        would land in an invisible stderr file; this check says so in Batch's stderr.txt, which
        failure_details fetches.
        """
        stdout = shlex.quote(self.shared.to_container(attempt.stdout_path))
        problem = (
            f'"omnibio: "{stdout}" is not visible on Azure Batch node $AZ_BATCH_NODE_ID; the pool must mount the '
            f'shared filesystem at "{shlex.quote(self.node_root)}" ([omnibio_azurebatch] node_mount_path, see the README)"'
        )
        check = f'[ -e {stdout} ] || {{ echo {problem} >&2; exit {MISSING_FILESYSTEM_EXIT}; }}; exec "$@"'
        return ["/bin/sh", "-c", check, "omnibio", *attempt.argv]

    def task_options(self, attempt: TaskAttempt) -> batch_models.BatchTaskCreateOptions:
        call = attempt.call.replace("/", "-")
        time_limit = attempt.resources.time_limit
        return batch_models.BatchTaskCreateOptions(
            id=batch_id(f"{call}-{attempt.attempt}"),
            display_name=attempt.run_id[:1024],
            # a container task's command line is the container's command (no shell): argv quoted
            command_line=shlex.join(self.command(attempt)),
            container_settings=batch_models.BatchTaskContainerSettings(
                image_name=attempt.image,
                container_run_options=self.run_options(attempt),
                working_directory="containerImageDefault",
            ),
            environment_settings=[
                batch_models.EnvironmentSetting(name=k, value=v) for k, v in attempt.env.items()
            ],
            constraints=batch_models.BatchTaskConstraints(
                max_wall_clock_time=timedelta(seconds=time_limit) if time_limit else None,
                max_task_retry_count=0,
            ),
            required_slots=self.required_slots(attempt),
        )

    def submit(self, attempt: TaskAttempt, logger: logging.Logger) -> str:
        self.ensure_job(attempt.workflow_run, logger)
        task = self.task_options(attempt)
        handle = task.id
        self._time_limits[handle] = attempt.resources.time_limit
        self._images[handle] = attempt.image
        with self._open_lock:
            self._open.add(handle)
        try:
            self._submissions.add(task)
        except Exception as exn:
            with self._open_lock:
                self._open.discard(handle)
            raise Error.RuntimeError(
                f"Azure Batch did not accept task {handle}: {describe_error(exn)}"
            ) from None
        self._poller.watch(handle)
        logger.info(
            _(
                "Azure Batch task",
                job=self.job_id,
                task=handle,
                image=attempt.image,
                required_slots=task.required_slots,
            )
        )
        return handle

    def create_tasks(
        self, tasks: list[batch_models.BatchTaskCreateOptions]
    ) -> dict[str, Exception]:
        """Add tasks to the run's job; {task id: error} for those not added.

        A task that already exists was added by an earlier try of the same request (the
        service may have acted on a request whose answer was lost): that is success.
        """
        assert self.job_id
        delay = 1.0
        for tries in range(1, 9):
            try:
                if len(tasks) == 1:
                    self.client.create_task(self.job_id, tasks[0])
                    return {}
                results = self.client.create_task_collection(
                    self.job_id, batch_models.BatchTaskGroup(task_values=tasks)
                )
            except HttpResponseError as exn:
                if len(tasks) == 1 and error_code(exn) == "TaskExists":
                    return {}
                if exn.status_code not in THROTTLED or tries == 8:
                    raise
                time.sleep(delay)  # throttled beyond the client's own retries (e.g. no Retry-After)
                delay = min(delay * 2, 30.0)
                continue
            errors: dict[str, Exception] = {}
            retry = []
            for result in results.result_values or []:
                if enum_text(result.status) == "servererror":
                    retry.append(result.task_id)
                elif (
                    enum_text(result.status) == "clienterror"
                    and getattr(result.error, "code", None) != "TaskExists"
                ):
                    message = getattr(getattr(result.error, "message", None), "value", "") or ""
                    errors[result.task_id] = Error.RuntimeError(
                        f"{getattr(result.error, 'code', 'ClientError')}: {message.splitlines()[0] if message else ''}"
                    )
            if not retry:
                return errors
            tasks = [t for t in tasks if t.id in retry]
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        return {t.id: Error.RuntimeError("server error adding the task") for t in tasks}

    # --- status ----------------------------------------------------------------------------

    def _fetch(self, handles: list[str]) -> dict[str, Status]:
        """One paged list of the run's started tasks answers every outstanding attempt."""
        if not self.job_id:
            return {}
        wanted = set(handles)
        statuses = {}
        for task in self.client.list_tasks(
            self.job_id, filter=STARTED_FILTER, select=STATUS_FIELDS
        ):
            if task.id in wanted:
                statuses[task.id] = self._status(task)
        return statuses

    def _status(self, task: batch_models.BatchTask) -> Status:
        info = task.execution_info
        state = enum_text(task.state)
        node = task.node_info.node_id if task.node_info else None
        if info is not None and (info.requeue_count or 0) > 0 and state != "completed":
            # the node (low-priority/spot) was preempted and Batch put the task back in the queue:
            # stop that rerun so miniwdl retries the attempt itself, within runtime.preemptible (a
            # rerun that already completed is simply its result)
            self._terminate(task.id)
            return Status(
                Phase.DONE,
                interrupted=True,
                reason=f"Azure Batch requeued the task after its node was preempted (requeueCount={info.requeue_count})",
            )
        if state in ("preparing", "running"):
            return RUNNING
        if state != "completed":
            return QUEUED
        details = {
            "batch_job": self.job_id,
            "batch_task": task.id,
            **({"batch_node": node} if node else {}),
        }
        failure = info.failure_info if info else None
        if info is None or info.exit_code is None:
            return Status(Phase.DONE, error=self._failure_text(task.id, failure), details=details)
        reason = ""
        if failure is not None and failure.code == "TaskEnded" and task.id not in self._cancelled:
            limit = self._time_limits.get(task.id)
            reason = (
                f"ended by Azure Batch at its time limit of {limit} s (maxWallClockTime)"
                if limit
                else f"ended by Azure Batch: {failure.message}"
            )
        return Status(Phase.DONE, exit_code=int(info.exit_code), reason=reason, details=details)

    def _failure_text(self, task_id: str, failure: batch_models.BatchTaskFailureInfo | None) -> str:
        """One line for a task that never ran its command: image pull, container settings, ..."""
        if failure is None:
            return f"Azure Batch task {self.job_id}/{task_id} completed without an exit code or failure information"
        values = {d.name: d.value for d in (failure.details or []) if d.name}
        cause = values.get("Message", "")
        if (failure.code or "").startswith("ContainerInvalidImage") or "ContainerImage" in values:
            image = values.get("ContainerImage") or self._images.get(task_id, "?")
            return f"Azure Batch could not start image {image} for task {task_id} ({failure.code}: {failure.message}){': ' + cause if cause else ''}"
        return f"Azure Batch could not run task {task_id} ({failure.category} {failure.code}: {failure.message}){': ' + cause if cause else ''}"

    def wait(self, handle: str, timeout: float) -> Status:
        return self._poller.wait(handle, timeout)

    # --- after the attempt -----------------------------------------------------------------

    def failure_details(self, handle: str, attempt: TaskAttempt, status: Status) -> dict[str, Any]:
        """The tails of the task's stdout.txt / stderr.txt on its node (the container's own output)."""
        details: dict[str, Any] = {}
        for name in ("stdout.txt", "stderr.txt"):
            tail = self._file_tail(handle, name)
            if tail:
                details[f"batch_{name.replace('.txt', '')}_tail"] = tail
        return details

    def _file_tail(self, handle: str, name: str) -> str:
        assert self.job_id
        try:
            size = (
                self.client.get_task_file_properties(self.job_id, handle, name).content_length or 0
            )
            if not size:
                return ""
            start = max(0, size - FILE_TAIL_BYTES)
            data = b"".join(
                self.client.download_task_file(
                    self.job_id, handle, name, ocp_range=f"bytes={start}-{size - 1}"
                )
            )
        except AzureError:
            return ""
        return data.decode("utf-8", errors="replace")

    def _terminate(self, handle: str) -> bool:
        assert self.job_id
        try:
            self.client.terminate_task(self.job_id, handle)
        except HttpResponseError as exn:
            if error_code(exn) not in ("TaskCompleted", "TaskNotFound"):
                return False
        except AzureError:
            return False
        with self._open_lock:
            self._open.discard(handle)
        return True

    def cancel(self, handle: str, logger: logging.Logger) -> None:
        self._cancelled.add(handle)
        if self._terminate(handle):
            logger.info(_("Azure Batch task terminated", job=self.job_id, task=handle))

    def release(self, handle: str, logger: logging.Logger) -> None:
        status = self._poller.wait(handle, 0)
        self._poller.forget(handle)
        for remembered in (self._time_limits, self._images):
            remembered.pop(handle, None)
        self._cancelled.discard(handle)
        if status.phase is Phase.DONE:
            with self._open_lock:
                self._open.discard(handle)

    def shutdown(self, logger: logging.Logger) -> None:
        """Terminate every task of this run that may still run, then the run's job."""
        if not self.job_id:
            return
        with self._open_lock:
            open_tasks = sorted(self._open)
        for handle in open_tasks:
            self._terminate(handle)
        with contextlib.suppress(Exception):  # at exit: report nothing but the log line below
            # options are required in azure-batch 15.1 (its request fails without a body) and
            # BatchJobTerminateOptions is not exported: the REST body as a dict
            reason = {"terminateReason": "omnibio run ended"}
            self.client.begin_terminate_job(self.job_id, reason, polling_interval=1).result(
                timeout=30
            )  # type: ignore[arg-type]
        logger.info(
            _("Azure Batch job terminated", job=self.job_id, tasks_terminated=len(open_tasks))
        )
