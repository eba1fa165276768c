"""The plugin side of the environment contract: what each task container is told.

Pure functions of the task's facts, so tests check them without any engine.
"""

import hashlib
import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from WDL import Env, Value, values_to_json

from .attempt import Mount, Resources
from .runtime.contract import FILE_SUFFIX, PATH_MAPPING_VERSION
from .runtime.uri import ResultUri


@dataclass(frozen=True)
class TaskFacts:
    """What miniwdl knows about the task but does not give a TaskContainer (set by task_plugin)."""

    name: str
    run_id_stack: tuple[str, ...]  # workflow run id, then nested call ids, ending with this call's
    inputs: Env.Bindings  # typed task inputs as given (host paths)


def workflow_run_dir(host_dir: str, run_id_stack: Sequence[str]) -> str:
    """The top run directory: the workflow's (sub-workflows share it), or the task's own."""
    top = host_dir.rstrip("/")
    for _ in range(len(run_id_stack) - 1):
        top = os.path.dirname(top)
    return top


def workflow_run_name(host_dir: str, run_id_stack: Sequence[str]) -> str:
    """The run's name: its top directory's (timestamp_name) and a digest of the host and that
    directory's path. miniwdl never reuses a name within one directory, but runs started the same
    second in two directories (or on two hosts sharing a result prefix) would share it, and the
    backends tag and find a run's work, and place its results, by this name."""
    top = os.path.realpath(workflow_run_dir(host_dir, run_id_stack))
    where = hashlib.sha256(f"{socket.gethostname()}:{top}".encode()).hexdigest()[:8]
    return f"{os.path.basename(top)}-{where}"


def call_path(run_id_stack: Sequence[str]) -> str:
    """The call's path below the workflow run: call-sub/call-align-3, or the task name alone."""
    return "/".join(run_id_stack[1:]) or run_id_stack[0]


def run_id(workflow_run: str, call: str, attempt: int) -> str:
    """RUN_ID = <workflow run dir>.<call path with / as .>.<attempt>"""
    return f"{workflow_run}.{call.replace('/', '.')}.{attempt}"


def result_uri(prefix: ResultUri | None, workflow_run: str, call: str) -> ResultUri | None:
    """RESULT_URI = <prefix>/<workflow run>/<call path>/results.json"""
    return prefix.child(workflow_run, call, "results.json") if prefix else None


def inputs_json(inputs: Env.Bindings, input_path_map: Mapping[str, str]) -> str:
    """The task inputs as JSON with every File/Directory rewritten to its in-container path."""

    def in_container(value: Any) -> str | None:
        path = value.value
        if isinstance(value, Value.Directory):
            mapped = input_path_map.get(path.rstrip("/") + "/")
            return mapped.rstrip("/") if mapped else path
        return input_path_map.get(path, path)

    return json.dumps(values_to_json(Value.rewrite_env_paths(inputs, in_container)), sort_keys=True)


def mount_pairs(mounts: Iterable[Mount | tuple[str, str, bool]]) -> list[tuple[str, str]]:
    """(host_path, container_path) of each mount, given as Mount or as a plain tuple."""
    return [
        (m.host_path, m.container_path) if isinstance(m, Mount) else (m[0], m[1]) for m in mounts
    ]


def path_mapping_rules(mounts: Iterable[Mount | tuple[str, str, bool]]) -> str:
    """PATH_MAPPING_RULES: the launcher's paths to the container's, in Open Job Description's
    pathmapping-1.0 form (wiki/How-Jobs-Are-Run.md, "Path Mapping"); mounts that keep their
    path need no rule."""
    rules = [
        {"source_path_format": "POSIX", "source_path": host, "destination_path": container}
        for host, container in mount_pairs(mounts)
        if host.rstrip("/") != container.rstrip("/")
    ]
    return json.dumps({"version": PATH_MAPPING_VERSION, "path_mapping_rules": rules})


def secret_env(names: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The launcher's secrets a task asks for by name (runtime.omnibio_secrets); ValueError
    names one that is not set. Values go to the task's environment only, never to a log."""
    missing = [name for name in names if name not in environ]
    if missing:
        raise ValueError(
            f"runtime.omnibio_secrets names {', '.join(missing)}, not set in the launcher's"
            " environment"
        )
    return {name: environ[name] for name in names}


def contract_env(
    *,
    tool_id: str,
    run_id_value: str,
    inputs_json_value: str,
    resources: Resources,
    result: ResultUri | None,
    result_max_bytes: int | None = None,
    path_mapping: str | None = None,
    secret_names: Sequence[str] = (),
) -> dict[str, str]:
    env = {
        "TOOL_ID": tool_id,
        "RUN_ID": run_id_value,
        "INPUTS_JSON": inputs_json_value,
        "RESOURCES_JSON": json.dumps(resources.as_contract(), sort_keys=True),
    }
    if result:
        env["RESULT_URI"] = str(result)
        if result.scheme == "s3":
            env["S3_RESULT_URI"] = str(result)
    if result_max_bytes is not None:
        env["RESULT_MAX_BYTES"] = str(result_max_bytes)
    if path_mapping is not None:
        env["PATH_MAPPING_RULES"] = path_mapping
    if secret_names:
        env["OMNIBIO_SECRETS"] = json.dumps(list(secret_names))
    return env


def spill_large_values(
    env: dict[str, str], max_bytes: int, container_dir: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Values longer than ``max_bytes`` go to files: NAME is replaced by NAME_FILE.

    Linux caps one environment string at 128 KiB, and all of them together at a few MiB, so a
    task with thousands of File inputs cannot carry INPUTS_JSON inline. Returns the new env and
    {name: value} of what to write to ``container_dir``/NAME (the caller writes it).
    """
    out: dict[str, str] = {}
    spilled: dict[str, str] = {}
    for name, value in env.items():
        if len(value.encode("utf-8")) <= max_bytes:
            out[name] = value
        else:
            out[name + FILE_SUFFIX] = os.path.join(container_dir, name)
            spilled[name] = value
    return out, spilled
