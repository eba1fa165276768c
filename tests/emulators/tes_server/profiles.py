"""Server profiles: which real TES implementation the test server behaves as.

Each profile is a frozen set of switches read by server.py; every switch cites its source."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str


PROFILES = {name: Profile(name) for name in ("spec", "funnel", "tesk", "tes-azure")}
DEFAULT = "spec"


def profile_named(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown TES server profile {name!r}: one of {', '.join(PROFILES)}")
    return PROFILES[name]
