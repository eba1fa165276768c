"""Reading the environment contract inside a tool container."""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The contract's variables, in the order the README documents them.
CONTRACT_VARIABLES = (
    "TOOL_ID",
    "RUN_ID",
    "INPUTS_JSON",
    "RESOURCES_JSON",
    "RESULT_URI",
    "S3_RESULT_URI",
)
# A value too large for one environment string is written to a file and NAME_FILE points at it.
FILE_SUFFIX = "_FILE"


@dataclass(frozen=True)
class Contract:
    tool_id: str
    run_id: str
    inputs: dict[str, Any]
    resources: dict[str, Any]
    result_uri: str | None


def _value(env: Mapping[str, str], name: str) -> str | None:
    if name in env:
        return env[name]
    path = env.get(name + FILE_SUFFIX)
    if path:
        with open(path, encoding="utf-8") as infile:
            return infile.read()
    return None


def read_contract(env: Mapping[str, str] | None = None) -> Contract:
    """Read the contract from the environment; KeyError names a missing variable."""
    env = os.environ if env is None else env
    values = {}
    for name in ("TOOL_ID", "RUN_ID", "INPUTS_JSON", "RESOURCES_JSON"):
        value = _value(env, name)
        if value is None:
            raise KeyError(f"environment contract variable {name} is not set")
        values[name] = value
    return Contract(
        tool_id=values["TOOL_ID"],
        run_id=values["RUN_ID"],
        inputs=json.loads(values["INPUTS_JSON"]),
        resources=json.loads(values["RESOURCES_JSON"]),
        result_uri=_value(env, "RESULT_URI") or _value(env, "S3_RESULT_URI") or None,
    )
