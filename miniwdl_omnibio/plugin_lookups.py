"""miniwdl's plugin lookups, answered from memory after the first.

miniwdl finds its plugins with ``importlib.metadata.entry_points(group=...)`` each time it needs
one, and twice per task: task plugins in ``WDL.runtime.task.run_local_task``, the container
backend in ``WDL.runtime.task_container.new``. Each call reads the entry points of every installed
distribution: about 12 ms of the launcher's CPU per task with 161 of them (this project's test
environment), spent with the GIL held between a task's end and the next task's start. A run does
not install distributions, so the answer to a lookup is kept for the life of the process, per
``sys.path``; a distribution installed while a run goes on is seen by the next run.
"""

import importlib.metadata
import sys
from collections.abc import Callable
from typing import Any

_Lookup = Callable[..., Any]


def remember() -> None:
    """From now on, a lookup with arguments (a group, a name) under the same ``sys.path`` gets
    the answer of the first: an ``EntryPoints``, an immutable tuple, so sharing it is safe. A
    lookup without arguments (a mutable mapping in Python 3.10 and 3.11) is always made anew."""
    lookup: _Lookup = importlib.metadata.entry_points
    if getattr(lookup, "remembers", False):
        return
    answers: dict[tuple[Any, ...], Any] = {}

    def entry_points(**params: Any) -> Any:
        if not params:
            return lookup()
        key = (tuple(sys.path), tuple(sorted(params.items())))
        if key not in answers:
            answers[key] = lookup(**params)
        return answers[key]

    entry_points.remembers = True  # type: ignore[attr-defined]
    importlib.metadata.entry_points = entry_points
