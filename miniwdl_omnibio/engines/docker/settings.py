"""The [omnibio_docker] section, read once at start."""

from dataclasses import dataclass

from ...settings import EngineSettings, flag, json_list, key


def _network(value: str) -> str:
    return value or "sandbox"


def _names(value: str) -> tuple[str, ...]:
    return tuple(str(name) for name in json_list(value))


@dataclass(frozen=True)
class DockerSettings(EngineSettings):
    """[omnibio_docker], read once at start."""

    section = "omnibio_docker"

    network: str = key(
        "sandbox",
        "`sandbox`: all tasks of a run share one network namespace on Docker's default bridge "
        '(outbound access, no inbound ports, host loopback unreachable: see "What a task can '
        'reach"); or `bridge`, `none`, `host` or the name of a docker network',
        _network,
    )
    allow_networks: tuple[str, ...] = key(
        "[]",
        'JSON list of the networks a task may pick with `runtime { docker_network: "..." }`',
        _names,
    )
    admission: bool = key(
        "true",
        "queue tasks until their cpu and memory fit on the host (plain `docker run` "
        "oversubscribes)",
        flag,
    )
    pull: str = key(
        "missing",
        "image pull policy: `missing`, `always` or `never`",
        choices=("missing", "always", "never"),
    )
    poll_seconds: float = EngineSettings.override(
        "poll_seconds",
        "2",
        "seconds between two full status rounds, the safety net: an exit is seen at once from "
        "the daemon's die event, and within this period only while the event stream is down "
        '(see "Speed"; also how late a time limit is enforced); stderr and Ctrl-C are checked at '
        "least every second",
        minimum=0.05,
    )
    default_time_limit: int | None = EngineSettings.override(
        "default_time_limit",
        "0",
        "seconds an attempt may run when the task sets no `runtime.omnibio_time_limit`; `0`: no "
        "limit. The plugin stops the container, and the task fails with one line naming the "
        "limit",
    )
    max_cpu: int | None = EngineSettings.override(
        "max_cpu",
        "",
        "the CPUs tasks may use: the most one task may request (miniwdl clamps `runtime.cpu` to "
        "it), and what running tasks share under `admission`; empty: the host's, as dockerd "
        "reports them",
    )
    max_memory: int | None = EngineSettings.override(
        "max_memory",
        "",
        "the memory tasks may use: the most one task may request (miniwdl clamps "
        "`runtime.memory` to it), and what running tasks share under `admission`; empty: the "
        "host's, as dockerd reports it",
    )
