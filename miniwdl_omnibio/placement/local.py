"""Local placement: miniwdl's virtual container directory, each input bound read-only in place.

Used by omnibio_docker, and by engines that copy files to the worker themselves (each Mount is
then something to stage). Inputs keep miniwdl's own paths (/mnt/miniwdl_task_container/...).
"""

import logging
import os
from collections.abc import Iterable

from WDL._util import chmod_R_plus
from WDL.runtime.task_container import TaskContainer

from ..attempt import Mount
from . import Placement


class LocalPlacement(Placement):
    def __init__(self, task: TaskContainer) -> None:
        super().__init__(task)
        self._inputs_copied = False

    def container_dir(self) -> str:
        return self.task.container_dir

    def add_paths(self, host_paths: Iterable[str]) -> None:
        TaskContainer.add_paths(self.task, host_paths)

    def input_host_path(self, container_path: str) -> tuple[bool, str | None]:
        return TaskContainer._input_host_path(self.task, container_path)

    def copy_input_files(self, logger: logging.Logger) -> None:
        TaskContainer.copy_input_files(self.task, logger)
        self._inputs_copied = True

    def host_work_dir(self) -> str:
        return TaskContainer.host_work_dir(self.task)

    def reset(self, logger: logging.Logger) -> None:
        self._inputs_copied = False

    def to_container(self, host_path: str) -> str:
        relative = os.path.relpath(host_path, self.task.host_dir)
        assert not relative.startswith(".."), host_path
        return os.path.join(self.task.container_dir, relative)

    def _streams(self) -> list[tuple[str, str]]:
        # where the command appends them (container.py _argv): stdout2.txt on a retry
        host = (self.task.host_stdout_txt(), self.task.host_stderr_txt())
        return [(path, self.to_container(path)) for path in host]

    def mounts(self, writable: Iterable[str], read_only: Iterable[str]) -> tuple[Mount, ...]:
        task = self.task
        found: list[Mount] = []
        if not self._inputs_copied:
            for host_path, container_path in task.input_path_map.items():
                found.append(Mount(host_path.rstrip("/"), container_path.rstrip("/"), True))
        command = os.path.join(task.host_dir, "command")
        found.append(Mount(command, self.to_container(command), True))
        found += [Mount(host, container, False) for host, container in self._streams()]
        found.append(Mount(self.host_work_dir(), os.path.join(task.container_dir, "work"), False))
        found += [Mount(path, path, False) for path in writable]
        found += [Mount(path, self.to_container(path), True) for path in read_only]
        return tuple(found)

    def prepare(self, logger: logging.Logger) -> None:
        task = self.task
        if not self._inputs_copied:
            for container_path in task.input_path_map.values():
                mount_point = task.host_work_path(container_path)
                if not os.path.exists(mount_point.rstrip("/")):
                    task.touch_mount_point(mount_point)  # made by us, not by dockerd as root
        for host_path, _container in self._streams():
            if not os.path.exists(host_path):
                task.touch_mount_point(host_path)
        # group rw lets images that run as another uid use the mounts (as miniwdl's swarm does)
        paths = [os.path.join(task.host_dir, "command"), self.host_work_dir()]
        for path in paths + [host for host, _container in self._streams()]:
            chmod_R_plus(path, file_bits=0o660, dir_bits=0o770)
