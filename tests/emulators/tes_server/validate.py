"""What the test server refuses at CreateTask (HTTP 400), each rule with its source: the TES
v1.1 OpenAPI (ga4gh/task-execution-schemas openapi/task_execution_service.openapi.yaml),
Funnel's tes/validate.go, and Microsoft's TES on Azure (TaskServiceApi.cs CreateTaskAsync)."""

import copy
from typing import Any

KNOWN_FIELDS = {
    "name",
    "description",
    "inputs",
    "outputs",
    "resources",
    "executors",
    "volumes",
    "tags",
    "id",
    "state",
    "logs",
    "creation_time",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ApiError(400, message)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _absolute(path: Any, what: str) -> None:
    # the spec: input, output, stdin/stdout/stderr and workdir paths "Must be an absolute path";
    # funnel validate.go: "must be an absolute path" for each
    require(isinstance(path, str) and path.startswith("/"), f"{what} must be an absolute path")
    # guess: no source names "/" itself; funnel's FileMapper maps it to the whole task
    # directory, which would bind over the container's root. Refused as a path at the root.
    require(path.rstrip("/") != "", f"{what} must not be the root directory")


def validate_task(doc: Any) -> dict[str, Any]:
    """Check a CreateTask body; returns the task as the server stores it."""
    require(isinstance(doc, dict), "the body must be a JSON object (tesTask)")
    # guess: servers differ on unknown fields (protobuf-based Funnel drops them); refused here
    # so a client cannot rely on a field TES does not define
    unknown = sorted(set(doc) - KNOWN_FIELDS)
    require(not unknown, f"unknown tesTask fields: {', '.join(unknown)}")
    # TES on Azure: "Id should not be included by the client in the request"
    require(not doc.get("id"), "id must not be set by the client")
    executors = doc.get("executors")
    # the spec: tesTask requires executors; funnel: "at least one executor is required"
    require(isinstance(executors, list) and len(executors) > 0, "executors: at least one")
    for i, executor in enumerate(executors):
        require(isinstance(executor, dict), f"executors[{i}] must be an object")
        # the spec: tesExecutor requires image and command (funnel: "required, but empty")
        image = executor.get("image")
        require(isinstance(image, str) and image.strip() != "", f"executors[{i}].image is required")
        command = executor.get("command")
        require(
            isinstance(command, list) and command and all(isinstance(c, str) for c in command),
            f"executors[{i}].command must be a non-empty list of strings",
        )
        require(
            executor.get("env") is None or _is_str_map(executor["env"]),
            f"executors[{i}].env must map strings to strings",
        )
        for key in ("workdir", "stdin", "stdout", "stderr"):
            if executor.get(key) is not None:
                _absolute(executor[key], f"executors[{i}].{key}")
    for i, item in enumerate(doc.get("inputs") or []):
        require(isinstance(item, dict), f"inputs[{i}] must be an object")
        _absolute(item.get("path"), f"inputs[{i}].path")
        has_url, has_content = item.get("url") is not None, item.get("content") is not None
        # the spec: url "REQUIRED, unless content is set"; funnel and TES on Azure also refuse
        # both at once ("Input URL and Content cannot be both set")
        require(has_url or has_content, f"inputs[{i}]: one of url and content must be set")
        require(not (has_url and has_content), f"inputs[{i}]: url and content cannot both be set")
        kind = item.get("type", "FILE")
        require(kind in ("FILE", "DIRECTORY"), f"inputs[{i}].type must be FILE or DIRECTORY")
        # TES on Azure: "Content inputs cannot be directories."
        require(not (has_content and kind == "DIRECTORY"), f"inputs[{i}]: content is a FILE")
    for i, item in enumerate(doc.get("outputs") or []):
        require(isinstance(item, dict), f"outputs[{i}] must be an object")
        # the spec: tesOutput requires path and url
        require(isinstance(item.get("url"), str) and item["url"], f"outputs[{i}].url is required")
        _absolute(item.get("path"), f"outputs[{i}].path")
        require(
            item.get("type", "FILE") in ("FILE", "DIRECTORY"),
            f"outputs[{i}].type must be FILE or DIRECTORY",
        )
    for i, volume in enumerate(doc.get("volumes") or []):
        _absolute(volume, f"volumes[{i}]")  # funnel: "Task.Volumes[%d]: must be an absolute path"
    require(doc.get("tags") is None or _is_str_map(doc["tags"]), "tags must map strings to strings")
    resources = doc.get("resources") or {}
    require(isinstance(resources, dict), "resources must be an object")
    for key in ("cpu_cores", "ram_gb", "disk_gb"):
        value = resources.get(key)
        # TES on Azure: "cpu_cores must be greater than zero" (and ram_gb, disk_gb)
        require(
            value is None
            or (isinstance(value, int | float) and not isinstance(value, bool) and value > 0),
            f"resources.{key} must be a number greater than zero",
        )
    parameters = resources.get("backend_parameters")
    require(
        parameters is None or _is_str_map(parameters),
        "resources.backend_parameters must map strings to strings",
    )
    task = {
        k: copy.deepcopy(v) for k, v in doc.items() if k not in ("state", "logs", "creation_time")
    }
    for item in (task.get("inputs") or []) + (task.get("outputs") or []):
        item.setdefault("type", "FILE")  # the spec: tesFileType default FILE
    return task
