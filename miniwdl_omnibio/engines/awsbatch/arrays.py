"""Array jobs: attempts that become ready together share one SubmitJob.

The tracker gathers a burst of attempts (gather_seconds: ``array_linger_seconds``, at most
LINGER_ROUNDS times as long); those with the same array_key go to Batch as one array job. Each
child runs the script its index names (``AWS_BATCH_JOB_ARRAY_INDEX``) on the shared filesystem,
so no task's environment counts against the 30 KiB request. Child i is an attempt like any
other, its handle ``<parent id>:i``, the id Batch gives it ("Array jobs"). A lone attempt stays
a plain job.
"""

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import replace

from .translate import JobRequest

# Service quotas: "Maximum array size for array jobs: 10000"; SubmitJob: "between 2 and 10,000"
ARRAY_MIN, ARRAY_MAX = 2, 10_000
LINGER_ROUNDS = 10
ARRAY_DIRECTORY = "omnibio_arrays"  # below the attempts' common directory (the run directory)
# User guide, "AWS Batch job environment variables": AWS_BATCH_JOB_ARRAY_INDEX "is only set in
# child array jobs. The array job index begins at 0"
CHILD_COMMAND = (
    'exec /bin/sh "$1/${AWS_BATCH_JOB_ARRAY_INDEX:?is not set: not an AWS Batch array child}.sh"'
)

ArrayKey = tuple[str, str, tuple[tuple[str, str], ...], int | None]


def array_key(request: JobRequest) -> ArrayKey:
    """What every child of an array shares: queue, job definition, resources, timeout."""
    return (request.queue, request.definition.name, request.resources, request.timeout)


def child_script(request: JobRequest) -> str:
    """The child's script: the attempt's environment, then its plain job's command."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in request.environment.items())
    return exports + "exec " + shlex.join(request.command) + "\n"


def plan_array(
    members: Sequence[JobRequest], name: str, to_container: Callable[[str], str]
) -> tuple[JobRequest, str]:
    """The array job of ``members`` (same array_key): the first's request, whose children each
    run their script, and the host directory of the scripts. Pure: names files, writes none."""
    common = os.path.commonpath([m.host_dir for m in members])
    directory = os.path.join(common, ARRAY_DIRECTORY, name)
    files = {os.path.join(directory, f"{i}.sh"): child_script(m) for i, m in enumerate(members)}
    for member in members:
        files.update(member.files)
    # the parent carries the tags all members share
    shared = {k: v for k, v in members[0].tags.items() if all(m.tags.get(k) == v for m in members)}
    command = ("/bin/sh", "-c", CHILD_COMMAND, "omnibio", to_container(directory))
    array = replace(members[0], name=name, command=command, environment={}, tags=shared)
    return replace(array, files=files, array_size=len(members)), directory


def array_groups(requests: Sequence[JobRequest], most: int = ARRAY_MAX) -> list[list[int]]:
    """The positions of a burst's requests, grouped by array_key in the order they came, at
    most ``most`` a group: one SubmitJob each (a group of one is a plain job)."""
    groups: dict[ArrayKey, list[int]] = {}
    for position, request in enumerate(requests):
        groups.setdefault(array_key(request), []).append(position)
    return [
        group[start : start + most]
        for group in groups.values()
        for start in range(0, len(group), most)
    ]
