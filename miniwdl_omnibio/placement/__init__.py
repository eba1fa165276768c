"""Where a task attempt's files are, for the container and for the launcher.

Two strategies, chosen by the engine: ``LocalPlacement`` (omnibio_docker, and engines that stage
files: miniwdl's virtual container directory with each input bound read-only in place) and
``SharedPlacement`` (engines whose workers mount the filesystem holding the run directory: every
path in place, inputs through the read-only view). The container's miniwdl hooks delegate here.
"""

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable

from WDL.runtime.task_container import TaskContainer

from ..attempt import Mount


class Placement(ABC):
    def __init__(self, task: TaskContainer) -> None:
        self.task = task

    @abstractmethod
    def container_dir(self) -> str:
        """The task's directory as the container sees it."""

    @abstractmethod
    def add_paths(self, host_paths: Iterable[str]) -> None:
        """Give each input a container path (miniwdl's TaskContainer.add_paths)."""

    @abstractmethod
    def input_host_path(self, container_path: str) -> tuple[bool, str | None]:
        """Map a container path back to its host input (miniwdl's _input_host_path)."""

    @abstractmethod
    def copy_input_files(self, logger: logging.Logger) -> None: ...

    @abstractmethod
    def host_work_dir(self) -> str: ...

    @abstractmethod
    def reset(self, logger: logging.Logger) -> None:
        """Before a retry: set the failed attempt's files aside."""

    @abstractmethod
    def to_container(self, host_path: str) -> str:
        """The container path of a file the plugin writes under the task's host directory."""

    @abstractmethod
    def mounts(self, writable: Iterable[str], read_only: Iterable[str]) -> tuple[Mount, ...]:
        """Every mount of the attempt, plus the given host directories (e.g. a file:// result
        directory, read-write; spilled contract values, read-only). Pure."""

    @abstractmethod
    def prepare(self, logger: logging.Logger) -> None:
        """Make the host side ready for the mounts: mount points, stream files, permissions."""
