"""Reading the environment contract inside a tool container."""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The contract's variables, in the order docs/runtime.md documents them.
CONTRACT_VARIABLES = (
    "TOOL_ID",
    "RUN_ID",
    "INPUTS_JSON",
    "RESOURCES_JSON",
    "RESULT_URI",
    "S3_RESULT_URI",
    "RESULT_MAX_BYTES",
    "PATH_MAPPING_RULES",
    "OMNIBIO_SECRETS",
)
REQUIRED = ("TOOL_ID", "RUN_ID", "INPUTS_JSON", "RESOURCES_JSON")
# A value too large for one environment string is written to a file and NAME_FILE points at it.
FILE_SUFFIX = "_FILE"
DEFAULT_RESULT_MAX_BYTES = 1 << 20  # [omnibio] result_max_bytes
PATH_MAPPING_VERSION = "pathmapping-1.0"


@dataclass(frozen=True)
class Contract:
    tool_id: str
    run_id: str
    inputs: Any
    resources: Any
    result_uri: str | None
    result_max_bytes: int = DEFAULT_RESULT_MAX_BYTES
    # openjd pathmapping-1.0 rules: the launcher's paths -> this container's
    path_mapping_rules: list[dict[str, str]] = field(default_factory=list)
    # names of the environment variables that carry the launcher's secrets
    secret_names: tuple[str, ...] = ()

    def map_path(self, path: str) -> str:
        """A launcher path as this container sees it (unchanged when no rule matches)."""
        return map_path(path, self.path_mapping_rules)


def value(env: Mapping[str, str], name: str) -> str | None:
    """A contract variable, read from NAME or else from the file NAME_FILE names."""
    if name in env:
        return env[name]
    path = env.get(name + FILE_SUFFIX)
    if path:
        with open(path, encoding="utf-8") as infile:
            return infile.read()
    return None


def _json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exn:
        raise ValueError(f"bad {name}: {exn}") from None


def path_mapping_rules(text: str | None) -> list[dict[str, str]]:
    """The rules of a pathmapping-1.0 document; ValueError names what is wrong."""
    if not text:
        return []
    document = _json("PATH_MAPPING_RULES", text)
    if not isinstance(document, dict) or document.get("version") != PATH_MAPPING_VERSION:
        raise ValueError(f"bad PATH_MAPPING_RULES: not a {PATH_MAPPING_VERSION} document")
    rules = document.get("path_mapping_rules", [])
    if not isinstance(rules, list) or not all(
        isinstance(r, dict) and {"source_path", "destination_path"} <= r.keys() for r in rules
    ):
        raise ValueError("bad PATH_MAPPING_RULES: each rule needs source_path and destination_path")
    return rules


def map_path(path: str, rules: list[dict[str, str]]) -> str:
    """Apply openjd path mapping: rules by decreasing source path length, the first whose
    source path is the path or one of its parent directories wins (POSIX source paths)."""
    for rule in sorted(rules, key=lambda r: len(r["source_path"]), reverse=True):
        source = rule["source_path"].rstrip("/") or "/"
        if path == source:
            return rule["destination_path"]
        if path.startswith(source if source == "/" else source + "/"):
            return rule["destination_path"].rstrip("/") + "/" + path[len(source) :].lstrip("/")
    return path


def read_contract(env: Mapping[str, str] | None = None, *, required: bool = True) -> Contract:
    """Read the contract from the environment. A missing variable raises KeyError naming it
    (or, with ``required=False``, reads as empty as upstream's runtime does); a value that is
    not JSON raises ValueError naming it."""
    env = os.environ if env is None else env
    values = {}
    for name in REQUIRED:
        text = value(env, name)
        if text is None and required:
            raise KeyError(f"environment contract variable {name} is not set")
        values[name] = text if text is not None else ("{}" if name.endswith("_JSON") else "")
    secrets = value(env, "OMNIBIO_SECRETS")
    return Contract(
        tool_id=values["TOOL_ID"],
        run_id=values["RUN_ID"],
        inputs=_json("INPUTS_JSON", values["INPUTS_JSON"]),
        resources=_json("RESOURCES_JSON", values["RESOURCES_JSON"]),
        result_uri=value(env, "RESULT_URI") or value(env, "S3_RESULT_URI") or None,
        result_max_bytes=int(value(env, "RESULT_MAX_BYTES") or DEFAULT_RESULT_MAX_BYTES),
        path_mapping_rules=path_mapping_rules(value(env, "PATH_MAPPING_RULES")),
        secret_names=tuple(_json("OMNIBIO_SECRETS", secrets)) if secrets else (),
    )
