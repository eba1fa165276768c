"""How omnibio_azurebatch groups tasks into addtaskcollection requests, and reads their results
in either spelling of the service's enums. The sender is a stand-in for the edge cases; the
emulator tests (tests/e2e/azurebatch) send real requests."""

import logging

import pytest
from azure.batch import models as batch_models

from miniwdl_omnibio.engines.azurebatch import tasks as azurebatch_tasks
from miniwdl_omnibio.engines.azurebatch.tasks import (
    COLLECTION_BYTES,
    COLLECTION_MAX,
    TaskCollections,
    serialized_size,
    split_collection,
)


def _task(name: str, padding: int = 0) -> batch_models.BatchTaskCreateOptions:
    env = [batch_models.EnvironmentSetting(name="PAD", value="x" * padding)] if padding else None
    return batch_models.BatchTaskCreateOptions(
        id=name, command_line="true", environment_settings=env
    )


def test_groups_hold_at_most_100_tasks_and_stay_under_the_size_budget():
    small = [_task(f"t{i}") for i in range(250)]
    assert [len(g) for g in split_collection(small)] == [COLLECTION_MAX, COLLECTION_MAX, 50]
    large = [_task(f"t{i}", padding=100_000) for i in range(25)]
    groups = split_collection(large)
    assert [len(g) for g in groups] == [8, 8, 8, 1]
    assert all(sum(serialized_size(t) for t in g) <= COLLECTION_BYTES for g in groups)


def _result(task_id: str, status: str, code: str | None = None):
    doc = {"status": status, "taskId": task_id}
    if code:
        doc["error"] = {"code": code, "message": {"value": f"{code} happened"}}
    return batch_models.BatchTaskCreateResult(doc)


@pytest.mark.parametrize(
    "client_error, server_error", [("ClientError", "ServerError"), ("clienterror", "servererror")]
)
def test_results_in_either_spelling(monkeypatch, client_error, server_error):
    monkeypatch.setattr(azurebatch_tasks.time, "sleep", lambda seconds: None)
    answers = [
        [
            _result("ok", "Success"),
            _result("exists", client_error, "TaskExists"),  # an earlier try added it
            _result("bad", client_error, "InvalidPropertyValue"),
            _result("busy", server_error, "ServerBusy"),
        ],
        [_result("busy", "Success")],
    ]
    sent = []

    def send(tasks):
        sent.append([t.id for t in tasks])
        return answers.pop(0)

    collections = TaskCollections(send, logging.getLogger("test"))
    tasks = [_task(name) for name in ("ok", "exists", "bad", "busy")]
    errors = collections._add_group(tasks)
    assert sent == [["ok", "exists", "bad", "busy"], ["busy"]]  # only the server error again
    assert list(errors) == ["bad"] and "InvalidPropertyValue" in str(errors["bad"])
