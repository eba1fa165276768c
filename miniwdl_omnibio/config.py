"""Every configuration key of the plugin, with its default, in one place.

Keys live in miniwdl's config system: a ``[section]`` of a miniwdl .cfg file, or the environment
variable ``MINIWDL__SECTION__KEY``. ``python -m miniwdl_omnibio config`` prints this table; the
docs/ pages document each key. A missing or invalid value fails at start with the key's name.
"""

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from WDL import Error
from WDL._util import parse_byte_size
from WDL.runtime import config as miniwdl_config

from .attempt import memory_multiplier
from .results import RESULT_CHECKS
from .runtime.uri import ResultUri, parse_result_uri

# Values are written as they would be in a .cfg file.
DEFAULTS: dict[str, dict[str, str]] = {
    "omnibio": {
        # s3://bucket/prefix, azureblob://account/container/prefix or file:///dir; empty = no
        # RESULT_URI. Each task call gets <prefix>/<workflow run>/<call path>/results.json
        "result_uri_prefix": "",
        # what a missing, unreadable or "ok": false results.json does: fail | warn | off
        "result_check": "fail",
        # a results.json larger than this fails the task, and the runtime refuses to upload it
        "result_max_bytes": "1 MiB",
        # contract values longer than this many bytes go to a file named by NAME_FILE
        "env_value_max_bytes": "65536",
        # seconds before the first retry of a failed attempt (runtime.maxRetries), doubling per
        # retry up to retry_wait_max; interruptions (spot loss) are retried at once
        "retry_wait": "5",
        "retry_wait_max": "300",
        # seconds a service may take to list an attempt it accepted (eventual consistency)
        # before the attempt fails as lost
        "unlisted_grace_seconds": "120",
        # also write report.html into the run directory when the run ends (any run's trace can be
        # turned into one later: python -m miniwdl_omnibio report RUN_DIR)
        "report": "false",
        # seconds between two progress log lines (attempts queued, running, done of total,
        # failed, retried); 0 = none
        "progress_seconds": "60",
        # JSON object of prices per backend for the report's cost estimate, e.g.
        # {"omnibio_awsbatch": {"cpu_hour": 0.04, "gib_hour": 0.005}}; {} = no estimate
        "prices": "{}",
        # an attempt the service reports out of memory (a typed OOM, never exit code 137 alone)
        # is retried (within runtime.maxRetries) with its memory times this number, at most the
        # backend's largest; a number >= 1, empty = off. runtime.omnibio_memory_retry_multiplier
        # overrides it per task
        "memory_retry_multiplier": "",
    },
    "omnibio_docker": {
        # sandbox: all tasks of a run share one bridge-attached network namespace (outbound
        # access, no inbound ports, host loopback unreachable); or bridge | none | host | a
        # docker network name
        "network": "sandbox",
        # networks a task may choose with runtime.docker_network
        "allow_networks": "[]",
        # queue tasks until their cpu and memory fit on the host (plain docker run oversubscribes)
        "admission": "true",
        # image pull policy: missing | always | never
        "pull": "missing",
        # seconds between two full status rounds: the safety net, since the daemon's die events
        # report each exit at once (and how late an exit is seen while the event stream is down;
        # how late a time limit is enforced)
        "poll_seconds": "2",
        # seconds an attempt may run when the task sets no runtime.omnibio_time_limit; 0 = no
        # limit (the plugin stops the container at the limit)
        "default_time_limit": "0",
    },
    "omnibio_awsbatch": {
        # AWS region of the job queues; empty = boto3's default (AWS_REGION, AWS_DEFAULT_REGION,
        # ~/.aws/config). Credentials come only from boto3's standard chain; AWS_ENDPOINT_URL or
        # AWS_ENDPOINT_URL_BATCH points it at another endpoint
        "region": "",
        # the job queue (name or ARN) task attempts go to; required
        "job_queue": "",
        # the queue (e.g. on-demand behind a spot job_queue) for attempts that must not be
        # interrupted: tasks without runtime.preemptible, and attempts after an interruption;
        # empty = job_queue for everything
        "fallback_queue": "",
        # the shared filesystem as the Batch hosts get it: an EFS file system id (fs-...), mounted
        # with transit encryption ...
        "efs_id": "",
        # ... optionally through this EFS access point (fsap-...) ...
        "efs_access_point": "",
        # ... or a directory every Batch host already mounts (FSx for Lustre, NFS; a host volume)
        "host_path": "",
        # where task containers see the shared filesystem read-write (required)
        "mount_path": "",
        # where this host (miniwdl) mounts the same filesystem; empty = mount_path
        "host_mount_path": "",
        # where task containers see it read-only, for their inputs; empty = inputs are writable
        "readonly_mount_path": "/mnt/omnibio_inputs",
        # IAM role the task containers get (job definition jobRoleArn); empty = none
        "job_role_arn": "",
        # JSON object of extra tags on every job (propagated to its ECS task)
        "tags": "{}",
        # seconds an attempt may run when the task sets no runtime.omnibio_time_limit; 0 = no
        # limit. Batch enforces at least 60
        "default_time_limit": "0",
        # memory for tasks that set no runtime.memory (Batch needs one)
        "default_memory": "2G",
        # the largest cpu and memory one task may request (runtime values are clamped to them);
        # empty = learned at start from the queues' managed compute environments (maxvCpus, the
        # largest instance type), else 64 and 256 GiB
        "max_cpu": "",
        "max_memory": "",
        # SubmitJob calls per second across all task threads (Batch allows 50 per account)
        "submit_rate": "10",
        # attempts ready together with the same queue, job definition, resources and time limit
        # go to Batch as one array job (one SubmitJob for up to 10,000 attempts)
        "array_jobs": "true",
        # seconds a ready attempt waits for others to share its array job
        "array_linger_seconds": "0.2",
        # seconds between two looks at the jobs' exit files on the shared filesystem (each job
        # writes its exit status there; one that did not exit 0 is then asked of Batch)
        "poll_seconds": "5",
        # seconds between DescribeJobs rounds about jobs whose exit files say nothing yet (a lost
        # host, a container that cannot start, a job stuck RUNNABLE); each call covers 100 jobs
        "describe_seconds": "30",
    },
    "omnibio_azurebatch": {
        # the Batch account endpoint, e.g. https://myaccount.westeurope.batch.azure.com; required
        "account_url": "",
        # shared_key (account_name + the key in account_key_env) | entra (Microsoft Entra ID through
        # azure.identity DefaultAzureCredential: managed identity, workload identity, az login)
        "auth": "shared_key",
        # the Batch account name for shared_key; empty = the first label of account_url's host
        "account_name": "",
        # name of the environment variable holding the account's shared key (never the key itself)
        "account_key_env": "AZURE_BATCH_ACCOUNT_KEY",
        # the pool that runs the tasks: it needs a container configuration and must mount the
        # shared filesystem on every node; required
        "pool_id": "",
        # JSON object to create pool_id from when it does not exist (keys: vm_size, image,
        # node_agent_sku_id, dedicated_nodes, low_priority_nodes, task_slots_per_node,
        # container_registries, container_image_names, mount_configuration); empty = must exist
        "pool_spec": "",
        # where task containers see the shared filesystem read-write (required); run directories
        # and inputs must be on it
        "mount_path": "",
        # where this host mounts the same filesystem; empty = mount_path
        "host_mount_path": "",
        # where task containers see the shared filesystem read-only, for their inputs; empty =
        # inputs are read through mount_path
        "readonly_mount_path": "",
        # where pool nodes mount the shared filesystem, the source of the containers' -v binds
        # (Batch mounts at $AZ_BATCH_NODE_MOUNTS_DIR/<relativeMountPath>, e.g.
        # /mnt/batch/tasks/fsmounts/omnibio); empty = mount_path
        "node_mount_path": "",
        # seconds a task may run when it sets no runtime.omnibio_time_limit (its
        # maxWallClockTime); 0 = unlimited
        "default_time_limit": "0",
        # seconds between two looks at the tasks' exit records on the shared filesystem (each task
        # writes its exit status there; one that did not exit 0 is then asked of Batch)
        "poll_seconds": "5",
        # seconds between list_tasks rounds about tasks whose exit records say nothing yet (a task
        # that never started, a preempted or requeued task, the time limit)
        "list_seconds": "30",
        # the largest cpu and memory one task may request (runtime values are clamped to them);
        # empty = estimated from the pool's vmSize (Standard_D4s_v3: 4 cpu, 16 GiB)
        "max_cpu": "",
        "max_memory": "",
        # retries of a throttled (429), busy (503) or failed request, with exponential backoff
        # that honours Retry-After
        "max_retries": "10",
        # seconds to keep retrying job creation while the account's active job quota is reached
        "quota_wait_seconds": "600",
        # extra docker options for every task container, appended to containerRunOptions
        # (e.g. --shm-size 1g)
        "container_run_options": "",
        # run tasks as the pool-scope auto-user with admin elevation (root in the container), so
        # they can write the run directory; false: Batch's non-admin auto-user, for pools whose
        # shared filesystem lets that user write
        "auto_user_admin": "true",
    },
    "omnibio_tes": {
        # the TES server, e.g. https://tes.example.org; the API is below it at /ga4gh/tes/v1, /v1
        # or the URL itself, whichever answers service-info first; required. Credentials never go
        # in the URL: use user + password_env or token_env
        "url": "",
        # HTTP basic auth: user name, and the environment variable holding the password
        "user": "",
        "password_env": "",
        # name of the environment variable holding a bearer token (OAuth2/JWT); not with user
        "token_env": "",
        # seconds one HTTP request to the server may take
        "request_timeout": "30",
        # tries after a throttled (429), busy (5xx) or unanswered request to the TES server (pausing
        # as its Retry-After says, else 1 s, doubling) or to the staging store; a failed create is
        # sent again only when a list by its run id tag shows the server did not create it
        "max_retries": "8",
        # staging mode (the default): where task files move between this host and the workers,
        # s3://bucket/prefix (AWS, or an S3-compatible endpoint through AWS_ENDPOINT_URL_S3) or
        # an Azure Blob URL https://account.blob.core.windows.net/container/prefix. The TES
        # server must be able to read and write it
        "staging_uri": "",
        # keep the staged objects of a finished run (default: removed at exit)
        "keep_staged": "false",
        # shared-filesystem mode (opt-in, instead of staging_uri): where the server's workers
        # mount the filesystem holding the run directories, read-write (e.g. a Funnel worker
        # volume); task working directories and results stay there, in place
        "mount_path": "",
        # where this host mounts the same filesystem; empty = mount_path
        "host_mount_path": "",
        # where the workers also mount it read-only, for task inputs; empty = inputs are read
        # through mount_path
        "readonly_mount_path": "",
        # shared-filesystem mode: the image of the task that proves at start that the workers
        # see mount_path, and how many seconds it may take (queueing included)
        "probe_image": "ubuntu:22.04",
        "probe_timeout": "600",
        # seconds between two status polls (one list per waiting or running state per poll)
        "poll_seconds": "3",
        # tasks per page when listing (TES: below 2048)
        "page_size": "256",
        # seconds a task may run when it sets no runtime.omnibio_time_limit; 0 = unlimited. TES 1.1
        # has no time limit field, so the plugin cancels the task when it is exceeded
        "default_time_limit": "0",
        # JSON object of resources.backend_parameters for every task; runtime
        # omnibio_backend_parameters overrides it key by key (keys compare case-insensitively)
        "backend_parameters": "{}",
        # fail (true) or warn (false) when a backend parameter is not one the server's
        # service-info lists; also sent to the server as resources.backend_parameters_strict
        "backend_parameters_strict": "false",
        # the largest cpu and memory one task may request (runtime values are clamped to them)
        "max_cpu": "64",
        "max_memory": "256G",
    },
    "omnibio_slurm": {
        # the partition, account and QOS of every job; empty = the cluster's default. A task
        # overrides them with runtime.slurm_partition, slurm_account, slurm_qos
        "partition": "",
        "account": "",
        "qos": "",
        # what runs the task's image on the node: docker | podman | apptainer
        "container_runtime": "docker",
        # extra options for every container run (docker|podman run, apptainer exec), shell-
        # quoted; e.g. podman on a host without CAP_SYS_RESOURCE needs ulimits it may set:
        # --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 (docs/slurm.md)
        "runtime_options": "",
        # where task containers see the shared filesystem read-write (required); run
        # directories and inputs must be on it
        "mount_path": "",
        # where this host (miniwdl, sbatch) sees the same filesystem; empty = mount_path
        "host_mount_path": "",
        # where the Slurm nodes see it (the job scripts run there); empty = host_mount_path
        "node_mount_path": "",
        # where task containers see it read-only, for their inputs; empty = inputs are writable
        "readonly_mount_path": "/mnt/omnibio_inputs",
        # memory (sbatch --mem, and the container's limit) for tasks that set no runtime.memory
        "default_memory": "2G",
        # seconds an attempt may run when it sets no runtime.omnibio_time_limit; 0 = no limit.
        # Slurm gets it rounded up to minutes (--time); the job script stops it to the second
        "default_time_limit": "0",
        # extra sbatch options for every job, e.g. --constraint=avx2 --exclusive
        "sbatch_options": "",
        # seconds between status polls of the job scripts' files on the shared filesystem (a
        # running marker, the exit record): no Slurm command
        "poll_seconds": "2",
        # ... and at most this often (squeue(1), PERFORMANCE: keep calls few) one squeue for the
        # jobs those files say nothing final about (at once when a signal ended a script)
        "squeue_seconds": "60",
        # submissions gather into one sbatch --array until none came for this many seconds
        "submit_linger_seconds": "0.5",
        # elements per sbatch --array at most (below the cluster's MaxArraySize, default 1001)
        "max_array_size": "1000",
        # at start, run a tiny job that checks the node sees the shared filesystem and has the
        # container runtime; probe_timeout: seconds to wait for it to run before going on
        "probe": "true",
        "probe_timeout": "60",
        # the slurm.conf every Slurm command of this process reads (SLURM_CONF); empty = the
        # commands' default (/etc/slurm/slurm.conf, or $SLURM_CONF)
        "slurm_conf": "",
        # the largest cpu and memory one task may request (runtime values are clamped to them);
        # empty = the largest node of the partition, as sinfo reports it
        "max_cpu": "",
        "max_memory": "",
    },
}


