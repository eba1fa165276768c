"""omnibio_azurebatch under the rules the real service documents (issue: as the real services
behave), each reproduced by the emulator so that the test fails without the engine's handling:
task collections by count and size, the task's user, GPUs, ids that differ only by case,
throttling without Retry-After, polls that list only what changed, and the choices the documents
leave open (ENTRYPOINT, failure codes), in each alternative."""

import json
import logging
import math
import os
import subprocess
import threading
import time

import pytest
from azure.batch import BatchClient
from azure.batch import models as batch_models
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Mount, Resources, TaskAttempt
from miniwdl_omnibio.engines.azurebatch import status as azurebatch_status
from miniwdl_omnibio.engines.azurebatch.engine import STATUS_FIELDS, AzureBatchEngine
from miniwdl_omnibio.engines.base import Accepted, Phase, Submission, Submitted
from miniwdl_omnibio.tracker import Tracker
from tests.emulators.azurebatch_emulator import BatchEmulator
from tests.helpers import Run, error_line, wait_until

from .conftest import azurebatch_config, read_log, run_azurebatch, write

LOG = logging.getLogger("test")
COLLECTION = "POST /jobs/{jobId}/addtaskcollection"
LIST_TASKS = "GET /jobs/{jobId}/tasks"
IDLE_POOL = {  # a pool without nodes: tasks added to it stay queued, nothing runs
    "id": "idle-pool",
    "vmSize": "STANDARD_D2S_V3",
    "virtualMachineConfiguration": {
        "imageReference": {"publisher": "p", "offer": "o", "sku": "s", "version": "latest"},
        "nodeAgentSKUId": "batch.node.ubuntu 22.04",
        "containerConfiguration": {"type": "dockerCompatible"},
    },
    "targetLowPriorityNodes": 0,
    "taskSlotsPerNode": 4,
}
ENTRYPOINT_IMAGE = "omnibio/test-entrypoint:latest"


def _run(batch: BatchEmulator, workdir, wdl_text: str, **overrides: str) -> Run:
    return run_azurebatch(batch, workdir, write(workdir / "t.wdl", wdl_text), **overrides)


def _jobs(batch: BatchEmulator) -> set[str]:
    return set(batch.state()["jobs"])


# --- the engine in this process, for what needs many tasks at once ------------------------------


@pytest.fixture
def engine(batch, workdir, monkeypatch):
    """The real engine, started as miniwdl starts it, on a pool that runs nothing."""
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT_KEY", batch.key)
    if IDLE_POOL["id"] not in {p["id"] for p in batch.service.list_pools()}:
        batch.service.add_pool(json.loads(json.dumps(IDLE_POOL)))
    section = azurebatch_config(batch, str(workdir), pool_id=IDLE_POOL["id"])
    started = AzureBatchEngine.start(Loader(LOG, filenames=[], overrides=section), LOG)
    started.ensure_job("run", LOG)
    batch.reset_counts()
    yield started
    started.shutdown(LOG)


def _attempt(
    workdir, name: str, padding: int = 0, argv: tuple[str, ...] = ("true",)
) -> TaskAttempt:
    host_dir = os.path.join(str(workdir), "run", name)
    os.makedirs(host_dir, exist_ok=True)
    open(os.path.join(host_dir, "stdout.txt"), "a").close()  # the command's start check
    return TaskAttempt(
        run_id=f"run.{name}.1",
        call=name,
        workflow_run="run",
        attempt=1,
        image="ubuntu:22.04",
        argv=argv,
        workdir=host_dir,
        env={"INPUTS_JSON": "x" * padding},
        mounts=(Mount(str(workdir), str(workdir), False),),
        resources=Resources(1, 0, 0, 0, None, None, 0),
        tags={},
        stdout_path=os.path.join(host_dir, "stdout.txt"),
        stderr_path=os.path.join(host_dir, "stderr.txt"),
        host_dir=host_dir,
    )


