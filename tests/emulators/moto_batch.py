"""moto server, with its AWS Batch made to do what AWS Batch documents and moto 5 does not.

    python -m tests.emulators.moto_batch -H 127.0.0.1 -p PORT     # as python -m moto.server

What a proxy in front of moto can change (answers, faults) is in moto_proxy.py; these two are
inside the job, where no proxy reaches:

1. A child of an array job gets ``AWS_BATCH_JOB_ARRAY_INDEX`` in its environment. AWS Batch user
   guide, "AWS Batch job environment variables": "This variable is only set in child array
   jobs. The array job index begins at 0". moto sets only AWS_BATCH_JOB_ID (and appends it to
   the request's environment list on every DescribeJobs, a list an array's children share, so
   it grows without end: here the environment is merged afresh each time).
2. DescribeJobs gives ``container.exitCode`` of a job whose container exited. API_ContainerDetail
   exitCode: "The exit code returned upon completion." moto 5 computes it but drops it from
   DescribeJobs (its ListJobs summaries keep it).
3. An array's parent job follows its children. User guide, "Array jobs": "The parent array job
   can enter a SUBMITTED, PENDING, FAILED, or SUCCEEDED status. An array parent job is updated
   to PENDING when any child job is updated to RUNNABLE." guess: that it ends SUCCEEDED when
   every child succeeded and FAILED otherwise, once all have ended (not stated). moto leaves a
   parent SUBMITTED for ever unless every child succeeds.
4. A mount point without ``readOnly`` is writable. API_MountPoint readOnly: "The default value
   is false." moto fails the job on a missing key (miniwdl-aws leaves it out).
5. A managed compute environment runs at most ``maxvCpus`` vCPUs of jobs at once; the others
   wait (API_ComputeResource maxvCpus: "The maximum number of vCPUs that a compute environment
   can support"; "Jobs stuck in a RUNNABLE status": a job waits in RUNNABLE for capacity). moto
   starts every job at once, which a 2-core host's dockerd cannot take for a thousand jobs.
   guess: here a waiting job shows SUBMITTED, not RUNNABLE (both are queued to the engine).
   Unmanaged environments keep moto's behaviour.
6. Terminating an array's parent terminates its children. API_CancelJob: "When you try to cancel
   an array parent job in PENDING, AWS Batch attempts to cancel all child jobs"; Nextflow stops
   an array by TerminateJob of its parent's id (AwsBatchTaskHandler.killTask, normaliseJobId).
   guess: API_TerminateJob does not say it of parents in words; children already ended keep
   their status. moto marks only the parent, which never runs, so its children ran on.
"""

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from moto import server
from moto.batch import models
from moto.moto_api._internal.managed_state_model import ManagedState

ENDED = ("SUCCEEDED", "FAILED")


def _patch() -> None:
    job = models.Job
    for name in ("_get_container_property", "_container_details", "terminate"):
        if not hasattr(job, name):
            raise RuntimeError(f"moto {models.__name__}.Job has no {name}: update moto_batch.py")
    container_property = job._get_container_property
    container_details = job._container_details

    def get_container_property(self: Any, name: str, default: Any) -> Any:
        if name == "environment":
            return _environment(self)
        value = container_property(self, name, default)
        if name == "mountPoints":
            value = [{"readOnly": False, **point} for point in value]
        return value

    def describe_container(self: Any) -> dict[str, Any]:
        details = container_details(self)
        if self.job_stopped and self.exit_code is not None:
            details["exitCode"] = self.exit_code
        return dict(details)

    job._get_container_property = get_container_property
    job._container_details = describe_container
    job.status = property(_status, ManagedState.status.fset)  # type: ignore[assignment]
    run = job.run

    def run_within_capacity(self: Any) -> None:
        capacity = _capacity(self)
        if capacity is None:
            return run(self)
        with capacity.hold(_vcpus(self), lambda: self.stop):
            if self.stop:  # terminated while it waited: it never starts
                return self._mark_stopped(success=False)
            return run(self)

    job.run = run_within_capacity
    terminate = job.terminate

    def terminate_with_children(self: Any, reason: str) -> None:
        terminate(self, reason)
        for child in getattr(self, "_child_jobs", None) or []:
            if child.status not in ENDED:
                child.terminate(reason)

    job.terminate = terminate_with_children


class Capacity:
    """The vCPUs of one compute environment: a job holds its share while it runs."""

    def __init__(self, vcpus: int) -> None:
        self.total = self.free = vcpus
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, vcpus: int, cancelled: Callable[[], bool]) -> Iterator[None]:
        vcpus = min(vcpus, self.total)
        with self._cond:
            while self.free < vcpus and not cancelled():
                self._cond.wait(0.5)
            self.free -= vcpus
        try:
            yield
        finally:
            with self._cond:
                self.free += vcpus
                self._cond.notify_all()


def _environment(job: Any) -> list[dict[str, str]]:
    """The job definition's environment, the request's over it, and what Batch sets."""
    merged = {
        e["name"]: e["value"]
        for e in job.job_definition.container_properties.get("environment", [])
    }
    merged.update({e["name"]: e["value"] for e in job.container_overrides.get("environment", [])})
    merged["AWS_BATCH_JOB_ID"] = job.job_id
    index = (job.array_properties or {}).get("index")
    if index is not None:
        merged["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
    return [{"name": k, "value": v} for k, v in merged.items()]


def _vcpus(job: Any) -> int:
    for requirement in job.container_overrides.get("resourceRequirements") or []:
        if requirement["type"] == "VCPU":
            return max(1, int(float(requirement["value"])))
    return 1


CAPACITIES: dict[str, Capacity] = {}
CAPACITIES_LOCK = threading.Lock()


def _capacity(job: Any) -> Capacity | None:
    """The capacity of the job queue's first managed compute environment, if any."""
    for environment in job.job_queue.environments:
        resources = environment.compute_resources or {}
        if environment.env_type == "MANAGED" and resources.get("maxvCpus"):
            with CAPACITIES_LOCK:
                if environment.arn not in CAPACITIES:
                    CAPACITIES[environment.arn] = Capacity(int(resources["maxvCpus"]))
                return CAPACITIES[environment.arn]
    return None


def _status(self: Any) -> str | None:
    children = getattr(self, "_child_jobs", None)
    if not children:
        return ManagedState.status.fget(self)  # type: ignore[attr-defined]
    states = [child.status for child in children]
    if all(state in ENDED for state in states):
        return "FAILED" if "FAILED" in states else "SUCCEEDED"
    return "SUBMITTED" if all(state == "SUBMITTED" for state in states) else "PENDING"


if __name__ == "__main__":
    _patch()
    server.main(sys.argv[1:])
