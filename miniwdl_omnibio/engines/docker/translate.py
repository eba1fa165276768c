"""A TaskAttempt as the container omnibio_docker creates for it. Pure: no daemon, no files."""

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from docker.types import DeviceRequest
from docker.types import Mount as DockerMount

from ...attempt import TaskAttempt
from ..jobscript import command, exit_record

# One value per miniwdl process, "<host>:<pid namespace>:<pid>:<random>": what shutdown removes,
# and what a later run on this host uses to remove what a killed process left behind.
LAUNCHER_LABEL = "omnibio.launcher"
# the directory of the task's host directory that holds its attempts' exit records, mounted at
# the same place under the task's container directory (the parent of its working directory)
RECORD_DIR = "omnibio_record"
# a record written as root goes to the launcher's user: miniwdl chmods the whole run directory
# at the end (WDL.runtime.task: chmod_R_plus), which fails on a file another user owns (a
# launcher running as root owns it already: two processes less per task)
HAND_BACK = (
    f'[ "$(id -u 2>/dev/null)" = 0 ] && chown {os.geteuid()}:{os.getegid()} "$EXIT" 2>/dev/null'
    if os.geteuid()
    else ""
)


@dataclass(frozen=True)
class DockerRequest:
    """Everything create_container needs, but the image id and network the host resolves."""

    image: str
    argv: tuple[str, ...]
    workdir: str
    env: Mapping[str, str]
    user: str | None
    labels: Mapping[str, str]
    name: str  # a random suffix is added at submission
    host_config: Mapping[str, Any]  # create_host_config keywords, network_mode aside
    network: str | None  # runtime.docker_network when allowed; None: the engine's network
    record: str  # host path of the attempt's exit record (its directory is made at submission)
    notes: tuple[str, ...] = ()  # warnings for the task log (e.g. a refused docker_network)


def docker_request(
    attempt: TaskAttempt, launcher: str, allow_networks: tuple[str, ...]
) -> DockerRequest:
    resources = attempt.resources
    record_dir = posixpath.join(posixpath.dirname(attempt.workdir), RECORD_DIR)
    host_record_dir = os.path.join(attempt.host_dir, RECORD_DIR)
    mounts = [
        DockerMount(m.container_path, m.host_path, type="bind", read_only=m.read_only)
        for m in attempt.mounts
    ]
    host_config: dict[str, Any] = dict(
        mounts=[*mounts, DockerMount(record_dir, host_record_dir, type="bind")],
        nano_cpus=resources.cpu * 1_000_000_000,
        group_add=[str(os.getegid())],
        privileged=attempt.privileged,
    )
    if resources.memory_limit:
        host_config["mem_limit"] = resources.memory_limit
    if resources.memory_reservation:
        host_config["mem_reservation"] = min(
            resources.memory_reservation, resources.memory_limit or resources.memory_reservation
        )
    if resources.gpu:
        host_config["device_requests"] = [
            DeviceRequest(count=resources.gpu, capabilities=[["gpu"]])
        ]
    requested = attempt.runtime.get("docker_network")
    allowed = requested in allow_networks
    notes: tuple[str, ...] = ()
    if requested and not allowed:
        notes = (
            f"runtime.docker_network {requested!r} ignored: not in [omnibio_docker] allow_networks",
        )
    safe_run_id = "".join(c if c.isalnum() or c in "_.-" else "-" for c in attempt.run_id)
    record = exit_record(record_dir, attempt.attempt)
    missing = f"{record_dir} is not mounted"  # docker refuses a missing bind source first
    return DockerRequest(
        image=attempt.image,
        argv=tuple(
            command(attempt.argv, record, record_dir, missing, in_place=True, recorded=HAND_BACK)
        ),
        workdir=attempt.workdir,
        env=attempt.env,
        user=attempt.user,
        labels={**attempt.tags, LAUNCHER_LABEL: launcher},
        name=f"omnibio-{safe_run_id[-160:]}",
        host_config=host_config,
        network=str(requested) if requested and allowed else None,
        record=exit_record(host_record_dir, attempt.attempt),
        notes=notes,
    )
