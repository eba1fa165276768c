"""What the daemon and the job script say of a container, as a Status with the id of the image it
ran (for the trace: a tag may point elsewhere by the time anyone reads it)."""

from collections.abc import Mapping
from typing import Any

from ..base import QUEUED, RUNNING, Phase, Status
from ..jobscript import ExitRecord

USAGE_SOURCE = "container cgroup, read by the job script"
# a container's status by its state (Docker Engine API, ContainerState.Status) until it ended:
# not here are "exited", "dead" and "removing" (it ended, or is ending)
NOT_ENDED = {"created": QUEUED, "restarting": QUEUED, "running": RUNNING, "paused": RUNNING}


def inspected(state: Mapping[str, Any], image: str) -> Status:
    """A container's status by its inspected State, an ended one's as docker gives it."""
    return NOT_ENDED.get(str(state.get("Status", ""))) or Status(
        Phase.DONE,
        exit_code=int(state["ExitCode"]),
        oom=bool(state.get("OOMKilled")),
        reason=str(state.get("Error") or state.get("Status") or ""),
        details={"image_id": image},
    )


def recorded(record: ExitRecord, image: str) -> Status:
    """An exited container's status by its exit record: the job script exits with the code it
    records, the command's, so it is docker's too; and the cgroup's oom_kill counts what docker's
    OOMKilled counts, the container's cgroup."""
    usage = record.usage()
    details = {"image_id": image} | ({"usage": {**usage, "source": USAGE_SOURCE}} if usage else {})
    return Status(
        Phase.DONE, exit_code=record.exit_code, oom=record.oom, reason="exited", details=details
    )


def removed(handle: str) -> Status:
    """A container the daemon no longer has (it lists its own containers at once)."""
    return Status(Phase.DONE, error=f"docker container {handle[:12]} was removed")