class ConfigError(Error.RuntimeError):
    """A configuration problem, reported as one line that names the key."""


def _where(section: str, key: str) -> str:
    return f"[{section}] {key} (env MINIWDL__{section.upper()}__{key.upper()})"


class Settings:
    """Typed, validated access to one of the plugin's config sections."""

    def __init__(self, cfg: miniwdl_config.Loader, section: str) -> None:
        assert section in DEFAULTS, section
        self.cfg = cfg
        self.section = section

    def raw(self, key: str) -> str:
        assert key in DEFAULTS[self.section], f"undeclared config key [{self.section}] {key}"
        return self.cfg.get(self.section, key, DEFAULTS[self.section][key]).strip()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"configuration {_where(self.section, key)}: {problem}")

    def text(self, key: str, required: bool = False) -> str:
        value = self.raw(key)
        if required and not value:
            raise self.fail(key, "is required but not set")
        return value

    def choice(self, key: str, options: Sequence[str]) -> str:
        value = self.raw(key).lower()
        if value not in options:
            raise self.fail(key, f"{value!r} is not one of {', '.join(options)}")
        return value

    def _number(self, key: str, kind: type, noun: str, minimum: Any) -> Any:
        value = self.raw(key)
        try:
            number = kind(value)
        except ValueError:
            raise self.fail(key, f"{value!r} is not {noun}") from None
        if minimum is not None and number < minimum:
            raise self.fail(key, f"{number} is below the minimum {minimum}")
        return number

    def integer(self, key: str, minimum: int | None = None) -> int:
        return self._number(key, int, "an integer", minimum)

    def number(self, key: str, minimum: float | None = None) -> float:
        return self._number(key, float, "a number", minimum)

    def flag(self, key: str) -> bool:
        value = self.raw(key).lower()
        if value in ("true", "t", "yes", "y", "1", "on"):
            return True
        if value in ("false", "f", "no", "n", "0", "off", ""):
            return False
        raise self.fail(key, f"{value!r} is not true or false")

    def size(self, key: str) -> int:
        value = self.raw(key)
        try:
            return parse_byte_size(value)
        except ValueError:
            raise self.fail(key, f"{value!r} is not a size such as 4G or 512 MiB") from None

    def _json(self, key: str, kind: type) -> Any:
        value = self.raw(key)
        try:
            parsed = json.loads(value) if value else kind()
        except ValueError:
            raise self.fail(key, f"{value!r} is not valid JSON") from None
        if not isinstance(parsed, kind):
            raise self.fail(key, f"should be a JSON {kind.__name__}")
        return parsed

    def json_list(self, key: str) -> list[Any]:
        return self._json(key, list)

    def json_object(self, key: str) -> dict[str, Any]:
        return self._json(key, dict)


