"""What omnibio_awsbatch reads in AWS Batch's answers: a DescribeJobs entry becomes a Status.

Pure functions of the service's words, unit-tested without a service (tests/unit). The reasons
matched here are Batch's own strings, each cited where it is matched.
"""

import re
from collections.abc import Mapping
from typing import Any

import botocore.exceptions

from .base import QUEUED, RUNNING, Phase, Status

LOG_GROUP = "/aws/batch/job"  # where Batch's awslogs driver writes by default
MIN_TIMEOUT = 60  # API_JobTimeout: "The minimum value for the timeout is 60 seconds."
QUEUED_STATES = ("SUBMITTED", "PENDING", "RUNNABLE")
# "Host EC2 (instance i-...) terminated." is the attempt's statusReason when the instance under
# it goes away (spot reclaim, scale-in); the job did not fail by itself
HOST_LOSS = re.compile(r"Host EC2 .*terminated", re.IGNORECASE)
# CannotPullContainerError, CannotStartContainerError, CannotInspectContainerError,
# CannotCreateContainerError (Batch user guide, "Troubleshooting AWS Batch"): the image's fault
CANNOT_START = re.compile(r"Cannot\w*(Container|Inspect)\w*Error|CannotPullContainer", re.I)
# statusReason of a job stopped at attemptDurationSeconds
TIMED_OUT = re.compile(r"duration exceeded timeout|attemptDurationSeconds", re.IGNORECASE)
OOM = "OutOfMemoryError"  # "OutOfMemoryError: Container killed due to memory usage"
AUTH_ERROR_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "AuthFailure",
    "AccessDeniedException",
    "AccessDenied",
}


def error_text(exn: BaseException) -> str:
    """One line from a botocore error (moto sometimes returns an XML body as the message)."""
    if isinstance(exn, botocore.exceptions.ClientError):
        error = exn.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if message.lstrip().startswith("<"):
            code = (re.findall(r"<Code>(.*?)</Code>", message) or [code])[0]
            message = (re.findall(r"<Message>(.*?)</Message>", message) or [message])[0]
        return f"{code}: {message}"[:300]
    return " ".join(str(exn).split())[:300]


def is_auth_error(exn: botocore.exceptions.ClientError) -> bool:
    code = error_text(exn).split(":", 1)[0]
    status = exn.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in AUTH_ERROR_CODES or status in (401, 403)


def _containers(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The job's container, then its attempts' containers, newest first."""
    found = [job.get("container")]
    found += [a.get("container") for a in reversed(job.get("attempts") or [])]
    return [c for c in found if c]


def reasons(job: Mapping[str, Any]) -> str:
    """Every reason Batch gives for a job's end: the job's, its container's, its last attempt's."""
    attempts = job.get("attempts") or [{}]
    found: list[str] = []
    for text in (
        job.get("statusReason"),
        (job.get("container") or {}).get("reason"),
        attempts[-1].get("statusReason"),
        (attempts[-1].get("container") or {}).get("reason"),
    ):
        if text and text not in found:
            found.append(text)
    return "; ".join(found)


def exit_code(job: Mapping[str, Any]) -> int | None:
    for container in _containers(job):
        if container.get("exitCode") is not None:
            return int(container["exitCode"])
    return None


def log_stream(job: Mapping[str, Any]) -> str | None:
    for container in _containers(job):
        if container.get("logStreamName"):
            return str(container["logStreamName"])
    return None


def time_limit(job: Mapping[str, Any]) -> int | None:
    """The attemptDurationSeconds the job runs under (DescribeJobs returns the job's timeout)."""
    seconds = (job.get("timeout") or {}).get("attemptDurationSeconds")
    return int(seconds) if seconds else None


def needs_listed_exit_code(job: Mapping[str, Any]) -> bool:
    """A failed job whose outcome hangs on an exit code DescribeJobs omits (moto omits it)."""
    if job["status"] != "FAILED" or exit_code(job) is not None:
        return False
    reason = reasons(job)
    return not any(p.search(reason) for p in (HOST_LOSS, CANNOT_START, TIMED_OUT))


def job_status(job: Mapping[str, Any], image: str, listed_exit_code: int | None = None) -> Status:
    """One DescribeJobs entry as a Status; ``listed_exit_code``: ListJobs' word if it has none."""
    state = job["status"]
    reason = reasons(job)
    if state in QUEUED_STATES:
        return Status(Phase.QUEUED, reason=reason) if reason else QUEUED
    if state in ("STARTING", "RUNNING"):
        return RUNNING
    code = exit_code(job)
    if code is None:
        code = listed_exit_code
    details: dict[str, Any] = {"job_queue": job.get("jobQueue"), "job_name": job.get("jobName")}
    stream = log_stream(job)
    if stream:
        details.update(log_group=LOG_GROUP, log_stream=stream)
    if state == "SUCCEEDED":  # Batch succeeds a job exactly when its container exits 0
        return Status(Phase.DONE, exit_code=code or 0, reason=reason, details=details)
    job_id = job["jobId"]
    if HOST_LOSS.search(reason):
        return Status(Phase.DONE, interrupted=True, reason=reason, details=details)
    if CANNOT_START.search(reason):
        what = "pull" if "pull" in reason.lower() else "start a container from"
        error = f"AWS Batch could not {what} image {image} for job {job_id}: {reason}"
        return Status(Phase.DONE, error=error, reason=reason, details=details)
    if TIMED_OUT.search(reason) or (code is None and _ran_out_its_time(job)):
        return Status(Phase.DONE, timed_out=True, reason=reason or "ran to its timeout")
    oom = OOM in reason
    if code is not None or oom:
        code = 137 if code is None else code  # a container killed by the OOM killer: SIGKILL
        return Status(Phase.DONE, exit_code=code, oom=oom, reason=reason, details=details)
    error = (
        f"AWS Batch job {job_id} failed without running its command "
        f"({reason or 'Batch gave no reason'}); check that image {image} exists and that the "
        "queue's hosts can pull it"
    )
    return Status(Phase.DONE, error=error, reason=reason, details=details)


def _ran_out_its_time(job: Mapping[str, Any]) -> bool:
    """A failed job without reason or exit code that ran its whole attemptDurationSeconds (moto
    stops such a job without saying why)."""
    limit = time_limit(job)
    started, stopped = job.get("startedAt"), job.get("stoppedAt")
    if not (limit and started and stopped):
        return False
    return bool(stopped - started >= 1000 * (limit - 1))
