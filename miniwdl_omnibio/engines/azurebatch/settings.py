"""The [omnibio_azurebatch] section, read once at start."""

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ...placement.sharedfs import SharedFilesystem
from ...settings import (
    REQUIRED,
    EngineSettings,
    flag,
    integer,
    json_object,
    key,
    number,
    words,
)

ID_LENGTH = 64  # Batch ids: letters, digits, hyphens and underscores, at most 64
INVALID_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _account_url(value: str) -> str:
    url = value.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            f"{url!r} is not a URL such as https://myaccount.westeurope.batch.azure.com"
        )
    return url


def _pool_id(value: str) -> str:
    if INVALID_ID_CHARACTERS.search(value) or len(value) > ID_LENGTH:
        raise ValueError(f"{value!r} is not a Batch pool id (letters, digits, - and _, at most 64)")
    return value


@dataclass(frozen=True)
class AzureBatchSettings(EngineSettings):
    """[omnibio_azurebatch], read once at start."""

    section = "omnibio_azurebatch"

    account_url: str = key(
        "",
        "the Batch account endpoint, `https://<account>.<region>.batch.azure.com`",
        _account_url,
        required=True,
    )
    auth: str = key(
        "shared_key",
        "`shared_key` (`account_name` + the key in `account_key_env`) or `entra` (Microsoft "
        "Entra ID through `azure.identity.DefaultAzureCredential`: managed identity, workload "
        "identity, `az login`)",
        choices=("shared_key", "entra"),
    )
    account_name: str = key(
        "",
        "the Batch account name for `shared_key`; empty: the first label of `account_url`'s host",
    )
    account_key_env: str = key(
        "AZURE_BATCH_ACCOUNT_KEY",
        "name of the environment variable holding the account's shared key (the key itself is "
        "never configured, logged or put in failure_info)",
    )
    pool_id: str = key(
        "",
        "the pool that runs the tasks: it needs a container configuration and must mount the "
        "shared filesystem on every node",
        _pool_id,
        required=True,
    )
    pool_spec: dict = key(
        "",
        "JSON object to create `pool_id` from when it does not exist (keys: `vm_size`, `image`, "
        "`node_agent_sku_id`, `dedicated_nodes`, `low_priority_nodes`, `task_slots_per_node`, "
        "`container_registries`, `container_image_names`, `mount_configuration`; see "
        '"Auto-created pool"); empty: the pool must exist',
        json_object,
    )
    mount_path: str = key(
        "",
        "where task containers see the shared filesystem, read-write; run directories and "
        "inputs must be on it",
        required=True,
    )
    host_mount_path: str = key(
        "", "where miniwdl's host mounts the same filesystem; empty: `mount_path`"
    )
    readonly_mount_path: str = key(
        "",
        "where task containers see it read-only, for their inputs; empty: inputs are read "
        "through `mount_path`",
    )
    node_mount_path: str = key(
        "",
        "where the pool's nodes mount it, the source of the containers' `-v` binds: Batch "
        "mounts a pool's `mountConfiguration` at `$AZ_BATCH_NODE_MOUNTS_DIR/<relativeMountPath>`,"
        " i.e. `/mnt/batch/tasks/fsmounts/<relativeMountPath>`; empty: `mount_path`",
    )
    default_time_limit: int | None = EngineSettings.override(
        "default_time_limit",
        "0",
        "seconds an attempt may run when the task sets no `runtime.omnibio_time_limit` (the "
        "task's `maxWallClockTime`); `0`: no limit",
    )
    poll_seconds: float = EngineSettings.override(
        "poll_seconds",
        "5",
        "seconds between two looks at the tasks' exit records on the shared filesystem (each "
        "task writes its exit status there; one that did not exit 0 is then asked of Batch; see "
        '"Status")',
        minimum=0.2,
    )
    list_seconds: float = key(
        "30",
        "seconds between `list_tasks` rounds about tasks whose exit records say nothing yet (a "
        "task that never started, a preempted or requeued task, the time limit)",
        number,
        minimum=0.2,
    )
    max_cpu: int | None = EngineSettings.override(
        "max_cpu",
        "",
        "the most vCPUs one task may request (miniwdl clamps `runtime.cpu` to it); empty: from "
        "the pool's `vmSize` (`Standard_D4s_v3`: 4)",
    )
    max_memory: int | None = EngineSettings.override(
        "max_memory",
        "",
        "the most memory one task may request (miniwdl clamps `runtime.memory` to it); empty: "
        "estimated from the `vmSize` family (D: 4 GiB per vCPU, E: 8, F: 2, ...)",
    )
    max_retries: int = key(
        "10",
        "retries of a throttled (429), busy (503) or failed (5xx) request, with exponential "
        "backoff that honours `Retry-After` (azure-core `RetryPolicy`); an unreachable endpoint "
        "is retried 3 times",
        integer,
        minimum=0,
    )
    quota_wait: float = key(
        "600",
        "seconds to keep retrying the job's creation while the account is at its active job quota",
        number,
        minimum=0,
        name="quota_wait_seconds",
    )
    extra_run_options: tuple[str, ...] = key(
        "",
        "extra docker options for every task container, shell-quoted, appended to "
        "`containerRunOptions` (e.g. `--shm-size 1g`)",
        words,
        name="container_run_options",
    )
    auto_user_admin: bool = key(
        "true",
        "run tasks as the pool-scope auto-user with admin elevation (root inside the container), "
        "so they can write the run directory; `false`: Batch's default non-admin auto-user, for "
        "pools whose shared filesystem lets that user write",
        flag,
    )
    host: str = field(init=False)  # account_url's
    filesystem: SharedFilesystem = field(init=False)
    node_root: str = field(init=False)  # where pool nodes mount the shared filesystem
    loopback_token: bool = field(init=False)  # an Entra token may go to plain http on this host

    def __post_init__(self) -> None:
        host = urlsplit(self.account_url).hostname or ""
        filesystem = SharedFilesystem.from_settings(self)
        node_root = (self.node_mount_path or filesystem.container_root).rstrip("/")
        if not node_root.startswith("/"):
            raise self.fail("node_mount_path", f"{node_root!r} must be an absolute path")
        if self.auth == "shared_key" and not self.account_key_env:
            raise self.fail("account_key_env", REQUIRED)
        self.derive(
            host=host,
            filesystem=filesystem,
            node_root=node_root,
            loopback_token=self.auth == "entra" and host in LOOPBACK_HOSTS,
        )
