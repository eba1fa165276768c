"""The largest job the job queues can place, learned from their compute environments.

miniwdl clamps runtime.cpu and runtime.memory to the engine's limits; static guesses would let a
task ask for more than any instance has (the job then waits in RUNNABLE forever) or clamp it
below what the queue could give. A managed EC2/SPOT compute environment names its instance
types and its maxvCpus (API_ComputeResource); EC2 DescribeInstanceTypes gives their sizes.
"""

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import botocore.exceptions
from WDL._util import StructuredLogMessage as _

from .status import error_text

# API_ComputeResource instanceTypes: the families Batch picks from for these names ("optimal"
# moves to default_x86_64's families from 11/2025; both are counted so no size is refused)
FAMILY_SETS = {
    "optimal": ("c4", "m4", "r4", "c5", "m5", "r5", "m6i", "c6i", "r6i", "c7i"),
    "default_x86_64": ("m6i", "c6i", "r6i", "c7i"),
    "default_arm64": ("m6g", "c6g", "r6g", "c7g"),
}
# "Compute resource memory management": an instance registers less memory than it has (kernel,
# ECS agent; the docs recommend leaving 5% to the system), so a job may ask for 95% at most
MEMORY_SHARE = 0.95
MiB = 1 << 20


def _expand(names: Iterable[str]) -> set[str]:
    """Instance types (``m5.2xlarge``) and families (``c5``), those of FAMILY_SETS' names too."""
    return {each for name in names for each in FAMILY_SETS.get(name, (name,))}


def instance_type_filters(names: Iterable[str]) -> list[str]:
    """DescribeInstanceTypes "instance-type" filter values for a compute environment's
    instanceTypes: a size as it is, a family as "family.*" (EC2 filters take wildcards)."""
    return sorted(each if "." in each else each + ".*" for each in _expand(names))


def environment_limit(
    resources: Mapping[str, Any], sizes: Mapping[str, tuple[int, int]]
) -> tuple[int, int] | None:
    """(vCPUs, bytes) of the largest job a compute environment can place, from its
    computeResources and the (vCPUs, MiB) of each instance type; None if it names none known."""
    wanted = _expand(resources.get("instanceTypes") or [])
    known = [size for t, size in sizes.items() if t in wanted or t.split(".")[0] in wanted]
    if not known:
        return None
    cpu = max(c for c, _m in known)
    if resources.get("maxvCpus"):
        cpu = min(cpu, int(resources["maxvCpus"]))
    memory = int(max(m for _c, m in known) * MEMORY_SHARE) * MiB
    return cpu, memory


def learn(
    batch: Any, ec2: Any, queues: Iterable[Mapping[str, Any]], logger: logging.Logger
) -> dict[str, int]:
    """{"cpu", "mem_bytes"} a job may ask for on every given queue (each queue: its largest
    compute environment), or {} when nothing can be learned (unmanaged or Fargate environments,
    or no permission to ask): the caller then keeps its configured or default limits."""
    by_queue = {
        q["jobQueueName"]: [e["computeEnvironment"] for e in q.get("computeEnvironmentOrder", [])]
        for q in queues
    }
    try:
        names = sorted({e for envs in by_queue.values() for e in envs})
        described = batch.describe_compute_environments(computeEnvironments=names)
        managed: dict[str, Mapping[str, Any]] = {}  # by ARN and by name
        for environment in described["computeEnvironments"]:
            resources = environment.get("computeResources") or {}
            if environment.get("type") == "MANAGED" and resources.get("type") in ("EC2", "SPOT"):
                managed[environment["computeEnvironmentArn"]] = resources
                managed[environment["computeEnvironmentName"]] = resources
        filters = instance_type_filters(
            t for r in managed.values() for t in r.get("instanceTypes") or []
        )
        sizes: dict[str, tuple[int, int]] = {}
        if filters:
            paginator = ec2.get_paginator("describe_instance_types")
            for page in paginator.paginate(Filters=[{"Name": "instance-type", "Values": filters}]):
                for found in page["InstanceTypes"]:
                    sizes[found["InstanceType"]] = (
                        int(found["VCpuInfo"]["DefaultVCpus"]),
                        int(found["MemoryInfo"]["SizeInMiB"]),
                    )
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exn:
        logger.warning(_("could not learn the queues' largest instances", error=error_text(exn)))
        return {}
    per_queue = []
    for queue, envs in by_queue.items():
        found = [environment_limit(managed[e], sizes) for e in envs if e in managed]
        limits = [limit for limit in found if limit is not None]
        if limits:
            per_queue.append((max(c for c, _m in limits), max(m for _c, m in limits)))
        else:
            logger.info(_("no managed EC2 compute environment to learn limits from", queue=queue))
    if not per_queue:
        return {}
    return {"cpu": min(c for c, _m in per_queue), "mem_bytes": min(m for _c, m in per_queue)}
