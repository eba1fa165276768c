"""The SubmitJob request of one attempt: a frozen value translate() returns, nothing sent yet."""

import hashlib
import json
import math
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ...attempt import TaskAttempt
from .. import jobscript
from .settings import AwsBatchSettings, filesystem_hint

LOG_TAIL_LINES = 30
MIN_TIMEOUT = 60  # API_JobTimeout: "The minimum value for the timeout is 60 seconds."
JOB_NAME_MAX = 128
VOLUME = "omnibio-fs"  # the job definitions' one volume: the shared filesystem
TAG_UNSAFE = re.compile(r"[^\w .:/=+\-@]")  # what a tag may not hold, replaced by "_"
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
    attempt: TaskAttempt, settings: AwsBatchSettings, env_file: str | None = None
) -> tuple[str, ...]:
    """The attempt's argv in the job script (jobscript), which also enters the working directory
    (Batch has none per job), sources ``env_file`` (as the container sees it: environment values
    that did not fit the request) and, when the task fails, copies the tail of its stderr into
    the job's CloudWatch log."""
    fs = settings.filesystem
    stdout = fs.to_container(attempt.stdout_path)
    # User guide, "AWS Batch job environment variables": AWS_BATCH_CE_NAME, "the name of the
    # compute environment where your job is placed"
    missing = (
        f"{jobscript.double_quoted(stdout)} is not visible on this host (compute environment "
        f"$AWS_BATCH_CE_NAME); check {jobscript.double_quoted(filesystem_hint(settings))}"
    )
    prepare = f"cd {shlex.quote(attempt.workdir)} || exit 1"
    if env_file:
        prepare += f"\n. {shlex.quote(env_file)}"
    stderr = shlex.quote(fs.to_container(attempt.stderr_path))
    record = fs.to_container(jobscript.exit_record(attempt.host_dir, attempt.attempt))
    on_failure = f"tail -n {LOG_TAIL_LINES} {stderr} >&2"
    argv = jobscript.command(
        attempt.argv, record, stdout, missing, prepare=prepare, on_failure=on_failure
    )
    return tuple(argv)


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

    image: str
    host_dir: str  # the attempt's directory on the shared filesystem
    queue: str
    definition: JobDefinition
    name: str
    command: tuple[str, ...]
    environment: Mapping[str, str]
    resources: tuple[tuple[str, str], ...]  # (VCPU|MEMORY|GPU, value)
    timeout: int | None  # attemptDurationSeconds
    tags: Mapping[str, str]
    exit_record: str  # host path (jobscript.exit_record)
    files: Mapping[str, str] = field(default_factory=dict)  # host path -> text, before submitting
    array_size: int | None = None  # an array job of this many children (arrays.plan_array)

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
        if self.array_size:
            arguments["arrayProperties"] = {"size": self.array_size}
        return arguments

    def sizes(self) -> tuple[int, int]:
        """Bytes of the serialized request as botocore sends it (JSON, ASCII-escaped), and
        characters of its containerOverrides (ECS counts them, JSON included)."""
        arguments = self.arguments(self.definition.name)
        return len(json.dumps(arguments)), len(json.dumps(arguments["containerOverrides"]))

    def fits(self) -> bool:
        """Within both limits: the SubmitJob request, and the ECS overrides Batch makes of it."""
        request, overrides = self.sizes()
        return request <= REQUEST_BUDGET and overrides <= OVERRIDES_BUDGET


def job_name(prefix: str, call: str, attempt: int) -> str:
    """<prefix><call path>-<attempt>, within Batch's 128 letters, digits, hyphens, underscores."""
    body = re.sub(r"[^A-Za-z0-9_-]+", "-", call).strip("-") or "task"
    suffix = f"-{attempt}"
    room = JOB_NAME_MAX - len(prefix) - len(suffix)
    if len(body) > room:  # keep the distinctive end (call-align-3) and a hash of the whole path
        digest = hashlib.sha256(call.encode()).hexdigest()[:8]
        body = digest + "-" + body[-(room - len(digest) - 1) :]
    return prefix + body + suffix


