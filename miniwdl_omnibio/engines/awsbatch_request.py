"""The SubmitJob request of one attempt: a frozen value translate() returns, nothing sent yet."""

import hashlib
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

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
# The job's command. Batch has no per-job working directory, so the wrapper enters it; it sources
# environment values that did not fit the SubmitJob request; it keeps the job's exit file on the
# shared filesystem (empty while the command runs, then its exit status), so the launcher sees
# jobs start and end without asking Batch; and when the task fails it copies the tail of the
# task's stderr (which goes to the shared filesystem) into the job's CloudWatch log.
# Arguments: workdir, stderr file, env file or "-", exit file, then the task's argv.
WRAPPER = (
    'cd "$1" || { echo "omnibio: cannot enter $1; is the shared filesystem mounted on this '
    'Batch host?" >&2; exit 97; }; '
    'if [ "$3" != - ]; then . "$3"; fi; '
    'stderr=$2; exited=$4; shift 4; true 2>/dev/null >"$exited"; '
    '"$@"; rc=$?; '
    '{ echo "$rc" >"$exited.tmp" && mv -f "$exited.tmp" "$exited"; } 2>/dev/null; '
    f'if [ "$rc" -ne 0 ]; then tail -n {LOG_TAIL_LINES} "$stderr" >&2; fi; '
    'exit "$rc"'
)
ENV_ARGUMENT = 6  # the command's index of the env file


def exit_file(host_dir: str, attempt: int) -> str:
    """The attempt's exit file: absent before its job starts, empty while its command runs, then
    the command's exit status."""
    return os.path.join(host_dir, f"awsbatch_exit.{attempt}")


def read_exit_file(path: str) -> tuple[bool, int | None]:
    """(started, exit status) from an exit file; (False, None) when it is not there (yet)."""
    try:
        with open(path, encoding="utf-8") as infile:
            text = infile.read().strip()
    except OSError:
        return False, None
    return True, int(text) if text.isdigit() else None


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
    exit_file: str  # host path (exit_file())
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


def fit_request(request: JobRequest, host_file: str, container_file: str) -> JobRequest:
    """The request within REQUEST_BUDGET and OVERRIDES_BUDGET: the largest environment values
    move to an env file on the shared filesystem (``host_file``, which the job sources as
    ``container_file``)."""
    if request.fits():
        return request
    kept = dict(request.environment)
    moved: dict[str, str] = {}
    command = (
        request.command[:ENV_ARGUMENT] + (container_file,) + request.command[ENV_ARGUMENT + 1 :]
    )
    while kept and not replace(request, command=command, environment=kept).fits():
        name = max(kept, key=lambda k: len(json.dumps(kept[k])))
        moved[name] = kept.pop(name)
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in moved.items())
    return replace(request, command=command, environment=kept, files={host_file: text})
