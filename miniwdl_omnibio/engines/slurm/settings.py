"""The [omnibio_slurm] section, read once at start by the engine."""

import os
from dataclasses import dataclass, field

from ...placement.sharedfs import SharedFilesystem
from ...settings import EngineSettings, flag, integer, key, number, size, words

RUNTIMES = ("docker", "podman", "apptainer")


def _file(value: str) -> str:
    if value and not os.path.isfile(value):
        raise ValueError(f"{value} is not a file")
    return value


@dataclass(frozen=True)
class SlurmSettings(EngineSettings):
    """[omnibio_slurm], read once at start."""

    section = "omnibio_slurm"

    partition: str = key(
        "",
        "the partition of every job; empty: the cluster's default. A task overrides it with "
        "`runtime.slurm_partition`",
    )
    account: str = key(
        "",
        "the account of every job; empty: the cluster's default. A task overrides it with "
        "`runtime.slurm_account`",
    )
    qos: str = key(
        "",
        "the QOS of every job; empty: the cluster's default. A task overrides it with "
        "`runtime.slurm_qos`",
    )
    runtime: str = key(
        "docker",
        "what runs the task's image on the node: `docker`, `podman` or `apptainer`",
        choices=RUNTIMES,
        name="container_runtime",
    )
    runtime_options: tuple[str, ...] = key(
        "",
        "extra options for every container run (`docker|podman run`, `apptainer exec`), "
        "shell-quoted; e.g. podman on a host without CAP_SYS_RESOURCE needs ulimits it may set: "
        '`--ulimit nofile=1024:1024 --ulimit nproc=4096:4096` (see "One attempt")',
        words,
    )
    mount_path: str = key(
        "",
        "where task containers see the shared filesystem read-write; run directories and inputs "
        "must be on it",
        required=True,
    )
    host_mount_path: str = key(
        "", "where this host (miniwdl, sbatch) sees the same filesystem; empty: `mount_path`"
    )
    node_mount_path: str = key(
        "",
        "where the Slurm nodes see it (the job scripts run there, and it is the source of the "
        "containers' binds); empty: `host_mount_path`. On most clusters all three are the same "
        "path",
    )
    readonly_mount_path: str = key(
        "/mnt/omnibio_inputs",
        "where task containers see it read-only, for their inputs; empty: inputs are read "
        "through `mount_path` and writable",
    )
    default_memory: int = key(
        "2G",
        "memory (`sbatch --mem`, and the container's limit) for tasks that set no `runtime.memory`",
        size,
    )
    default_time_limit: int | None = EngineSettings.override(
        "default_time_limit",
        "0",
        "seconds an attempt may run when it sets no `runtime.omnibio_time_limit`; `0`: no limit. "
        "Slurm gets it rounded up to minutes (`--time`); the job script stops it to the second",
    )
    extra_options: tuple[str, ...] = key(
        "",
        "extra sbatch options for every job, shell-quoted, e.g. `--constraint=avx2 --exclusive`",
        words,
        name="sbatch_options",
    )
    poll_seconds: float = EngineSettings.override(
        "poll_seconds",
        "2",
        "seconds between status polls of the job scripts' files on the shared filesystem (a "
        "running marker, the exit record): no Slurm command",
    )
    squeue_seconds: float = key(
        "60",
        "one squeue at most this often, for the jobs the scripts' files say nothing final about "
        "(at once when a signal ended a script): squeue(1) asks to keep such calls few",
        number,
        minimum=0,
    )
    submit_linger: float = key(
        "0.5",
        "submissions gather into one `sbatch --array` until none came for this many seconds",
        number,
        minimum=0,
        name="submit_linger_seconds",
    )
    max_array_size: int = key(
        "1000",
        "elements per `sbatch --array` at most (below the cluster's MaxArraySize, default 1001)",
        integer,
        minimum=1,
    )
    probe: bool = key(
        "true",
        "at start, run a tiny job that checks the node sees the shared filesystem and has the "
        "container runtime",
        flag,
    )
    probe_timeout: int = key(
        "60",
        "seconds to wait for the probe job to run before going on without it (on a busy "
        "cluster it may not run: the check is then skipped with a warning)",
        integer,
        minimum=1,
    )
    slurm_conf: str = key(
        "",
        "the slurm.conf every Slurm command of this process reads (exported as `SLURM_CONF`); "
        "empty: the commands' default (`/etc/slurm/slurm.conf`, or `$SLURM_CONF`)",
        _file,
    )
    max_cpu: int | None = EngineSettings.override(
        "max_cpu",
        "",
        "the most CPUs one task may request (miniwdl clamps `runtime.cpu` to it); empty: the "
        "largest node of the partition, as sinfo reports it",
    )
    max_memory: int | None = EngineSettings.override(
        "max_memory",
        "",
        "the most memory one task may request (miniwdl clamps `runtime.memory` to it); empty: "
        "the largest node of the partition, as sinfo reports it",
    )
    filesystem: SharedFilesystem = field(init=False)
    host_root: str = field(init=False)  # the shared filesystem where miniwdl sees it
    node_root: str = field(init=False)  # ... where the Slurm nodes see it (the scripts run there)

    def __post_init__(self) -> None:
        filesystem = SharedFilesystem.from_settings(self)
        self.derive(
            filesystem=filesystem,
            host_root=filesystem.host_root,
            node_root=(self.node_mount_path or filesystem.host_root).rstrip("/") or "/",
        )
