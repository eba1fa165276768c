"""omnibio_azurebatch, translation: a TaskAttempt as a Batch container task, and task collections
cut to the service's limits. Pure: nothing here talks to the service."""

import hashlib
import json
import math
import os
import shlex
from datetime import timedelta

from azure.batch import models as batch_models
from WDL import Error

from ...attempt import TaskAttempt
from ..jobscript import command as jobscript_command
from ..jobscript import double_quoted, exit_record
from .pool import GPU_FAMILY
from .settings import ID_LENGTH, INVALID_ID_CHARACTERS, AzureBatchSettings

Task = batch_models.BatchTaskCreateOptions  # one attempt, as Batch takes it
COLLECTION_MAX = 100  # tasks per addtaskcollection request (BatchTaskGroup.value: "at most 100")
# "The total serialized size of this collection must be less than 1MB" (BatchTaskGroup.value);
# whether 1 MB is 10^6 or 2^20 bytes is not said: stay well under both
COLLECTION_BYTES = 900_000


def batch_id(text: str, limit: int = ID_LENGTH) -> str:
    """A valid Batch id for ``text``. Ids are case-insensitive and at most 64 long: one with
    capitals, or too long, keeps its head plus a hash of the whole, so texts stay distinct."""
    clean = INVALID_ID_CHARACTERS.sub("-", text).strip("-") or "x"
    if len(clean) <= limit and clean == clean.lower():
        return clean
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
    return f"{clean[: limit - 11]}-{digest}"


def batch_task(
    attempt: TaskAttempt, settings: AzureBatchSettings, pool: batch_models.BatchPool, max_cpu: int
) -> Task:
    """The attempt as a Batch task (its job and its exit record follow from the attempt)."""
    if attempt.resources.gpu and not GPU_FAMILY.match(pool.vm_size or ""):
        raise Error.RuntimeError(
            f"runtime.gpu: Azure Batch pool {pool.id} has vmSize {pool.vm_size}, "
            "which has no GPU; use a pool of a GPU size (NC, ND, NV ...)"
        )
    time_limit = attempt.resources.time_limit
    # slots in proportion to the node's CPUs, on pools that run several tasks per node
    slots = int(pool.task_slots_per_node or 1)
    share = math.ceil(attempt.resources.cpu / (max_cpu / slots))
    # Batch maps the task's user into a Linux container and a non-admin auto-user may lack
    # access (batch-docker-container-workloads): root in the container needs the pool-scope
    # auto-user with admin elevation, as Microsoft's TES on Azure sets it
    admin = batch_models.AutoUserSpecification(scope="pool", elevation_level="admin")
    identity = batch_models.UserIdentity(auto_user=admin) if settings.auto_user_admin else None
    return Task(
        id=batch_id(f"{attempt.call.replace('/', '-')}-{attempt.attempt}"),
        display_name=attempt.run_id[:1024],
        # a container task's command line is the container's command (no shell): argv quoted
        command_line=shlex.join(command(attempt, settings)),
        container_settings=batch_models.BatchTaskContainerSettings(
            image_name=attempt.image,
            container_run_options=run_options(attempt, settings),
            working_directory="containerImageDefault",
        ),
        environment_settings=[
            batch_models.EnvironmentSetting(name=k, value=v) for k, v in attempt.env.items()
        ],
        constraints=batch_models.BatchTaskConstraints(
            max_wall_clock_time=timedelta(seconds=time_limit) if time_limit else None,
            max_task_retry_count=0,
        ),
        required_slots=max(1, min(slots, share)) if slots > 1 else None,
        user_identity=identity,
    )


def run_options(attempt: TaskAttempt, settings: AzureBatchSettings) -> str:
    """containerRunOptions. The docs say a command line overrides the image's ENTRYPOINT, users
    report it becomes the COMMAND after it: clearing the ENTRYPOINT works either way. No --gpus:
    Batch enables the GPUs of a GPU pool's nodes for container tasks itself."""
    resources = attempt.resources
    options = ["--entrypoint=", "--cpus", str(resources.cpu)]
    # runtime.memory is a hard limit here (tasks share nodes), as on other batch services
    memory = resources.memory_limit or resources.memory_reservation
    if memory:
        options += ["--memory", str(memory)]
    if resources.memory_reservation and resources.memory_reservation < memory:
        options += ["--memory-reservation", str(resources.memory_reservation)]
    for mount in attempt.mounts:  # where a pool node sees the shared filesystem's path
        relative = os.path.relpath(mount.host_path, settings.filesystem.host_root)
        source = os.path.normpath(os.path.join(settings.node_root, relative))
        options += ["-v", f"{source}:{mount.container_path}" + (":ro" if mount.read_only else "")]
    options += ["--workdir", attempt.workdir]
    if attempt.user:
        options += ["--user", attempt.user]
    if attempt.privileged:
        options.append("--privileged")
    for name, value in attempt.tags.items():
        options += ["--label", f"{name}={value}"]
    return shlex.join(options + list(settings.extra_run_options))


def command(attempt: TaskAttempt, settings: AzureBatchSettings) -> list[str]:
    """attempt.argv in the job script. On a node without the shared filesystem the command's error
    would land in an unseen file; the script's check says so in Batch's stderr.txt instead."""
    to_container = settings.filesystem.to_container
    record = to_container(exit_record(attempt.host_dir, attempt.attempt))
    stdout = to_container(attempt.stdout_path)  # miniwdl makes it before submitting
    missing = (
        f"{double_quoted(stdout)} is not visible on Azure Batch node $AZ_BATCH_NODE_ID; the pool "
        f"must mount the shared filesystem at {double_quoted(settings.node_root)} "
        "([omnibio_azurebatch] node_mount_path, see the README)"
    )
    return jobscript_command(attempt.argv, record, stdout, missing)


def split_collection(tasks: list[Task]) -> list[list[Task]]:
    """Consecutive groups of at most COLLECTION_MAX tasks and COLLECTION_BYTES serialized."""
    groups: list[list[Task]] = []
    size = 0
    for task in tasks:
        task_size = len(json.dumps(task.as_dict(), default=str).encode("utf-8"))
        if not groups or len(groups[-1]) >= COLLECTION_MAX or size + task_size > COLLECTION_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(task)
        size += task_size
    return groups