def _submit_together(engine: AzureBatchEngine, attempts: list[TaskAttempt]) -> list[Exception]:
    """Every attempt submitted through the tracker from its own thread, all released at once (a
    scatter): the tracker gathers them into bursts for the engine's submit_many."""
    tracker = Tracker(engine, LOG, unlisted_grace=60, background=False)
    barrier = threading.Barrier(len(attempts))
    errors: list[Exception] = []

    def submit(attempt: TaskAttempt) -> None:
        request = engine.translate(attempt)
        barrier.wait()
        try:
            tracker.submit(attempt, request, LOG)
        except Exception as exn:
            errors.append(exn)

    threads = [threading.Thread(target=submit, args=(a,)) for a in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


def _job_tasks(batch: BatchEmulator, engine: AzureBatchEngine) -> dict:
    return batch.state()["jobs"][engine.job_id]["tasks"]


@pytest.mark.parametrize("count", [7, 150])
def test_tasks_ready_together_share_collections(batch, engine, workdir, count):
    errors = _submit_together(engine, [_attempt(workdir, f"call-t{i}") for i in range(count)])
    assert not errors
    assert len(_job_tasks(batch, engine)) == count
    requests = batch.counts()["requests"]
    assert requests.get(COLLECTION) == math.ceil(count / 100), requests
    assert not requests.get("POST /jobs/{jobId}/tasks"), requests


def test_large_tasks_are_split_by_serialized_size(batch, engine, workdir):
    """30 tasks of 60 KB: 1.8 MB in one request would be refused (< 1 MB allowed)."""
    attempts = [_attempt(workdir, f"call-big{i}", padding=60_000) for i in range(30)]
    assert not _submit_together(engine, attempts)
    assert len(_job_tasks(batch, engine)) == 30
    counts = batch.counts()
    assert 2 <= counts["requests"][COLLECTION] <= 3
    assert not counts["statuses"].get(f"413 {COLLECTION}"), counts["statuses"]


def test_request_body_too_large_halves_the_collection(batch, engine, workdir):
    batch.configure(collection_bytes=300_000)  # smaller than the engine's own budget
    attempts = [_attempt(workdir, f"call-big{i}", padding=60_000) for i in range(30)]
    assert not _submit_together(engine, attempts)
    assert len(_job_tasks(batch, engine)) == 30
    assert batch.counts()["statuses"].get(f"413 {COLLECTION}", 0) >= 1


def test_the_emulator_enforces_both_collection_limits(batch):
    client = BatchClient(batch.url, AzureNamedKeyCredential(batch.account, batch.key))
    job_id = f"limits-{int(time.time() * 1000)}"
    client.create_job(
        batch_models.BatchJobCreateOptions(
            id=job_id, pool_info=batch_models.BatchPoolInfo(pool_id=IDLE_POOL["id"])
        )
    )

    def tasks(count: int, padding: int) -> batch_models.BatchTaskGroup:
        settings = batch_models.BatchTaskContainerSettings(image_name="ubuntu:22.04")
        return batch_models.BatchTaskGroup(
            task_values=[
                batch_models.BatchTaskCreateOptions(
                    id=f"t{i}",
                    command_line="true",
                    container_settings=settings,
                    environment_settings=[
                        batch_models.EnvironmentSetting(name="PAD", value="x" * padding)
                    ],
                )
                for i in range(count)
            ]
        )

    for group in (tasks(101, 0), tasks(20, 60_000)):
        with pytest.raises(HttpResponseError) as raised:
            client.create_task_collection(job_id, group)
        assert raised.value.status_code == 413
        assert raised.value.error.code == "RequestBodyTooLarge"


def _running_engine(batch, workdir, monkeypatch) -> AzureBatchEngine:
    for name in [n for n in os.environ if n.startswith("MINIWDL__")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_BATCH_ACCOUNT_KEY", batch.key)
    section = azurebatch_config(batch, str(workdir))
    return AzureBatchEngine.start(Loader(LOG, filenames=[], overrides=section), LOG)


def _submitted(engine: AzureBatchEngine, attempt: TaskAttempt) -> Submitted:
    """The tracker's record of the attempt, submitted alone."""
    request = engine.translate(attempt)
    (accepted,) = engine.submit_many([Submission(attempt, request, LOG)])
    assert isinstance(accepted, Accepted), accepted
    return Submitted(accepted.handle, attempt, LOG, time.monotonic(), request, accepted.memo)


def _until_done(engine: AzureBatchEngine, records: list[Submitted], handles: set[str]) -> dict:
    def done() -> dict | None:
        statuses = engine.fetch(records, True)
        for record in records:  # as the tracker keeps them
            record.status = statuses[record.handle]
        return statuses if all(statuses[h].phase is Phase.DONE for h in handles) else None

    return wait_until(done, f"tasks {sorted(handles)} to be done", 120)


def test_a_transition_listed_late_is_still_seen(batch, workdir, monkeypatch):
    """A listing may show a transition after a later one (# guess: how late the service's lists
    can be): the margin below the latest transition seen still lists it."""
    engine = _running_engine(batch, workdir, monkeypatch)
    try:
        early = _submitted(engine, _attempt(workdir, "call-early"))
        early_handle = early.handle
        batch.hold(engine.job_id, early_handle)  # lists show it queued ...
        wait_until(
            lambda: batch.service.get_task(engine.job_id, early_handle)["state"] == "completed",
            "the early task to complete",
        )
        late = _submitted(engine, _attempt(workdir, "call-late"))  # ... while a later one ends
        records = [early, late]
        _until_done(engine, records, {late.handle})
        batch.hold(engine.job_id, early_handle, held=False)
        assert _until_done(engine, records, {early_handle})[early_handle].exit_code == 0
    finally:
        engine.shutdown(LOG)


def test_polls_list_only_tasks_changed_since_the_oldest_asked_was_created(
    batch, workdir, monkeypatch
):
    """A task that completed before the oldest attempt still out was created is not listed."""
    monkeypatch.setattr(
        azurebatch_status, "CHANGE_MARGIN", azurebatch_status.timedelta(seconds=0.5)
    )
    engine = _running_engine(batch, workdir, monkeypatch)
    try:
        records = [_submitted(engine, _attempt(workdir, f"call-early{i}")) for i in range(3)]
        _until_done(engine, records, {r.handle for r in records})
        wait_until(  # their exit records come first: Batch marks them completed just after
            lambda: all(
                batch.service.get_task(engine.job_id, r.handle)["state"] == "completed"
                for r in records
            ),
            "the service to mark the early tasks completed",
        )
        ended = max(
            azurebatch_status.datetime.fromisoformat(
                batch.service.get_task(engine.job_id, r.handle)["stateTransitionTime"]
            )
            for r in records
        )
        wait_until(  # the service's clock passes their ends, plus the margin
            lambda: (
                azurebatch_status.datetime.now(azurebatch_status.timezone.utc)
                > ended + 2 * azurebatch_status.CHANGE_MARGIN
            ),
            "the clock to pass the early tasks' ends, plus the margin",
        )
        late = _submitted(engine, _attempt(workdir, "call-late"))
        changed = azurebatch_status.changed_since([late.memo])
        assert changed is not None
        listed = engine.client.list_tasks(engine.job_id, filter=changed, select=STATUS_FIELDS)
        assert {task.id for task in listed} == {"call-late-1"}
    finally:
        engine.shutdown(LOG)


# --- whole runs ----------------------------------------------------------------------------------

WHOAMI = """
version 1.1
task t {
  command <<< id -u >>>
  output { String uid = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" }
}
"""


def test_tasks_run_as_the_pool_admin_auto_user(batch, workdir):
    """The emulator runs a task as an unprivileged uid unless it asks for admin elevation, as
    Batch maps its auto-user into the container: the run directory is then not writable."""
    run = _run(batch, workdir, WHOAMI)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["t.uid"] == "0"


def test_opting_out_of_admin_runs_as_the_non_admin_auto_user(batch, workdir):
    before = _jobs(batch)
    run = _run(batch, workdir, WHOAMI, auto_user_admin="false")
    assert run.returncode != 0
    cause = run.error_json()["cause"]
    assert "Permission denied" in cause.get("batch_stderr_tail", ""), cause
    job = (_jobs(batch) - before).pop()
    assert "autoUser" not in batch.service.get_task(job, "t-1")["userIdentity"] or (
        batch.service.get_task(job, "t-1")["userIdentity"]["autoUser"]["elevationLevel"] != "admin"
    )


def test_a_gpu_task_on_a_pool_without_gpus_fails_at_once(batch, workdir):
    before = _jobs(batch)
    run = _run(
        batch,
        workdir,
        'version 1.1\ntask t { command <<< nvidia-smi >>> runtime { docker: "ubuntu:22.04" gpu: true } }\n',
    )
    assert run.returncode != 0
    line = error_line(run)
    assert "omnibio-pool" in line and "STANDARD_D2S_V3" in line and "GPU" in line, line
    assert _jobs(batch) == before  # nothing was created


GPU_POOL = {  # an N-series size: Batch enables its GPUs for container tasks by itself
    **IDLE_POOL,
    "id": "gpu-pool",
    "vmSize": "STANDARD_NC6S_V3",
    "targetLowPriorityNodes": 1,
}


def test_a_gpu_task_on_a_gpu_pool_is_left_to_batch(batch, workdir):
    """The emulator's nodes have no GPU and, like docker without the NVIDIA runtime, refuse
    --gpus: the task runs only if the engine leaves enabling GPUs to Batch."""
    if GPU_POOL["id"] not in {p["id"] for p in batch.service.list_pools()}:
        batch.service.add_pool(json.loads(json.dumps(GPU_POOL)))
    run = _run(
        batch,
        workdir,
        "version 1.1\ntask t { command <<< echo ran >>> output { String o = read_string(stdout()) }"
        ' runtime { docker: "ubuntu:22.04" gpu: true } }\n',
        pool_id=GPU_POOL["id"],
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["t.o"] == "ran"


def test_ids_differing_only_by_case_are_distinct_tasks(batch, workdir):
    run = _run(
        batch,
        workdir,
        """
version 1.1
workflow w {
  call Align
  call align
  output { String upper = Align.out  String lower = align.out }
}
task Align { command <<< echo upper >>> output { String out = read_string(stdout()) } runtime { docker: "ubuntu:22.04" } }
task align { command <<< echo lower >>> output { String out = read_string(stdout()) } runtime { docker: "ubuntu:22.04" } }
""",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs == {"w.upper": "upper", "w.lower": "lower"}


@pytest.mark.parametrize("route", [COLLECTION, LIST_TASKS])
def test_throttling_without_retry_after(batch, workdir, route):
    """429 with no Retry-After: azure-core does not retry a POST so, and a poll may meet it."""
    batch.throttle(3, 429, route=route, retry_after=False)
    run = _run(
        batch,
        workdir,
        'version 1.1\ntask t { command <<< echo hi >>> output { String o = read_string(stdout()) } runtime { docker: "ubuntu:22.04" } }\n',
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["t.o"] == "hi"
    counts = batch.counts()
    assert counts["statuses"].get(f"429 {route}") == 3 and counts["requests"][route] >= 4


@pytest.fixture(scope="module")
def entrypoint_image(docker_rig):
    """An image whose ENTRYPOINT would swallow the task's command."""
    dockerfile = 'FROM ubuntu:22.04\nENTRYPOINT ["/bin/echo", "the image entrypoint ran"]\n'
    subprocess.run(
        ["docker", "build", "-q", "-t", ENTRYPOINT_IMAGE, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    return ENTRYPOINT_IMAGE


@pytest.mark.parametrize("entrypoint", ["append", "override"])
def test_image_entrypoint_under_either_reading_of_the_docs(
    batch, workdir, entrypoint_image, entrypoint
):
    batch.configure(entrypoint=entrypoint)
    run = _run(
        batch,
        workdir,
        "version 1.1\ntask t { command <<< echo the task ran >>> output { String o = read_string(stdout()) } "
        f'runtime {{ docker: "{entrypoint_image}" }} }}\n',
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["t.o"] == "the task ran"
    assert batch.key not in read_log(run.dir)
