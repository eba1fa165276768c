"""How a configuration key is declared: once, as a field of its section's settings dataclass.

A field made by :func:`key` carries the key's default (as written in a .cfg file), its one help
text, its parser and bounds; :meth:`Settings.load` builds the dataclass from miniwdl's config
(a ``[section]`` of a .cfg file, or ``MINIWDL__SECTION__KEY``). Everything else (the defaults
table, ``python -m miniwdl_omnibio config``, the docs' key tables) is read from the
declarations. Checks across keys and values built from several keys go in ``__post_init__``.
"""

import inspect
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from WDL import Error
from WDL._util import parse_byte_size
from WDL.runtime import config as miniwdl_config

if TYPE_CHECKING:  # placement.sharedfs reads this module's ConfigError
    from .placement.sharedfs import SharedFilesystem

# A parser turns a key's text (stripped) into its value, or raises ValueError saying what is
# wrong with it (the loader puts the key's name in front).
Parser = Callable[[str], Any]
REQUIRED = "is required but not set"


class ConfigError(Error.RuntimeError):
    """A configuration problem, reported as one line that names the key."""


def config_error(section: str, name: str, problem: str) -> ConfigError:
    where = f"[{section}] {name} (env MINIWDL__{section.upper()}__{name.upper()})"
    return ConfigError(f"configuration {where}: {problem}")


def text(value: str) -> str:
    return value


def integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an integer") from None


def number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None


def flag(value: str) -> bool:
    value = value.lower()
    if value in ("true", "t", "yes", "y", "1", "on"):
        return True
    if value in ("false", "f", "no", "n", "0", "off", ""):
        return False
    raise ValueError(f"{value!r} is not true or false")


def size(value: str) -> int:
    try:
        return parse_byte_size(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a size such as 4G or 512 MiB") from None


def _json(value: str, kind: type) -> Any:
    try:
        parsed = json.loads(value) if value else kind()
    except ValueError:
        raise ValueError(f"{value!r} is not valid JSON") from None
    if not isinstance(parsed, kind):
        raise ValueError(f"should be a JSON {kind.__name__}")
    return parsed


def json_list(value: str) -> list[Any]:
    return _json(value, list)


def json_object(value: str) -> dict[str, Any]:
    return _json(value, dict)


def words(value: str) -> tuple[str, ...]:
    """Shell-quoted words (extra options for a command)."""
    return tuple(shlex.split(value))


def seconds_or_none(value: str) -> int | None:
    """Whole seconds; 0 is None (no limit)."""
    return integer(value) or None


def optional(parse: Parser) -> Parser:
    """``parse``, but empty is None (a value learned elsewhere, or nothing)."""
    return lambda value: parse(value) if value else None


def choice(options: Sequence[str]) -> Parser:
    def parse(value: str) -> str:
        value = value.lower()
        if value not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value

    return parse


@dataclass(frozen=True)
class Key:
    """One key's declaration (a settings field's metadata)."""

    default: str  # as written in a .cfg file
    help: str  # one text: the printed config's comment and the docs' "meaning" (markdown)
    parse: Parser
    minimum: float | None
    required: bool
    name: str  # the key; "" until its field names it

    def value(self, section: str, written: str) -> Any:
        if self.required and not written:
            raise config_error(section, self.name, REQUIRED)
        try:
            value = self.parse(written)
        except ValueError as exn:
            raise config_error(section, self.name, str(exn)) from None
        if self.minimum is not None and value is not None and value < self.minimum:
            raise config_error(section, self.name, f"{value} is below the minimum {self.minimum}")
        return value


def key(
    default: str,
    help: str,
    parse: Parser = text,
    *,
    minimum: float | None = None,
    choices: Sequence[str] = (),
    required: bool = False,
    name: str = "",
) -> Any:
    """A settings field read from the key ``name`` (default: the field's name)."""
    parse = choice(choices) if choices else parse
    return field(metadata={"key": Key(default, help, parse, minimum, required, name)})


S = TypeVar("S", bound="Settings")


@dataclass(frozen=True)
class Settings:
    """One config section; subclasses declare its keys with :func:`key`."""

    section: ClassVar[str]

    @classmethod
    def declarations(cls) -> list[tuple[str, Key]]:
        """(field, declaration) of every key, in the order a subclass writes them: its own
        fields first (a field it overrides where it overrides it), then its bases'."""
        declared = {f.name: f.metadata["key"] for f in fields(cls) if "key" in f.metadata}
        order = [n for klass in cls.__mro__ for n in inspect.get_annotations(klass)]
        return [
            (name, replace(declared[name], name=declared[name].name or name))
            for name in dict.fromkeys(order)
            if name in declared
        ]

    @classmethod
    def defaults(cls) -> dict[str, str]:
        return {declared.name: declared.default for _name, declared in cls.declarations()}

    @classmethod
    def load(cls: type[S], cfg: miniwdl_config.Loader) -> S:
        """Every key of the section, parsed and checked; the first problem is one line."""
        return cls(
            **{
                name: declared.value(
                    cls.section, cfg.get(cls.section, declared.name, declared.default).strip()
                )
                for name, declared in cls.declarations()
            }
        )

    @classmethod
    def override(cls, field_name: str, default: str, help: str = "", **changes: Any) -> Any:
        """This class's declaration of a field, with another default (and help, parser or
        bounds): a subclass's own value of a key its base declares."""
        (declared,) = [f.metadata["key"] for f in fields(cls) if f.name == field_name]
        changed = replace(declared, default=default, help=help or declared.help, **changes)
        return field(metadata={"key": changed})

    @classmethod
    def fail(cls, name: str, problem: str) -> ConfigError:
        assert name in cls.defaults(), f"undeclared config key [{cls.section}] {name}"
        return config_error(cls.section, name, problem)

    def derive(self, **values: Any) -> None:
        """From ``__post_init__``: sets the ``field(init=False)`` values built from the keys (the
        dataclass is frozen)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class EngineSettings(Settings):
    """The keys every engine has (the shared tracker and miniwdl's clamping read them); an
    engine gives its own default, bounds or help with :meth:`Settings.override`."""

    poll_seconds: float = key("5", "seconds between two status polls", number, minimum=0.1)
    default_time_limit: int | None = key(
        "0",
        "seconds an attempt may run when the task sets no `runtime.omnibio_time_limit`; `0`: no "
        "limit",
        seconds_or_none,
        minimum=0,
    )
    max_cpu: int | None = key(
        "",
        "the most CPUs one task may request (miniwdl clamps `runtime.cpu` to it); empty: learned "
        "from the service",
        optional(integer),
        minimum=1,
    )
    max_memory: int | None = key(
        "",
        "the most memory one task may request (miniwdl clamps `runtime.memory` to it); empty: "
        "learned from the service",
        optional(size),
    )
    # derived, not a key: the run directory as the engine's workers share it; None where they
    # do not (docker, TES with staging)
    filesystem: "SharedFilesystem | None" = field(init=False, default=None)
