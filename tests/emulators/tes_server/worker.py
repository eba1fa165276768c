"""The test server's worker: runs one task as Funnel's worker does (funnel worker/worker.go,
worker/file_mapper.go), with executors on the local dockerd.

* Every container path P of a task maps to ``<task dir>/P`` on the worker (FileMapper.HostPath),
  so inputs, outputs and volumes nested in one another are one tree.
* Inputs are downloaded there before the first executor; ``content`` inputs are written
  (FileMapper.AddInput); an empty DIRECTORY input is skipped with a warning (FlattenInputs).
* The executors get read-write binds of: each volume and /tmp (AddTmpVolume), each output's
  directory (AddOutput: a FILE's parent), and the common ancestor of the inputs
  (consolidateVolumes); the root filesystem is read-only (Worker.Container.RunCommand
  ``run -i --read-only``). Nothing from the worker's host is mounted unless the server was
  started with a worker volume (Funnel: a --volume added to that RunCommand).
* Outputs are uploaded after the executors, even when one failed ("Upload outputs regardless
  of executor error"); ``upload_on_error=False`` behaves as TESK's taskmaster, which stops
  before its output filer when an executor fails.
"""

import contextlib
import copy
import os
import posixpath
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import docker
from docker.types import Mount

from .storage import Storage, TransferError

TAIL_BYTES = 10 * 1024  # of stdout/stderr kept in executor logs (the spec: "only the tail")


class SystemFailure(Exception):
    """The worker could not run the task (image, input, upload, backend parameter)."""


def _outermost(paths: Sequence[str]) -> list[str]:
    """The paths not below another one: binds of one tree need only its tops."""
    chosen: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(path == top or path.startswith(top.rstrip("/") + "/") for top in chosen):
            chosen.append(path)
    return chosen


def _common_parent(paths: Sequence[str]) -> str:
    parents = [posixpath.dirname(p.rstrip("/")) or "/" for p in paths]
    return posixpath.commonpath(parents) if parents else "/"


class TaskRun:
    """One task on the worker: its directory, its binds, its transfers."""

    def __init__(self, task: dict[str, Any], storage: Storage, work_root: str) -> None:
        self.task = copy.deepcopy(task)
        self.storage = storage
        self.root = tempfile.mkdtemp(prefix="task-", dir=work_root)
        self.warnings: list[str] = []

    def host(self, path: str) -> str:
        mapped = os.path.normpath(self.root + "/" + path)
        if mapped != self.root and not mapped.startswith(self.root + "/"):
            raise SystemFailure(f"{path} is not a valid path in the task")
        return mapped

    def prepare(self) -> list[Mount]:
        """Make the task's directories, download its inputs; the binds its executors get."""
        tops = [*(self.task.get("volumes") or []), "/tmp"]
        for output in self.task.get("outputs") or []:
            directory = output.get("type") == "DIRECTORY"
            tops.append(output["path"] if directory else posixpath.dirname(output["path"]))
        inputs = self.task.get("inputs") or []
        for item in inputs:
            self._localize(item)
        if inputs:
            ancestor = _common_parent([i["path"] for i in inputs])
            tops += (
                [ancestor] if ancestor != "/" else [posixpath.dirname(i["path"]) for i in inputs]
            )
        mounts = []
        for top in _outermost(tops):
            os.makedirs(self.host(top), exist_ok=True)
            mounts.append(Mount(top, self.host(top), type="bind"))
        return mounts

    def _localize(self, item: dict[str, Any]) -> None:
        target = self.host(item["path"])
        if item.get("content") is not None:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as outfile:
                outfile.write(item["content"])
            os.chmod(target, 0o775)
            return
        directory = item.get("type") == "DIRECTORY"
        try:
            count = self.storage.download(item["url"], target, directory)
        except TransferError as exn:
            raise SystemFailure(f"input {item['path']}: {exn}") from None
        if directory and not count:
            self.warnings.append(f"download source directory is empty: {item['url']}")

    def upload(self) -> list[dict[str, str]]:
        """Upload every output; the OutputFileLog entries (funnel UploadOutputs)."""
        logged = []
        for output in self.task.get("outputs") or []:
            source = self.host(output["path"])
            if output.get("type") != "DIRECTORY":
                files = [(source, output["url"])]
                if not os.path.isfile(source):
                    raise SystemFailure(f"output {output['path']}: no such file to upload")
            else:
                files = [
                    (
                        os.path.join(d, f),
                        output["url"].rstrip("/")
                        + "/"
                        + os.path.relpath(os.path.join(d, f), source),
                    )
                    for d, _, names in os.walk(source)
                    for f in names
                ]
                if not files:
                    self.warnings.append(f"upload source directory is empty: {output['url']}")
            for path, url in files:
                try:
                    self.storage.upload(path, url)
                except TransferError as exn:
                    raise SystemFailure(f"output {output['path']}: {exn}") from None
                logged.append(
                    {
                        "url": url,
                        "path": self.task_path(path),
                        "size_bytes": str(os.path.getsize(path)),
                    }
                )
        return logged

    def task_path(self, host_path: str) -> str:
        return "/" + os.path.relpath(host_path, self.root)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def run_container(
    client: docker.DockerClient,
    image: str,
    executor: dict[str, Any],
    mounts: list[Mount],
    options: dict[str, Any],
    labels: dict[str, str],
) -> str:
    """Create and start one executor's container (root filesystem read-only, host network so
    tasks reach services on 127.0.0.1); its id."""
    container = client.api.create_container(
        image,
        executor["command"],
        working_dir=executor.get("workdir"),
        environment=executor.get("env") or {},
        labels=labels,
        host_config=client.api.create_host_config(
            network_mode="host", mounts=mounts, read_only=True, **options
        ),
    )["Id"]
    client.api.start(container)
    return str(container)


def finish_container(client: docker.DockerClient, container: str) -> tuple[int, str, str]:
    """Wait for it; (exit code, stdout tail, stderr tail); the container is removed."""
    try:
        exit_code = int(client.api.wait(container)["StatusCode"])
        out = client.api.logs(container, stdout=True, stderr=False)[-TAIL_BYTES:]
        err = client.api.logs(container, stdout=False, stderr=True)[-TAIL_BYTES:]
    finally:
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_container(container, force=True)
    return exit_code, out.decode(errors="replace"), err.decode(errors="replace")
