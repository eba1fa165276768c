"""Shared placement: the workers mount the filesystem holding the run directory, so every path
is used in place. Inputs are reached through the read-only view of the same filesystem (no
symlinks, no copies); the task's working directory is ``<task dir>/work`` on every attempt.
"""

import logging
import os
from collections.abc import Iterable

from WDL import Error
from WDL._util import chmod_R_plus, path_really_within
from WDL.runtime.task_container import TaskContainer

from ..attempt import Mount
from . import Placement
from .sharedfs import SharedFilesystem


class SharedPlacement(Placement):
    def __init__(self, task: TaskContainer, filesystem: SharedFilesystem) -> None:
        super().__init__(task)
        self.fs = filesystem

    def container_dir(self) -> str:
        return self.fs.to_container(self.task.host_dir)

    def add_paths(self, host_paths: Iterable[str]) -> None:
        task = self.task
        for host_path in host_paths:
            stripped = host_path.rstrip("/")
            if host_path in task.input_path_map or stripped in task.input_path_map:
                continue
            if not os.path.exists(stripped):
                raise Error.InputError("input path not found: " + host_path)
            self.fs.check_host_path(stripped, "input")
            container_path = self.fs.to_container(stripped, read_only=True)
            if host_path.endswith("/"):
                container_path += "/"
            task.input_path_map[host_path] = container_path
            task.input_path_map_rev[container_path] = host_path

    def input_host_path(self, container_path: str) -> tuple[bool, str | None]:
        """A path in an input Directory, at any depth: the view maps back one to one, and the
        result must really lie within that input (no .. or symlink out of it)."""
        rev = self.task.input_path_map_rev
        probe = container_path.rstrip("/")
        while probe not in ("", "/"):
            input_host = rev.get(probe) or rev.get(probe + "/")
            if input_host is not None:
                host_path = self.fs.to_host(container_path.rstrip("/"))
                if not path_really_within(host_path, input_host.rstrip("/")):
                    raise Error.InputError(
                        "task inputs attempted to use a non-input or non-existent path "
                        + container_path
                    )
                return True, host_path + ("/" if container_path.endswith("/") else "")
            probe = os.path.dirname(probe)
        return False, None

    def copy_input_files(self, logger: logging.Logger) -> None:
        logger.warning(
            "[file_io] copy_input_files ignored: inputs are used in place on the shared filesystem"
        )

    def host_work_dir(self) -> str:
        # the container runs in {container_dir}/work itself, so every attempt uses "work"
        return os.path.join(self.task.host_dir, "work")

    def reset(self, logger: logging.Logger) -> None:
        work = self.host_work_dir()
        if os.path.isdir(work):
            os.rename(
                work, os.path.join(self.task.host_dir, f"work.attempt{self.task.try_counter}")
            )

    def to_container(self, host_path: str) -> str:
        return self.fs.to_container(host_path)

    def mounts(self, writable: Iterable[str], read_only: Iterable[str]) -> tuple[Mount, ...]:
        for path in [*writable, *read_only]:
            self.fs.check_host_path(path, "path")
        found = [Mount(self.fs.host_root, self.fs.container_root, False)]
        if self.fs.readonly_root:
            found.append(Mount(self.fs.host_root, self.fs.readonly_root, True))
        return tuple(found)

    def prepare(self, logger: logging.Logger) -> None:
        for stream in (self.task.host_stdout_txt(), self.task.host_stderr_txt()):
            open(stream, "a").close()
        chmod_R_plus(self.task.host_dir, file_bits=0o660, dir_bits=0o770)
