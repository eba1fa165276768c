"""The Batch emulator driven directly by the azure-batch SDK: the operations the engine does not
use every run (paging, deletes, listing files, errors) behave as the SDK expects of the service."""

import time

import pytest
from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from tests.emulators.azurebatch_emulator import BatchEmulator
from tests.helpers import wait_until

CONTAINER = batch_models.BatchTaskContainerSettings(
    image_name="ubuntu:22.04", working_directory="taskWorkingDirectory"
)


@pytest.fixture
def client(batch: BatchEmulator) -> BatchClient:
    return BatchClient(batch.url, AzureNamedKeyCredential(batch.account, batch.key))


def _wait_completed(client: BatchClient, job_id: str, count: int, timeout: float = 60) -> list:
    def completed() -> list | None:
        done = list(
            client.list_tasks(
                job_id, filter="state eq 'completed'", select=["id", "state", "executionInfo"]
            )
        )
        return done if len(done) >= count else None

    return wait_until(completed, f"{count} tasks of {job_id} to complete", timeout)


def test_jobs_tasks_files_and_paging(client, batch):
    job_id = f"sdk-{int(time.time() * 1000)}"
    client.create_job(
        batch_models.BatchJobCreateOptions(
            id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id="omnibio-pool")
        )
    )
    with pytest.raises(ResourceExistsError):
        client.create_job(
            batch_models.BatchJobCreateOptions(
                id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id="omnibio-pool")
            )
        )
    tasks = [
        batch_models.BatchTaskCreateOptions(
            id=f"t{i}",
            command_line=f"/bin/sh -c 'echo out{i}; echo err{i} >&2; pwd > here'",
            container_settings=CONTAINER,
        )
        for i in range(5)
    ]
    result = client.create_tasks(job_id, tasks)
    assert sorted(r.task_id for r in result.result_values) == [f"t{i}" for i in range(5)]
    done = _wait_completed(client, job_id, 5)
    assert all(
        t.execution_info.exit_code == 0 and t.execution_info.result.lower() == "success"
        for t in done
    )
    batch.reset_counts()
    assert len(list(client.list_tasks(job_id, max_results=2))) == 5  # 3 pages, the SDK follows
    counts = batch.counts()  # the benchmark tells one listing's later pages from new listings
    assert counts["requests"]["GET /jobs/{jobId}/tasks"] == 3
    assert counts["next_pages"]["GET /jobs/{jobId}/tasks"] == 2
    files = {f.name: f for f in client.list_task_files(job_id, "t3", recursive=True)}
    assert files["wd"].is_directory and files["stdout.txt"].properties.content_length == len(
        "out3\n"
    )
    assert b"".join(client.download_task_file(job_id, "t3", "stderr.txt")) == b"err3\n"
    # workingDirectory taskWorkingDirectory: the command ran in the task's wd on its node
    assert b"".join(client.download_task_file(job_id, "t3", "wd/here")).strip().endswith(b"/t3/wd")
    client.delete_task(job_id, "t0")
    with pytest.raises(ResourceNotFoundError):
        client.get_task(job_id, "t0")
    assert [j.id for j in client.list_jobs(filter=f"id eq '{job_id}'")] == [job_id]
    client.begin_delete_job(job_id, polling_interval=1).result(timeout=30)
    with pytest.raises(ResourceNotFoundError):
        client.get_job(job_id)


def test_errors_are_the_services(client, batch):
    assert "omnibio-pool" in [p.id for p in client.list_pools()]
    with pytest.raises(HttpResponseError) as raised:
        list(client.list_tasks("no-such-job"))
    assert raised.value.status_code == 404 and raised.value.error.code == "JobNotFound"
    job_id = f"sdk-err-{int(time.time() * 1000)}"
    client.create_job(
        batch_models.BatchJobCreateOptions(
            id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id="omnibio-pool")
        )
    )
    with pytest.raises(HttpResponseError) as raised:
        list(client.list_tasks(job_id, filter="commandLine eq 'x'"))
    assert (
        raised.value.status_code == 400 and raised.value.error.code == "InvalidQueryParameterValue"
    )
    with pytest.raises(HttpResponseError) as raised:
        client.create_task(
            job_id,
            batch_models.BatchTaskCreateOptions(
                id="bad id!", command_line="true", container_settings=CONTAINER
            ),
        )
    assert raised.value.error.code == "InvalidPropertyValue"
    client.create_task(
        job_id,
        batch_models.BatchTaskCreateOptions(
            id="slow", command_line="sleep 60", container_settings=CONTAINER
        ),
    )
    client.terminate_task(job_id, "slow")
    task = _wait_completed(client, job_id, 1)[0]
    assert task.execution_info.failure_info.code == "TaskEnded"
    with pytest.raises(ResourceExistsError) as raised:
        client.terminate_task(job_id, "slow")
    assert raised.value.error.code == "TaskCompleted"
    client.begin_terminate_job(job_id, {"terminateReason": "test"}, polling_interval=1).result(
        timeout=30
    )  # type: ignore[arg-type]
    assert client.get_job(job_id).state == "completed"
    with pytest.raises(ResourceExistsError) as raised:
        client.create_task(
            job_id,
            batch_models.BatchTaskCreateOptions(
                id="late", command_line="true", container_settings=CONTAINER
            ),
        )
    assert raised.value.error.code == "JobCompleted"
