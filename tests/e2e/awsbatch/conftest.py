"""Fixtures for omnibio_awsbatch end to end: a moto server whose Batch jobs run on the local
dockerd, and a shared directory that plays the shared filesystem (a host volume, in place)."""

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.conftest import require
from tests.emulators.moto_server import MotoBatch, MotoServer
from tests.helpers import Run, popen_miniwdl, run_miniwdl, wait_until

BACKEND = "omnibio_awsbatch"
READONLY_VIEW = "/mnt/omnibio_inputs"
# the job containers' tool runtime uploads results.json to moto S3 with the launcher's settings
JOB_ENV = {
    "AWS_ENDPOINT_URL": None,
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "AWS_DEFAULT_REGION": None,
}


@pytest.fixture(scope="session")
def moto(docker_rig, tmp_path_factory) -> MotoBatch:
    require(importlib.util.find_spec("moto") is not None, "moto[server] is not installed")
    server = MotoServer(str(tmp_path_factory.mktemp("moto") / "moto.log"))
    server.start()
    try:
        yield MotoBatch(server).create()
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def proxy(moto):
    """The proxy in front of moto, its rules and records cleared after each test."""
    yield moto.server.proxy
    moto.server.proxy.reset()


@pytest.fixture
def shared():
    """The shared filesystem: containers see it at the same path (host volume sourcePath = path)."""
    path = tempfile.mkdtemp(prefix="omnibio-aws-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def batch_config(moto: MotoBatch, shared: str, **settings: str) -> dict[str, dict[str, str]]:
    section = {
        "region": "us-east-1",
        "job_queue": moto.queue,
        "fallback_queue": moto.fallback_queue,
        "host_path": shared,
        "mount_path": shared,
        "readonly_mount_path": READONLY_VIEW,
        "poll_seconds": "0.5",
        "describe_seconds": "2",
        "submit_rate": "50",
    }
    section.update(settings)
    return {
        # retried at once: no test here measures the wait
        "omnibio": {"result_uri_prefix": f"s3://{moto.bucket}/results", "retry_wait": "0"},
        BACKEND: section,
        "task_runtime": {"env": json.dumps(JOB_ENV)},
        "scheduler": {"task_concurrency": "8"},
    }


def _setup(
    moto: MotoBatch,
    shared: str,
    wdl: str,
    settings: dict[str, str] | None,
    config: dict[str, dict[str, str]] | None,
) -> tuple[str, dict[str, dict[str, str]]]:
    """The WDL written on the shared filesystem, and the run's configuration."""
    path = os.path.join(shared, "main.wdl")
    with open(path, "w") as outfile:
        outfile.write(wdl)
    merged = batch_config(moto, shared, **(settings or {}))
    for section, values in (config or {}).items():
        merged.setdefault(section, {}).update(values)
    return path, merged


def run_batch(
    moto: MotoBatch,
    shared: str,
    wdl: str,
    args=(),
    settings: dict[str, str] | None = None,
    config: dict[str, dict[str, str]] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> Run:
    path, merged = _setup(moto, shared, wdl, settings, config)
    return run_miniwdl(
        path,
        list(args),
        shared,
        backend=BACKEND,
        config=merged,
        env={**moto.server.env(), **(env or {})},
        timeout=timeout,
    )


@contextlib.contextmanager
def started_batch(
    moto: MotoBatch,
    shared: str,
    wdl: str,
    settings: dict[str, str] | None = None,
    config: dict[str, dict[str, str]] | None = None,
) -> Iterator[subprocess.Popen]:
    """miniwdl running in the background (for tests that act on the run while it goes); killed
    if the test leaves it running."""
    path, merged = _setup(moto, shared, wdl, settings, config)
    proc = popen_miniwdl(path, [], shared, BACKEND, merged, moto.server.env())
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for_jobs(
    moto: MotoBatch, workflow_run: str, count: int, status: str = "RUNNING", timeout: float = 90
):
    """The run's jobs once ``count`` of them are in ``status``."""

    def enough():
        jobs = [j for j in moto.run_jobs(workflow_run) if j["status"] == status]
        return jobs if len(jobs) >= count else None

    return wait_until(enough, f"{count} jobs of {workflow_run} are {status}", timeout)


def ended_jobs(moto: MotoBatch, workflow_run: str, parents: bool = False, timeout: float = 60):
    """The run's jobs once Batch says each SUCCEEDED or FAILED: an attempt ends at its exit file,
    and Batch marks the job finished moments later, when its container has stopped."""

    def ended():
        jobs = moto.run_jobs(workflow_run, parents)
        return jobs if all(j["status"] in ("SUCCEEDED", "FAILED") for j in jobs) else None

    return wait_until(ended, f"every job of {workflow_run} ended", timeout)


def lose_host(moto: MotoBatch, job_id: str) -> None:
    """What Batch says when the spot instance under a job goes away."""
    moto.server.client("batch").terminate_job(
        jobId=job_id, reason="Host EC2 (instance i-0123456789abcdef0) terminated."
    )
