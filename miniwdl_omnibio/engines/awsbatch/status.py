"""What omnibio_awsbatch reads in AWS Batch's answers: a DescribeJobs entry becomes a Status.

Pure functions of the service's words, unit-tested without a service (tests/unit). The reasons
matched here are Batch's own strings, each cited where it is matched.
"""

import re
from collections.abc import Callable, Mapping
from typing import Any

import botocore.exceptions

from ..base import QUEUED, RUNNING, Phase, Status

LOG_GROUP = "/aws/batch/job"  # where Batch's awslogs driver writes by default
QUEUED_STATES = ("SUBMITTED", "PENDING", "RUNNABLE")
# "Host EC2 (instance i-...) terminated." is the attempt's statusReason when the instance under
# it goes away (spot reclaim, scale-in); the job did not fail by itself
HOST_LOSS = re.compile(r"Host EC2 .*terminated", re.IGNORECASE)
# CannotPullContainerError, CannotStartContainerError, CannotInspectContainerError (Amazon ECS,
# "Stopped tasks error codes"): the image could not be pulled or started
CANNOT_START = re.compile(r"Cannot\w*(Container|Inspect)\w*Error|CannotPullContainer", re.I)
# ECS "Stopped tasks error codes": the host could not set up what the container needs before it
# starts, e.g. "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS
# volumes ..."; DockerTimeoutError (ContainerRuntimeTimeoutError on newer agents) when a mount
# hangs; CannotCreateVolumeError. On this engine that is the shared filesystem, not the image.
SETUP_FAILED = re.compile(
    r"ResourceInitializationError|DockerTimeoutError|ContainerRuntimeTimeoutError|"
    r"CannotCreateVolumeError"
)
# On EC2 a volume that does not mount can stop the container's start instead: docker's "Error
# response from daemon: error while mounting volume '...': failed to mount local volume: mount
# fs-...:/" (aws/efs-utils#39) inside a CannotStartContainerError. Mount text in that reason is
# the shared filesystem's failure, not the image's.
MOUNT_TEXT = re.compile(r"mount|\bfsap-[0-9a-f]|\bfs-[0-9a-f]{8}|\befs\b", re.IGNORECASE)
# What each mount failure asks of the file system, by the words AWS's EFS troubleshooting gives
# them (knowledge center "eks-troubleshoot-efs-volume-mount-issues"; ResourceInitializationError
# texts as ECS reports them, e.g. "stderr: b'mount.nfs4: ... failed, reason given by server: No
# such file or directory' : unsuccessful EFS utils command execution; code: 32")
MOUNT_CAUSES = {
    "connection timed out": "NFS did not answer: the mount target's security group must let TCP "
    "2049 in from the compute environment's security group",
    "failed to resolve": "the file system's name did not resolve: it needs a mount target in the "
    "Availability Zone of every subnet of the compute environment, and DNS resolution in the VPC",
    "access denied": "the file system refused the mount: its file system policy, the job role, "
    "or the access point",
    "no such file or directory": "the directory to mount does not exist on the file system "
    "(rootDirectory, or the access point's root directory)",
}
# API_JobDetail statusReason and "Jobs stuck in a RUNNABLE status": a RUNNABLE job blocking its
# queue says why. MISCONFIGURATION:* (COMPUTE_ENVIRONMENT_MAX_RESOURCE, JOB_RESOURCE_REQUIREMENT,
# SERVICE_ROLE_PERMISSIONS) and ACTION_REQUIRED (invalid compute environments) do not pass
# without an administrator; CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY may, so it is waited out.
NEVER_PLACED = re.compile(r"^\s*(MISCONFIGURATION:|ACTION_REQUIRED)")
# statusReason of a job stopped at attemptDurationSeconds. Batch's documentation does not quote
# it; "Job attempt duration exceeded timeout" is what public Batch clients (Nextflow, redun)
# match. The run time is checked too (_ran_out_its_time), so another wording still counts.
TIMED_OUT = re.compile(r"duration exceeded timeout|attemptDurationSeconds", re.IGNORECASE)
# The job's ECS overrides over 8192 characters (translate.OVERRIDES_LIMIT): the engine
# keeps them under it by moving environment values to a file, so only a command too long remains
OVERRIDES_TOO_LONG = re.compile(r"Container Overrides length", re.IGNORECASE)
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


def reasons(job: Mapping[str, Any]) -> str:
    """Every reason Batch gives for a job's end: the job's, its container's, its last attempt's."""
    last = (job.get("attempts") or [{}])[-1]
    texts = (
        job.get("statusReason"),
        (job.get("container") or {}).get("reason"),
        last.get("statusReason"),
        (last.get("container") or {}).get("reason"),
    )
    return "; ".join(dict.fromkeys(text for text in texts if text))


def _container_field(job: Mapping[str, Any], key: str) -> Any:
    """``key`` of the job's container, else of its attempts' containers, newest first."""
    found = (each.get("container") or {} for each in [job, *reversed(job.get("attempts") or [])])
    return next((c[key] for c in found if c.get(key) not in (None, "")), None)