def unknown_keys(cfg: miniwdl_config.Loader, sections: Iterable[str]) -> list[str]:
    """Keys set in our sections (file, overrides or environment) that we do not know: typos."""
    sections = set(sections)
    found: set[tuple[str, str]] = set()
    for section, options in cfg.get_all(defaults=False).items():
        if section in sections:
            found.update((section, key) for key in options)
    for name in os.environ:
        parts = name.split("__")
        if len(parts) == 3 and parts[0] == "MINIWDL" and parts[1].lower() in sections:
            found.add((parts[1].lower(), parts[2].lower()))
    return sorted(f"[{s}] {k}" for s, k in found if k not in DEFAULTS[s])


def check_sections(cfg: miniwdl_config.Loader, sections: Iterable[str]) -> None:
    unknown = unknown_keys(cfg, sections)
    if unknown:
        raise ConfigError(
            "unknown configuration key(s) "
            + ", ".join(unknown)
            + "; see `python -m miniwdl_omnibio config`"
        )


@dataclass(frozen=True)
class Price:
    """What an hour costs on a backend, per CPU requested and per GiB of memory requested."""

    cpu_hour: float
    gib_hour: float


@dataclass(frozen=True)
class OmnibioSettings:
    result_prefix: ResultUri | None
    result_check: str
    env_value_max_bytes: int
    result_max_bytes: int
    retry_wait: float
    retry_wait_max: float
    unlisted_grace: float
    report: bool
    progress_seconds: float
    prices: Mapping[str, Price]
    memory_retry_multiplier: float | None  # None: off

    @classmethod
    def load(cls, cfg: miniwdl_config.Loader) -> "OmnibioSettings":
        settings = Settings(cfg, "omnibio")
        prefix = settings.text("result_uri_prefix")
        try:
            parsed = parse_result_uri(prefix, prefix=True) if prefix else None
        except ValueError as exn:
            raise settings.fail("result_uri_prefix", str(exn)) from None
        return cls(
            result_prefix=parsed,
            result_check=settings.choice("result_check", RESULT_CHECKS),
            env_value_max_bytes=settings.integer("env_value_max_bytes", minimum=1024),
            result_max_bytes=settings.size("result_max_bytes"),
            retry_wait=settings.number("retry_wait", minimum=0),
            retry_wait_max=settings.number("retry_wait_max", minimum=0),
            unlisted_grace=settings.number("unlisted_grace_seconds", minimum=0),
            report=settings.flag("report"),
            progress_seconds=settings.number("progress_seconds", minimum=0),
            prices=_prices(settings),
            memory_retry_multiplier=_multiplier(settings, "memory_retry_multiplier"),
        )


def _multiplier(settings: Settings, key: str) -> float | None:
    value = settings.raw(key)
    if not value:
        return None
    try:
        return memory_multiplier(value)
    except ValueError as exn:
        raise settings.fail(key, str(exn)) from None


def _prices(settings: Settings) -> dict[str, Price]:
    prices: dict[str, Price] = {}
    for backend, entry in settings.json_object("prices").items():
        if backend == "omnibio" or backend not in DEFAULTS:
            raise settings.fail("prices", f"{backend!r} is not a backend (omnibio_docker, ...)")
        valid = isinstance(entry, dict) and all(
            name in ("cpu_hour", "gib_hour") and _price(value) for name, value in entry.items()
        )
        if not valid:
            raise settings.fail(
                "prices", f'{backend}: want {{"cpu_hour": x, "gib_hour": y}}, x, y >= 0'
            )
        prices[backend] = Price(float(entry.get("cpu_hour", 0)), float(entry.get("gib_hour", 0)))
    return prices


def _price(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
