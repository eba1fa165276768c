"""How omnibio_azurebatch groups a burst of submissions into addtaskcollection requests, and
reads their results in either spelling of the service's enums. The client is a stand-in for the
edge cases; the emulator tests (tests/e2e/azurebatch) send real requests."""

import dataclasses
import json
import logging
from datetime import datetime, timezone

import pytest
from azure.batch import models as batch_models

from miniwdl_omnibio import retrying
from miniwdl_omnibio.engines.azurebatch.translate import (
    COLLECTION_BYTES,
    COLLECTION_MAX,
    split_collection,
)
from miniwdl_omnibio.engines.base import Accepted, Submission

from .test_azurebatch_translation import _attempt, _shared

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


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
    bodies = [batch_models.BatchTaskGroup(task_values=g).as_dict() for g in groups]
    assert all(len(json.dumps(body).encode("utf-8")) <= COLLECTION_BYTES for body in bodies)


def _result(task_id: str, status: str, code: str | None = None):
    doc = {"status": status, "taskId": task_id, "lastModified": T0.isoformat()}
    if code:
        doc["error"] = {"code": code, "message": {"value": f"{code} happened"}}
    return batch_models.BatchTaskCreateResult(doc)


class _Collections:
    """A client whose addtaskcollection answers come from a list, and keeps what it was sent."""

    def __init__(self, answers):
        self.answers = answers
        self.sent: list[list[str]] = []

    def create_task_collection(self, job_id, group):
        self.sent.append([t.id for t in group.task_values])
        return batch_models.BatchCreateTaskCollectionResult({"value": self.answers.pop(0)})


@pytest.mark.parametrize(
    "client_error, server_error", [("ClientError", "ServerError"), ("clienterror", "servererror")]
)
def test_results_in_either_spelling(monkeypatch, tmp_path, client_error, server_error):
    monkeypatch.setattr(retrying, "FIRST_PAUSE", 0.0)
    engine = _shared(monkeypatch)
    engine.job_id = "job"
    engine.client = _Collections(  # type: ignore[assignment]
        [
            [
                _result("ok", "Success"),
                _result("exists", client_error, "TaskExists"),  # an earlier try added it
                _result("bad", client_error, "InvalidPropertyValue"),
                _result("busy", server_error, "ServerBusy"),
            ],
            [_result("busy", "Success")],
        ]
    )
    names = ("ok", "exists", "bad", "busy")
    attempt = dataclasses.replace(_attempt(), host_dir=str(tmp_path))
    submissions = [Submission(attempt, _task(name), logging.getLogger()) for name in names]
    ok, exists, bad, busy = engine.submit_many(submissions)
    assert engine.client.sent == [list(names), ["busy"]]  # only the server error again
    assert ok == Accepted("ok", T0) and busy == Accepted("busy", T0)  # memo: created, by Batch
    assert exists == Accepted("exists", None)  # created by an earlier try: when is not known
    assert isinstance(bad, Exception) and "InvalidPropertyValue" in str(bad)
    assert "Azure Batch did not accept task bad" in str(bad)
