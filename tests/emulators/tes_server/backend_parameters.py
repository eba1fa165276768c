"""resources.backend_parameters as each profile treats them (profiles.Backend): at CreateTask
and when the worker starts the task."""

from typing import Any

from .profiles import Backend
from .validate import require


def unsupported_keys(parameters: dict[str, str], backend: Backend, supported: list[str]) -> list:
    known = {k.lower() for k in supported} if backend.fold_case else set(supported)
    return sorted(k for k in parameters if (k.lower() if backend.fold_case else k) not in known)


def at_create(task: dict[str, Any], backend: Backend, supported: list[str]) -> None:
    """Refuse (HTTP 400) or rewrite the stored task's backend_parameters."""
    resources = task.get("resources") or {}
    parameters = resources.get("backend_parameters")
    if not parameters:
        return
    lowered = [k.lower() for k in parameters]
    if backend.case_duplicates_refused:
        require(len(lowered) == len(set(lowered)), "Duplicate backend_parameters were specified")
    if backend.lower_keys:
        parameters = {k.lower(): v for k, v in parameters.items()}
    unsupported = unsupported_keys(parameters, backend, supported)
    if unsupported and backend.strict == "refuse" and resources.get("backend_parameters_strict"):
        require(False, "backend parameters not supported: " + ", ".join(unsupported))
    if backend.unsupported == "drop":
        parameters = {k: v for k, v in parameters.items() if k not in unsupported}
    resources["backend_parameters"] = parameters


def shm_size(parameters: dict[str, str], backend: Backend, supported: list[str]) -> str | None:
    """The one parameter the emulator's worker applies (docker's shm_size), when supported."""
    names = {"shm_size"} if "shm_size" in supported else set()
    found = [v for k, v in parameters.items() if (k.lower() if backend.fold_case else k) in names]
    return found[-1] if found else None
