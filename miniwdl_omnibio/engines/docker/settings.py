"""The [omnibio_docker] section, read once at start."""

from dataclasses import dataclass

from ...config import Settings


@dataclass(frozen=True)
class DockerSettings:
    """[omnibio_docker], read once at start."""

    network: str
    allow_networks: tuple[str, ...]
    pull: str
    poll_seconds: float
    admission: bool
    default_time_limit: int | None

    @classmethod
    def load(cls, settings: Settings) -> "DockerSettings":
        return cls(
            network=settings.raw("network") or "sandbox",
            allow_networks=tuple(str(n) for n in settings.json_list("allow_networks")),
            pull=settings.choice("pull", ("missing", "always", "never")),
            poll_seconds=settings.number("poll_seconds", minimum=0.05),
            admission=settings.flag("admission"),
            default_time_limit=settings.integer("default_time_limit", minimum=0) or None,
        )
