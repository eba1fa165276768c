"""moto server, with its AWS Batch made to do what AWS Batch documents and moto 5 does not.

    python -m tests.emulators.moto_batch -H 127.0.0.1 -p PORT     # as python -m moto.server

What a proxy in front of moto can change (answers, faults) is in moto_proxy.py; these two are
inside the job, where no proxy reaches:

1. A child of an array job gets ``AWS_BATCH_JOB_ARRAY_INDEX`` in its environment. AWS Batch user
   guide, "AWS Batch job environment variables": "This variable is only set in child array
   jobs. The array job index begins at 0". moto sets only AWS_BATCH_JOB_ID.
2. DescribeJobs gives ``container.exitCode`` of a job whose container exited. API_ContainerDetail
   exitCode: "The exit code returned upon completion." moto 5 computes it but drops it from
   DescribeJobs (its ListJobs summaries keep it).
3. An array's parent job follows its children. User guide, "Array jobs": "The parent array job
   can enter a SUBMITTED, PENDING, FAILED, or SUCCEEDED status. An array parent job is updated
   to PENDING when any child job is updated to RUNNABLE." guess: that it ends SUCCEEDED when
   every child succeeded and FAILED otherwise, once all have ended (not stated). moto leaves a
   parent SUBMITTED for ever unless every child succeeds.
"""

import sys
from typing import Any

from moto import server
from moto.batch import models
from moto.moto_api._internal.managed_state_model import ManagedState

ENDED = ("SUCCEEDED", "FAILED")


def _patch() -> None:
    job = models.Job
    for name in ("_get_container_property", "_container_details"):
        if not hasattr(job, name):
            raise RuntimeError(f"moto {models.__name__}.Job has no {name}: update moto_batch.py")
    container_property = job._get_container_property
    container_details = job._container_details

    def get_container_property(self: Any, name: str, default: Any) -> Any:
        value = container_property(self, name, default)
        index = (self.array_properties or {}).get("index")
        if name == "environment" and index is not None:
            value = [e for e in value if e["name"] != "AWS_BATCH_JOB_ARRAY_INDEX"]
            value.append({"name": "AWS_BATCH_JOB_ARRAY_INDEX", "value": str(index)})
        return value

    def describe_container(self: Any) -> dict[str, Any]:
        details = container_details(self)
        if self.job_stopped and self.exit_code is not None:
            details["exitCode"] = self.exit_code
        return dict(details)

    job._get_container_property = get_container_property
    job._container_details = describe_container
    job.status = property(_status, ManagedState.status.fset)  # type: ignore[assignment]


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
