"""How each profile shows a stored task (FULL, as the worker wrote it) in a view, in a GetTask
(``listing=False``) or a ListTasks answer."""

import copy
from typing import Any


def spec_view(task: dict[str, Any], view: str, listing: bool) -> dict[str, Any]:
    """The TES v1.1 OpenAPI's view parameter: MINIMAL is id and state only; BASIC is every field
    except executor stdout/stderr, input content and system_logs; FULL is everything. Microsoft's
    TES on Azure builds the same (ContractResolvers/Minimal-, Basic-, FullTesTaskContractResolver)."""
    if view == "MINIMAL":
        return {"id": task["id"], "state": task["state"]}
    shown = copy.deepcopy(task)
    if view == "BASIC":
        for log in shown.get("logs") or []:
            log.pop("system_logs", None)
            for executor_log in log.get("logs") or []:
                executor_log.pop("stdout", None)
                executor_log.pop("stderr", None)
        for item in shown.get("inputs") or []:
            item.pop("content", None)
    return shown


def funnel_view(task: dict[str, Any], view: str, listing: bool) -> dict[str, Any]:
    """Funnel (server/marshal.go CustomMarshal): MINIMAL is TaskMin (id, state); BASIC is
    TaskBasic, whose executors are ExecutorBasic (command, env, ignore_error, image, stdin,
    workdir: an executor's stdout and stderr paths are dropped too) and whose logs are
    TaskLogBasic (no system_logs); DetectView answers a FULL task without system logs in the
    BASIC shape. Unpopulated fields are emitted (EmitUnpopulated): stdout/stderr as ""."""
    if view == "MINIMAL":
        return {"id": task["id"], "state": task["state"]}
    logs = task.get("logs") or []
    if view == "FULL" and logs and logs[0].get("system_logs"):
        return copy.deepcopy(task)
    shown = spec_view(task, "BASIC", listing)
    for executor in shown.get("executors") or []:
        executor.pop("stdout", None)
        executor.pop("stderr", None)
    for log in shown.get("logs") or []:
        for executor_log in log.get("logs") or []:
            executor_log.update(stdout="", stderr="")
    return shown


TESK_USER = "omnibio-tests"  # guess: the USER_ID label of a TESK deployment without auth


def tesk_view(task: dict[str, Any], view: str, listing: bool) -> dict[str, Any]:
    """TESK (tesk-api TesServiceImpl.getTask, TesKubernetesConverter): MINIMAL is id and state,
    plus one log with the USER_ID metadata on GetTask (fromK8sJobsToTesTaskMinimal, not when
    listing); BASIC is the task as submitted (input content removed) with one log: metadata,
    start/end time, and per started executor start/end time, stdout "" and exit_code once its pod
    terminated (extractExecutorLogFromK8sJobAndPod): no stderr, no system_logs, no outputs; FULL
    adds input content, the executor pod's log as stdout and the taskmaster's log as one system
    log."""
    metadata = {"USER_ID": TESK_USER}
    if view == "MINIMAL":
        minimal: dict[str, Any] = {"id": task["id"], "state": task["state"]}
        if not listing:
            minimal["logs"] = [{"metadata": metadata}]
        return minimal
    shown = {k: copy.deepcopy(v) for k, v in task.items() if k != "logs"}
    if view == "BASIC":
        for item in shown.get("inputs") or []:
            item.pop("content", None)
    stored = (task.get("logs") or [{}])[-1]
    log: dict[str, Any] = {"metadata": metadata, "logs": []}
    for key in ("start_time", "end_time"):
        if stored.get(key):
            log[key] = stored[key]
    for executor_log in stored.get("logs") or []:
        shown_log = {k: v for k, v in executor_log.items() if k not in ("stdout", "stderr")}
        # the pod log is one stream: stdout and stderr together (readPodLog)
        pod_log = (executor_log.get("stdout") or "") + (executor_log.get("stderr") or "")
        shown_log["stdout"] = pod_log if view == "FULL" else ""
        log["logs"].append(shown_log)
    if view == "FULL" and stored.get("system_logs"):
        log["system_logs"] = ["\n".join(stored["system_logs"])]
    shown["logs"] = [log]
    return shown
