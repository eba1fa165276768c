"""The SubmitJob request of one attempt: a frozen value translate() returns, nothing sent yet."""

import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .. import jobscript

LOG_TAIL_LINES = 30
JOB_NAME_MAX = 128
# Batch service quotas: "Maximum job payload size (for SubmitJob API operations): 30 KiB". The
# whole serialized request counts; the job definition's ARN replaces its name at submission.
REQUEST_LIMIT = 30 * 1024
REQUEST_BUDGET = REQUEST_LIMIT - 1024
# Amazon ECS API_RunTask overrides: "A total of 8192 characters are allowed for overrides",
# JSON included. Batch starts the job as an ECS task with its containerOverrides (command,
# environment, resources); past the limit the job goes FAILED with the statusReason "Container
# Overrides length must be at most 8192" (Batch users quote it: Netflix/metaflow#1482,
# ASFHyP3/hyp3#3041), however small the SubmitJob request was.
# guess: what Batch adds to the ECS override (its AWS_BATCH_* variables, the container's name)
# is not documented; 2 KiB is left for it.
OVERRIDES_LIMIT = 8192
OVERRIDES_BUDGET = OVERRIDES_LIMIT - 2048


def job_command(
    argv: tuple[str, ...],
    workdir: str,
    stderr: str,
    record: str,
    visible: str,
    missing: str,
    env_file: str | None = None,
) -> tuple[str, ...]:
    """The job's command: ``argv`` in the job script (jobscript), which keeps the attempt's exit
    record on the shared filesystem, so the launcher sees jobs start and end without asking
    Batch. Batch has no per-job working directory, so the script enters it; it sources
    ``env_file``, environment values that did not fit the request; when the task fails it
    copies the tail of the task's stderr (on the shared filesystem) into the job's CloudWatch
    log. Paths as the container sees them; ``visible`` and ``missing`` as jobscript.wrapper."""
    prepare = f"cd {shlex.quote(workdir)} || exit 1"
    if env_file:
        prepare += f"\n. {shlex.quote(env_file)}"
    on_failure = f"tail -n {LOG_TAIL_LINES} {shlex.quote(stderr)} >&2"
    return tuple(
        jobscript.command(argv, record, visible, missing, prepare=prepare, on_failure=on_failure)
    )


@dataclass(frozen=True)
class JobDefinition:
    """A job definition named by a hash of its content, shared by every attempt that needs it."""

    name: str
    properties: str  # containerProperties, canonical JSON

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> "JobDefinition":
        text = json.dumps(properties, sort_keys=True)
        return cls("omnibio-" + hashlib.sha256(text.encode()).hexdigest()[:32], text)


@dataclass(frozen=True)
class JobRequest:
    """One SubmitJob, plus what must exist before it is sent."""

    call: str
    image: str
    host_dir: str  # the attempt's directory on the shared filesystem
    queue: str
    queue_from_runtime: bool  # runtime.omnibio_queue: checked once at submission
    definition: JobDefinition
    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    resources: tuple[tuple[str, str], ...]  # (VCPU|MEMORY|GPU, value)
    timeout: int | None  # attemptDurationSeconds
    tags: Mapping[str, str]
    exit_record: str  # host path (jobscript.exit_record)
    files: Mapping[str, str] = field(default_factory=dict)  # host path -> text, before submitting

    def arguments(self, definition: str) -> dict[str, Any]:
        """SubmitJob's keywords, with ``definition`` (the job definition's ARN or name)."""
        arguments: dict[str, Any] = dict(
            jobName=self.name,
            jobQueue=self.queue,
            jobDefinition=definition,
            containerOverrides={
                "command": list(self.command),
                "environment": [{"name": k, "value": v} for k, v in self.environment.items()],
                "resourceRequirements": [{"type": t, "value": v} for t, v in self.resources],
            },
            retryStrategy={"attempts": 1},  # miniwdl retries (maxRetries, preemptible)
            propagateTags=True,
            tags=dict(self.tags),
        )
        if self.timeout:
            arguments["timeout"] = {"attemptDurationSeconds": self.timeout}
        return arguments

    def size(self) -> int:
        """Bytes of the serialized request, as botocore sends it (JSON, ASCII-escaped)."""
        return len(json.dumps(self.arguments(self.definition.name)))

    def overrides_size(self) -> int:
        """Characters of the serialized containerOverrides (ECS counts them, JSON included)."""
        return len(json.dumps(self.arguments(self.definition.name)["containerOverrides"]))

    def fits(self) -> bool:
        """Within both limits: the SubmitJob request, and the ECS overrides Batch makes of it."""
        return self.size() <= REQUEST_BUDGET and self.overrides_size() <= OVERRIDES_BUDGET


def job_name(prefix: str, call: str, attempt: int) -> str:
    """<prefix><call path>-<attempt>, within Batch's 128 letters, digits, hyphens, underscores."""
    body = re.sub(r"[^A-Za-z0-9_-]+", "-", call).strip("-") or "task"
    suffix = f"-{attempt}"
    room = JOB_NAME_MAX - len(prefix) - len(suffix)
    if len(body) > room:  # keep the distinctive end (call-align-3) and a hash of the whole path
        digest = hashlib.sha256(call.encode()).hexdigest()[:8]
        body = digest + "-" + body[-(room - len(digest) - 1) :]
    return prefix + body + suffix


def clean_tag(text: str, limit: int) -> str:
    return re.sub(r"[^\w .:/=+\-@]", "_", str(text))[:limit]


def fit_request(request: JobRequest, host_file: str, command: tuple[str, ...]) -> JobRequest:
    """The request within REQUEST_BUDGET and OVERRIDES_BUDGET: the largest environment values
    move to an env file on the shared filesystem (``host_file``, which ``command``, the
    request's command with the env file, sources)."""
    if request.fits():
        return request
    kept = dict(request.environment)
    moved: dict[str, str] = {}
    while kept and not replace(request, command=command, environment=kept).fits():
        name = max(kept, key=lambda k: len(json.dumps(kept[k])))
        moved[name] = kept.pop(name)
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in moved.items())
    return replace(request, command=command, environment=kept, files={host_file: text})