def job_status(job: Mapping[str, Any], image: str, filesystem: str) -> Status:
    """One DescribeJobs entry as a Status; ``filesystem`` names the shared filesystem and the
    config keys to check when a job cannot set it up."""
    state = job["status"]
    reason = reasons(job)
    job_id = job["jobId"]
    if state == "RUNNABLE" and NEVER_PLACED.search(reason):
        queue = str(job.get("jobQueue", "")).rsplit("/", 1)[-1]
        error = f"AWS Batch cannot run job {job_id} on queue {queue}: {reason}"
        return Status(Phase.DONE, error=error, lingering=True, reason=reason)
    if state in QUEUED_STATES:
        return Status(Phase.QUEUED, reason=reason) if reason else QUEUED
    if state in ("STARTING", "RUNNING"):
        return RUNNING
    code = _container_field(job, "exitCode")  # API_ContainerDetail: "returned upon completion"
    details: dict[str, Any] = {"job_queue": job.get("jobQueue"), "job_name": job.get("jobName")}
    stream = _container_field(job, "logStreamName")
    if stream:
        details.update(log_group=LOG_GROUP, log_stream=stream)
    if state == "SUCCEEDED":  # Batch succeeds a job exactly when its container exits 0
        return Status(Phase.DONE, exit_code=int(code or 0), reason=reason, details=details)
    if HOST_LOSS.search(reason):
        return Status(Phase.DONE, interrupted=True, reason=reason, details=details)
    oom = OOM in reason
    if SETUP_FAILED.search(reason) or (CANNOT_START.search(reason) and MOUNT_TEXT.search(reason)):
        cause = [text for words, text in MOUNT_CAUSES.items() if words in reason.lower()][:1]
        said = [f"AWS Batch job {job_id} could not start: {reason}", *cause, f"check {filesystem}"]
        error = "; ".join(said)
    elif OVERRIDES_TOO_LONG.search(reason):
        error = f"AWS Batch could not start job {job_id}: {reason} (its command and environment)"
    elif CANNOT_START.search(reason):
        what = "pull" if "pull" in reason.lower() else "start a container from"
        error = f"AWS Batch could not {what} image {image} for job {job_id}: {reason}"
    elif TIMED_OUT.search(reason) or _ran_out_its_time(job):
        return Status(Phase.DONE, timed_out=True, reason=reason or "ran to its timeout")
    elif code is not None or oom:
        code = 137 if code is None else int(code)  # a container killed by the OOM killer: SIGKILL
        return Status(Phase.DONE, exit_code=code, oom=oom, reason=reason, details=details)
    else:
        error = (
            f"AWS Batch job {job_id} failed without running its command "
            f"({reason or 'Batch gave no reason'}); check that image {image} exists and that the "
            "queue's hosts can pull it"
        )
    return Status(Phase.DONE, error=error, reason=reason, details=details)


def _ran_out_its_time(job: Mapping[str, Any]) -> bool:
    """A failed job that ran its whole attemptDurationSeconds (whatever words Batch used;
    DescribeJobs returns the job's timeout)."""
    limit = (job.get("timeout") or {}).get("attemptDurationSeconds")
    started, stopped = job.get("startedAt"), job.get("stoppedAt")
    if not limit or started is None or stopped is None:
        return False
    return bool(stopped - started >= 1000 * (int(limit) - 1))


def unexplained(parent: Mapping[str, Any] | None, waiting: int) -> bool:
    """Batch counts more children of the array finished than the launcher knows of (those
    no longer outstanding, and those that wrote their exit status)."""
    array = (parent or {}).get("arrayProperties") or {}
    if "size" not in array:
        return True
    summary = array.get("statusSummary") or {}
    finished = int(summary.get("SUCCEEDED", 0)) + int(summary.get("FAILED", 0))
    return finished > int(array["size"]) - waiting


def blocked(
    parent: Mapping[str, Any], runnable: Callable[[], list[Mapping[str, Any]]], waiting: list[str]
) -> list[Mapping[str, Any]]:
    """The waiting children of an array as job_status reads them, by the reason Batch gives the
    array. "Jobs stuck in a RUNNABLE status": the job "at the head and blocking the queue"
    carries it, which may be the parent or any one child; every child asks the same of the
    queue, so one's reason is all's. ``runnable()`` (ListJobs of the RUNNABLE children) is
    called only while the parent gives no such reason and Batch counts some child RUNNABLE."""
    reason = reasons(parent)
    summary = (parent.get("arrayProperties") or {}).get("statusSummary")
    asking = not NEVER_PLACED.search(reason) and (summary is None or summary.get("RUNNABLE"))
    listed = runnable() if asking else []
    reason = next((r for r in map(reasons, listed) if NEVER_PLACED.search(r)), reason)
    if NEVER_PLACED.search(reason):
        job = {"status": "RUNNABLE", "statusReason": reason, "jobQueue": parent.get("jobQueue", "")}
        return [{**job, "jobId": h} for h in waiting]
    return [j for j in listed if j["jobId"] in waiting]
