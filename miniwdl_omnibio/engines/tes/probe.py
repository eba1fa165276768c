"""Shared-filesystem mode's check at start: one small task proves the workers see mount_path.

TES has no way to ask what a worker mounts, and no server mounts a host directory by default
(Funnel needs a --volume in its worker's RunCommand), so a task reads a token this host wrote
and writes it back; anything else is one line naming the path and the setting to change.
"""

import contextlib
import os
import shutil
import time
import uuid
from functools import partial

import tes

from ...placement.sharedfs import SharedFilesystem
from .client import TesClient, TesProblem
from .status import ACTIVE_STATES, state_of, task_status
from .translate import LAUNCHER_TAG


def probe(
    client: TesClient, fs: SharedFilesystem, image: str, timeout: float, launcher: str
) -> None:
    token = uuid.uuid4().hex
    host_dir = os.path.join(fs.host_root, f".omnibio-probe-{token[:12]}")
    os.makedirs(host_dir)
    os.chmod(host_dir, 0o777)  # the image may run as any user
    try:
        # read the token through mount_path (and the read-only view), write the reply
        worker_dir = fs.to_container(host_dir)
        script = f"cat '{worker_dir}/token' > '{worker_dir}/reply'"
        paths = f"mount_path {fs.container_root}"
        if fs.readonly_root:
            script += f" && cat '{fs.to_container(host_dir, read_only=True)}/token' > /dev/null"
            paths += f" and readonly_mount_path {fs.readonly_root}"
        task = tes.Task(
            name="omnibio-shared-filesystem-probe",
            executors=[tes.Executor(image=image, command=["/bin/sh", "-c", script])],
            resources=tes.Resources(cpu_cores=1),
            tags={LAUNCHER_TAG: launcher, "omnibio.probe": "shared-filesystem"},
        )
        with open(os.path.join(host_dir, "token"), "w") as outfile:
            outfile.write(token)
        task_id = _run(client, task, timeout)
        with contextlib.suppress(OSError), open(os.path.join(host_dir, "reply")) as infile:
            if infile.read().strip() == token:
                return
        status = task_status({**(client.get(task_id, "FULL") or {}), "id": task_id}, False)
        stderr = " ".join(str(status.details.get("tes_stderr_tail") or "no logs").split())
        reason = status.error or f"{status.reason}: {stderr[-200:]}"
        raise TesProblem(
            f"omnibio_tes: the TES server's workers do not see [omnibio_tes] {paths}"
            f" (probe task {task_id}: {reason}); mount the shared filesystem on every "
            f"worker there (Funnel: a --volume in Worker.Container.RunCommand), or leave "
            f"mount_path empty and stage files through staging_uri"
        )
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)


def _run(client: TesClient, task: tes.Task, timeout: float) -> str:
    """Create the task and wait for its end (cancelled after ``timeout`` seconds)."""
    action = "create the shared-filesystem probe task"
    task_id = client.retried(partial(client.create, task.as_dict()), action, again=False)
    deadline = time.monotonic() + timeout
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = state_of(client.get(task_id, "MINIMAL") or {})
        if state not in ACTIVE_STATES:
            return task_id
        time.sleep(0.5)
    with contextlib.suppress(TesProblem):
        client.cancel(task_id)
    raise TesProblem(
        f"omnibio_tes: the shared-filesystem probe task {task_id} was still {state} after "
        f"{timeout:.0f} s ([omnibio_tes] probe_timeout); is the TES server running tasks?"
    )
