"""The [omnibio] section (every backend), and the table of every section of the plugin.

Keys live in miniwdl's config system: a ``[section]`` of a miniwdl .cfg file, or the environment
variable ``MINIWDL__SECTION__KEY``. Each is declared once, as a field of its section's settings
class (:mod:`miniwdl_omnibio.settings`); ``python -m miniwdl_omnibio config`` prints them all
and the docs' key tables are made from them. A missing or invalid value fails at start with the
key's name.
"""

import os
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from WDL.runtime import config as miniwdl_config

from .attempt import memory_multiplier
from .engines.awsbatch.settings import AwsBatchSettings
from .engines.azurebatch.settings import AzureBatchSettings
from .engines.docker.settings import DockerSettings
from .engines.slurm.settings import SlurmSettings
from .engines.tes.settings import TesSettings
from .results import RESULT_CHECKS
from .runtime.uri import ResultUri, parse_result_uri
from .settings import ConfigError, Settings, flag, integer, json_object, key, number, optional, size


@dataclass(frozen=True)
class Price:
    """What an hour costs on a backend, per CPU requested and per GiB of memory requested."""

    cpu_hour: float
    gib_hour: float


def _result_prefix(value: str) -> ResultUri | None:
    return parse_result_uri(value, prefix=True) if value else None


def _prices(value: str) -> dict[str, Price]:
    prices: dict[str, Price] = {}
    for backend, entry in json_object(value).items():
        if backend == "omnibio" or backend not in DEFAULTS:
            raise ValueError(f"{backend!r} is not a backend (omnibio_docker, ...)")
        valid = isinstance(entry, dict) and all(
            name in ("cpu_hour", "gib_hour") and _price(value) for name, value in entry.items()
        )
        if not valid:
            raise ValueError(f'{backend}: want {{"cpu_hour": x, "gib_hour": y}}, x, y >= 0')
        prices[backend] = Price(float(entry.get("cpu_hour", 0)), float(entry.get("gib_hour", 0)))
    return prices


def _price(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class OmnibioSettings(Settings):
    """[omnibio]: where results.json goes and how it is checked, retries, the trace's report and
    progress lines; read once at start."""

    section = "omnibio"

    result_prefix: ResultUri | None = key(
        "",
        "`s3://bucket/prefix`, `gs://bucket/prefix`, `azureblob://account/container/prefix` or "
        "`file:///dir`: each task call gets `<prefix>/<workflow run>/<call path>/results.json` "
        "as its `RESULT_URI`; empty: no `RESULT_URI`",
        _result_prefix,
        name="result_uri_prefix",
    )
    result_check: str = key(
        "fail",
        'what a missing, unreadable or `"ok": false` results.json does: `fail`, `warn` or `off` '
        "(a task may set `runtime.omnibio_result_check`)",
        choices=RESULT_CHECKS,
    )
    result_max_bytes: int = key(
        "1 MiB",
        "a larger results.json fails the task, and the runtime refuses to upload it",
        size,
    )
    env_value_max_bytes: int = key(
        "65536",
        "contract values longer than this many bytes go to a file named by `NAME_FILE`",
        integer,
        minimum=1024,
    )
    retry_wait: float = key(
        "5",
        "seconds before the first retry of a failed attempt (`runtime.maxRetries`), doubling per "
        "retry up to `retry_wait_max`; Ctrl-C ends the wait; an interrupted attempt (spot loss) "
        "is retried at once",
        number,
        minimum=0,
    )
    retry_wait_max: float = key(
        "300", "the longest wait before a retry, in seconds", number, minimum=0
    )
    unlisted_grace: float = key(
        "120",
        "seconds a service may take to list an attempt it accepted (eventual consistency) before "
        "the attempt fails as lost",
        number,
        minimum=0,
        name="unlisted_grace_seconds",
    )
    report: bool = key(
        "false",
        "also write `report.html` into the run directory when the run ends (docs/report.md; any "
        "run's trace can be turned into one later: `python -m miniwdl_omnibio report RUN_DIR`)",
        flag,
    )
    progress_seconds: float = key(
        "60",
        "seconds between two progress lines (attempts queued, running, done of total, failed, "
        "retried); `0`: none",
        number,
        minimum=0,
    )
    prices: Mapping[str, Price] = key(
        "{}",
        "JSON object of the price of a CPU-hour and of a GiB-hour per backend, for the report's "
        'cost estimate: `{"cpu_hour": x, "gib_hour": y}`, numbers >= 0, a missing one counts as '
        '0; e.g. `{"omnibio_awsbatch": {"cpu_hour": 0.0425, "gib_hour": 0.0047}}`; `{}`: no '
        "estimate",
        _prices,
    )
    memory_retry_multiplier: float | None = key(
        "",
        "an attempt the service reports out of memory (a typed OOM, never exit code 137 alone) is "
        "retried (within `runtime.maxRetries`) with its memory times this number (>= 1), at most "
        "the backend's largest; empty: off. `runtime.omnibio_memory_retry_multiplier` overrides "
        'it per task (docs/report.md, "Out-of-memory retries")',
        optional(memory_multiplier),
    )


# Every section of the plugin, in the order `python -m miniwdl_omnibio config` prints them.
SECTIONS: tuple[type[Settings], ...] = (
    OmnibioSettings,
    DockerSettings,
    AwsBatchSettings,
    AzureBatchSettings,
    TesSettings,
    SlurmSettings,
)
# section -> {key: default}, the defaults written as they would be in a .cfg file
DEFAULTS: dict[str, dict[str, str]] = {s.section: s.defaults() for s in SECTIONS}
# <!-- config keys: SECTION [KEY ...] --> and the markdown table below it (made by key_table)
KEY_TABLE = re.compile(r"^<!-- config keys: (\w+)((?: \w+)*) -->\n(?:\|.*\n)*", re.M)


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


def config_text() -> str:
    """Every key with its default, as a miniwdl .cfg file; its help is the comment above it."""
    lines = []
    for settings in SECTIONS:
        lines.append(f"[{settings.section}]")
        for _field, declared in settings.declarations():
            lines += textwrap.wrap(
                declared.help.replace("`", ""),
                98,
                initial_indent="# ",
                subsequent_indent="# ",
                break_long_words=False,
                break_on_hyphens=False,
            )
            lines.append(f"{declared.name} = {declared.default}".rstrip())
        lines.append("")
    return "\n".join(lines)


def key_table(section: str, names: Iterable[str] = ()) -> str:
    """The docs' table of a section's keys (those named, else all) as markdown."""
    declared = {
        d.name: d for _field, d in next(s for s in SECTIONS if s.section == section).declarations()
    }
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for name in list(names) or declared:
        default = f"`{declared[name].default}`" if declared[name].default else "(empty)"
        if declared[name].required:
            default = "(empty, required)"
        meaning = declared[name].help.replace("|", "\\|")
        lines.append(f"| `{name}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def rewrite_key_tables(markdown: str) -> str:
    """``markdown`` with each table after a ``<!-- config keys: SECTION [KEY ...] -->`` line
    made anew from the declarations (the docs' tables; tests/unit/test_config_keys.py checks
    them, scripts/key_tables.py rewrites them)."""
    return KEY_TABLE.sub(
        lambda found: (
            found.group(0).split("\n", 1)[0]
            + "\n"
            + key_table(found.group(1), found.group(2).split())
        ),
        markdown,
    )
