"""The [omnibio_slurm] values translation needs, read once at start by the engine."""

from dataclasses import dataclass


@dataclass(frozen=True)
class SlurmSettings:
    """The [omnibio_slurm] values translation needs (loaded once by the engine)."""

    runtime: str  # docker | podman | apptainer
    partition: str
    account: str
    qos: str
    default_memory: int  # bytes, for tasks that set no runtime.memory
    extra_options: tuple[str, ...]  # sbatch_options, already split
    runtime_options: tuple[str, ...]  # runtime_options: given to every container run, split
    host_root: str  # the shared filesystem where miniwdl sees it
    node_root: str  # ... where the Slurm nodes see it (the job scripts run there)