def fit_request(
    request: JobRequest, attempt: TaskAttempt, settings: AwsBatchSettings
) -> JobRequest:
    """The request within REQUEST_BUDGET and OVERRIDES_BUDGET: the largest environment values
    move to an env file next to the task's files, which the job's command then sources."""
    if request.fits():
        return request
    host_file = os.path.join(attempt.host_dir, f"awsbatch_env.{attempt.attempt}.sh")
    command = job_command(attempt, settings, settings.filesystem.to_container(host_file))
    kept = dict(request.environment)
    moved: dict[str, str] = {}
    while kept and not replace(request, command=command, environment=kept).fits():
        name = max(kept, key=lambda k: len(json.dumps(kept[k])))
        moved[name] = kept.pop(name)
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in moved.items())
    return replace(request, command=command, environment=kept, files={host_file: text})


def job_request(attempt: TaskAttempt, settings: AwsBatchSettings, name_prefix: str) -> JobRequest:
    """The attempt's SubmitJob request: its size in overrides, its shared job definition, its
    queue, and the job script around its command."""
    resources = attempt.resources
    memory = resources.memory_limit or settings.default_memory
    requirements = [("VCPU", str(max(1, resources.cpu)))]
    requirements.append(("MEMORY", str(max(4, math.ceil(memory / (1 << 20))))))  # MiB
    if resources.gpu:
        requirements.append(("GPU", str(resources.gpu)))
    env = {k: str(v) for k, v in sorted(attempt.env.items()) if not k.startswith("AWS_BATCH")}
    request = JobRequest(
        image=attempt.image,
        host_dir=attempt.host_dir,
        queue=queue_for(attempt, settings),
        definition=job_definition(attempt, settings),
        name=job_name(name_prefix, attempt.call, attempt.attempt),
        command=job_command(attempt, settings),
        environment=env,
        resources=tuple(requirements),
        timeout=max(MIN_TIMEOUT, resources.time_limit) if resources.time_limit else None,
        tags={
            TAG_UNSAFE.sub("_", k)[:128]: TAG_UNSAFE.sub("_", v)[:256]
            for k, v in {**settings.tags, **attempt.tags}.items()
        },
        exit_record=jobscript.exit_record(attempt.host_dir, attempt.attempt),
    )
    return fit_request(request, attempt, settings)


def queue_for(attempt: TaskAttempt, settings: AwsBatchSettings) -> str:
    """runtime.omnibio_queue, else job_queue while miniwdl may still retry an interruption
    (fewer interruptions so far than runtime.preemptible), else fallback_queue."""
    chosen = attempt.runtime.get("omnibio_queue")
    if chosen:
        return str(chosen)
    if settings.fallback_queue and attempt.interruptions >= attempt.resources.max_interruptions:
        return settings.fallback_queue
    return settings.job_queue


def job_definition(attempt: TaskAttempt, settings: AwsBatchSettings) -> JobDefinition:
    """The job definition for the attempt's image, volumes and user (no per-attempt values):
    the shared filesystem, one Batch volume, mounted where the attempt mounts it (always at its
    root: placement.shared)."""
    assert all(m.host_path == settings.filesystem.host_root for m in attempt.mounts)
    points = [
        {"sourceVolume": VOLUME, "containerPath": m.container_path, "readOnly": m.read_only}
        for m in attempt.mounts
    ]
    properties: dict[str, Any] = {
        "image": attempt.image,
        # placeholders: every job overrides vCPU and memory
        "resourceRequirements": [
            {"type": "VCPU", "value": "1"},
            {"type": "MEMORY", "value": "1024"},
        ],
        "volumes": [{"name": VOLUME, **settings.volume.source(".")}],
        "mountPoints": points,
        "privileged": attempt.privileged,
    }
    if attempt.user:
        properties["user"] = attempt.user
    if settings.job_role_arn:
        properties["jobRoleArn"] = settings.job_role_arn
    return JobDefinition.of(properties)
