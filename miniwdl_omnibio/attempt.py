"""The backend-neutral description of one task attempt: the only thing an engine sees.

Its shape follows a GA4GH TES task (executor + resources + volumes + tags) so every engine is a
plain translation of it. It is frozen: engines read it, never change it.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

# Tags (labels) on everything an attempt starts: for finding, cancelling and accounting.
TAG_RUN, TAG_CALL, TAG_TASK, TAG_ATTEMPT, TAG_RUN_ID = (
    "omnibio.run",
    "omnibio.call",
    "omnibio.task",
    "omnibio.attempt",
    "omnibio.run_id",
)


@dataclass(frozen=True)
class Mount:
    host_path: str  # on the machine running miniwdl
    container_path: str
    read_only: bool


@dataclass(frozen=True)
class Resources:
    cpu: int
    memory_reservation: int  # bytes; 0 = unset
    memory_limit: int  # bytes; 0 = unlimited
    gpu: int  # number of GPUs; 0 = none
    disk: int | None  # bytes requested, None = unset
    time_limit: int | None  # seconds, None = no limit
    max_interruptions: int  # runtime.preemptible: how many interruptions miniwdl retries

    @property
    def preemptible(self) -> bool:
        """The task may run on interruptible capacity (spot, low-priority)."""
        return self.max_interruptions > 0

    @classmethod
    def granted(
        cls,
        runtime_values: Mapping[str, Any],
        *,
        memory_is_limit: bool,
        time_limit: int | None,
        disk: int | None,
    ) -> "Resources":
        """What an attempt gets from miniwdl's runtime values, under the engine's memory policy:
        batch services enforce runtime.memory as a hard limit (``memory_is_limit``); local Docker
        follows miniwdl, a reservation with a limit only under memory_limit_multiplier."""
        reservation = int(runtime_values.get("memory_reservation", 0))
        limit = int(runtime_values.get("memory_limit", 0))
        return cls(
            cpu=int(runtime_values.get("cpu", 1)),
            memory_reservation=reservation,
            memory_limit=(limit or reservation) if memory_is_limit else limit,
            gpu=1 if runtime_values.get("gpu") else 0,
            disk=disk,
            time_limit=time_limit,
            max_interruptions=int(runtime_values.get("preemptible", 0)),
        )

    @property
    def memory(self) -> int:
        """The memory figure of the attempt: the limit where one is enforced, else the
        reservation; 0 = none asked."""
        return self.memory_limit or self.memory_reservation

    def memory_raised(self, multiplier: float, cap: int) -> "Resources":
        """The resources of a retry after an out-of-memory kill: reservation and limit times
        ``multiplier``, each at most ``cap`` (the backend's largest). A figure never goes down
        (one already above ``cap`` stays), and an unset one (0) stays unset."""

        def raised(figure: int) -> int:
            return max(figure, min(math.ceil(figure * multiplier), cap))

        return replace(
            self,
            memory_reservation=raised(self.memory_reservation),
            memory_limit=raised(self.memory_limit),
        )

    def as_contract(self) -> dict[str, Any]:
        """RESOURCES_JSON: what was granted."""
        return {
            "cpu": self.cpu,
            "memory": self.memory or None,
            "memory_reservation": self.memory_reservation or None,
            "gpu": self.gpu,
            "disk": self.disk,
            "time": self.time_limit,
        }


def memory_multiplier(value: Any) -> float:
    """A memory retry multiplier: a finite number of at least 1 (a WDL Float or Int, or its
    text). ValueError says what is wrong, for the caller to name its key."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"{value!r} is not a number of at least 1")
    return number


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class TaskAttempt:
    run_id: str  # the contract's RUN_ID: unique per task run and attempt
    call: str  # miniwdl's run id of the call, e.g. call-align-3
    workflow_run: str  # the workflow run directory's name, unique per run on this host
    attempt: int  # 1, 2, ...
    image: str
    argv: tuple[str, ...]  # what the container executes
    workdir: str  # container path
    env: Mapping[str, str]  # runtime env, WDL env inputs and the contract
    mounts: tuple[Mount, ...]
    resources: Resources
    tags: Mapping[str, str]  # labels for finding, cancelling and accounting
    stdout_path: str  # host paths the command's streams are appended to
    stderr_path: str
    host_dir: str  # miniwdl's task run directory
    runtime: Mapping[str, Any] = field(default_factory=dict)  # engine-specific runtime keys
    user: str | None = None  # "uid:gid" with --as-me
    privileged: bool = False
    interruptions: int = (
        0  # attempts of this task the engine interrupted so far (spot/low-priority loss)
    )

    def __post_init__(self) -> None:
        for name in ("env", "tags", "runtime"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def describe(self) -> dict[str, Any]:
        """A loggable summary: environment variable names only, never their values."""
        return {
            "run_id": self.run_id,
            "image": self.image,
            "cpu": self.resources.cpu,
            "memory_limit": self.resources.memory_limit,
            "gpu": self.resources.gpu,
            "time_limit": self.resources.time_limit,
            "mounts": len(self.mounts),
            "env": sorted(self.env),
        }
