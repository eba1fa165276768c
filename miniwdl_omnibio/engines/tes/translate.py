"""Pure translation of a TaskAttempt into a TES v1.1 task with one executor: resources,
backend_parameters, tags, and in staging mode the plan of its files and the command around the
task's. No I/O: inputs are hashed and uploaded at submission (``Stager.files``)."""

import posixpath
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import tes
from WDL import Error

from ...attempt import TaskAttempt
from ...runtime.store import ObjectStore
from .settings import TesSettings, string_map
from .staging import MINIWDL_INPUTS, StagePlan, plan

LAUNCHER_TAG = "omnibio.launcher"  # one value per miniwdl process: what polling and shutdown list
# The end of stderr the executor also writes to its own stderr, so a server's executor log
# carries it even where outputs of a failed task are not uploaded (TESK's taskmaster stops
# before its output filer when an executor fails).
STDERR_ECHO_BYTES = 65536


@dataclass(frozen=True)
class TesRequest:
    """A TES task for one attempt; in staging mode its inputs are staged at submission."""

    task: tes.Task
    notes: tuple[str, ...] = ()  # warnings for the task log (a GPU TES cannot request, ...)
    staging: StagePlan | None = None


def tes_request(
    attempt: TaskAttempt,
    settings: TesSettings,
    launcher: str,
    supported: Collection[str],
    store: ObjectStore | None,
) -> TesRequest:
    """The attempt's task; ``supported``: the backend_parameters the server lists (lower case);
    ``store``: the staging store (None: the workers share the filesystem)."""
    resources, strict = attempt.resources, settings.backend_parameters_strict
    runtime = attempt.runtime.get("omnibio_backend_parameters", {})
    override = string_map(runtime, "runtime.omnibio_backend_parameters")
    parameters = merge_parameters(settings.backend_parameters, override)
    problem = unsupported_parameters(parameters, supported, settings.url)
    if problem and strict:
        raise Error.RuntimeError(
            f"runtime.omnibio_backend_parameters: {problem} and [omnibio_tes] "
            "backend_parameters_strict = true"
        )
    notes = [problem] if problem else []
    if resources.gpu:
        notes.append(
            "TES 1.1 has no GPU resource; request one through runtime.omnibio_backend_parameters"
        )
    if attempt.user or attempt.privileged:
        notes.append("TES has no container user or privileged mode; the image's defaults apply")
    command, outputs, staging = list(attempt.argv), None, None
    if store:  # else the workers mount the shared filesystem where SharedPlacement's mounts say
        staging = plan(attempt, store, f"{attempt.workflow_run}.{launcher}")
        command = staged_command(attempt, staging)
        outputs = staged_outputs(staging, store)
    executor = tes.Executor(
        image=attempt.image, command=command, workdir=attempt.workdir, env=dict(attempt.env)
    )
    task = tes.Task(
        name=attempt.run_id,
        description=f"{attempt.workflow_run} {attempt.call} attempt {attempt.attempt}",
        executors=[executor],
        outputs=outputs,
        resources=tes.Resources(
            cpu_cores=resources.cpu,
            ram_gb=gigabytes(resources.memory_limit or resources.memory_reservation),
            disk_gb=gigabytes(resources.disk),
            preemptible=resources.preemptible,
            backend_parameters=parameters or None,
            backend_parameters_strict=strict if parameters else None,
        ),
        tags={**attempt.tags, LAUNCHER_TAG: launcher},
    )
    return TesRequest(task, tuple(notes), staging)


def supported_backend_parameters(info: Mapping[str, Any]) -> frozenset[str]:
    """service-info's tesResources_backend_parameters (its name in any case), in lower case."""
    name = "tesresourcesbackendparameters"
    value: Any = next((v for k, v in info.items() if k.replace("_", "").lower() == name), [])
    return frozenset(str(v).lower() for v in value) if isinstance(value, list) else frozenset()


def unsupported_parameters(
    parameters: Mapping[str, str], supported: Collection[str], url: str
) -> str | None:
    """The problem with backend_parameters the server's service-info does not list."""
    unsupported = sorted(k for k in parameters if k.lower() not in supported)
    if not unsupported:
        return None
    listed = ", ".join(sorted(supported)) or "none"
    return (
        f"the TES server at {url} does not support backend_parameters "
        f"{', '.join(unsupported)} (its service-info lists: {listed})"
    )


def merge_parameters(base: Mapping[str, str], override: Mapping[str, str]) -> dict[str, str]:
    """backend_parameters keys are case-insensitive (the spec; TES on Azure rejects two keys
    that differ only by case): a key of ``override`` replaces ``base``'s key of any case."""
    last = {key.lower(): key for key in override}  # the last of keys differing only by case
    kept = {key: value for key, value in base.items() if key.lower() not in last}
    return kept | {key: value for key, value in override.items() if last[key.lower()] == key}


def gigabytes(size: int | None) -> float | None:
    """TES sizes are in GB; rounding up to the MB never grants less than asked."""
    return -(-size // 1_000_000) / 1000 if size else None


def staged_command(attempt: TaskAttempt, plan: StagePlan) -> list[str]:
    """The attempt's command, with around it: make each output's directory (poiesis fails a
    task whose output directory does not exist; Funnel makes them), then, whatever the command
    exits with, drop the input copies below the working directory (it is an output; the host
    has the inputs) and repeat the end of stderr on the executor's stderr."""
    stderr = next(o.container_path for o in plan.outputs if o.host_path == attempt.stderr_path)
    paths = [(output.container_path, output.directory) for output in plan.outputs]
    directories = sorted({path if is_dir else posixpath.dirname(path) for path, is_dir in paths})
    inputs = shlex.quote(f"{attempt.workdir}/{MINIWDL_INPUTS}")
    script = (
        f"mkdir -p {shlex.join(directories)} 2>/dev/null; "
        f"({shlex.join(attempt.argv)}); rc=$?; rm -rf {inputs} 2>/dev/null; "
        f"tail -c {STDERR_ECHO_BYTES} {shlex.quote(stderr)} >&2 2>/dev/null; exit $rc"
    )
    return ["/bin/sh", "-c", script]


def staged_outputs(plan: StagePlan, store: ObjectStore) -> list[tes.Output]:
    return [
        tes.Output(
            url=store.url(output.key),
            path=output.container_path,
            type="DIRECTORY" if output.directory else "FILE",
            name=output.key.rsplit("/", 1)[-1],
        )
        for output in plan.outputs
    ]
