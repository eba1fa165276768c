"""omnibio_azurebatch end to end: real miniwdl runs, the real azure-batch SDK, the Batch emulator
(tasks as containers on the local dockerd) and Azurite for results.json."""

import json
import os
import signal

import docker
import pytest
from azure.storage.blob import BlobServiceClient

from tests.emulators.azurebatch_emulator import LABEL_JOB, BatchEmulator
from tests.emulators.azurebatch_emulator.service import parse_duration
from tests.helpers import miniwdl_env, popen_miniwdl, run_miniwdl, wait_until, workflow_run_of

from .conftest import (
    BACKEND,
    CONTAINER,
    READONLY_VIEW,
    azurebatch_config,
    azurebatch_env,
    read_log,
    run_azurebatch,
    write,
)

SCATTER_WDL = r"""
version development
workflow wf {
  input { File text  Directory folder  Int n = 3 }
  scatter (i in range(n)) {
    call probe { input: i = i, text = text, folder = folder }
  }
  output { Array[File] probes = probe.report }
}
task probe {
  input { Int i  File text  Directory folder }
  command <<<
    set -euo pipefail
    python3 -m miniwdl_omnibio.runtime.echo_test > /dev/null
    python3 - <<'PY'
    import json, os
    inputs = json.loads(os.environ["INPUTS_JSON"])
    report = {
      "cwd": os.getcwd(),
      "run_id": os.environ["RUN_ID"],
      "result_uri": os.environ["RESULT_URI"],
      "text": os.path.realpath(inputs["text"]),
      "text_inode": os.stat(inputs["text"]).st_ino,
      "folder_inode": os.stat(inputs["folder"]).st_ino,
      "text_writable": os.access(os.path.realpath(inputs["text"]), os.W_OK),
    }
    json.dump(report, open("report.json", "w"))
    PY
  >>>
  output { File report = "report.json" }
  runtime { docker: "omnibio/runtime:latest" cpu: 1 memory: "256 MiB" }
}
"""


def _jobs(batch: BatchEmulator) -> set[str]:
    return set(batch.state()["jobs"])


def _new_job(batch: BatchEmulator, before: set[str]) -> dict:
    new = _jobs(batch) - before
    assert len(new) == 1, f"expected one new job, found {new}"
    job_id = new.pop()
    return {"id": job_id, **batch.state()["jobs"][job_id]}


def _containers(job_id: str):
    return docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_JOB}={job_id}"})


def _settle(batch: BatchEmulator, job_id: str) -> dict:
    """The job once it completed and nothing of it is queued or running any more (the service
    acts asynchronously)."""

    def settled() -> dict | None:
        job = batch.state()["jobs"][job_id]
        busy = [t for t, s in job["tasks"].items() if s in ("active", "preparing", "running")]
        return job if not busy and job["state"] == "completed" else None

    return wait_until(settled, f"job {job_id} to complete with no task left running", 90)


def test_scatter_in_situ_inputs_and_results(batch, azurite, workdir):
    wdl = write(workdir / "scatter.wdl", SCATTER_WDL)
    text = write(workdir / "text.txt", "hello\n")
    folder = workdir / "folder"
    folder.mkdir()
    write(folder / "a.txt", "a\n")
    before = _jobs(batch)
    run = run_azurebatch(batch, workdir, wdl, [f"text={text}", f"folder={folder}"], azurite=azurite)
    assert run.returncode == 0, run.stderr[-4000:]
    workflow_run = workflow_run_of(run.dir)
    blobs = BlobServiceClient.from_connection_string(
        azurite.connection_string
    ).get_container_client(CONTAINER)
    for i, path in enumerate(run.outputs["wf.probes"]):
        with open(path) as infile:
            report = json.load(infile)
        assert report["cwd"] == os.path.join(
            run.dir, f"call-probe-{i}", "work"
        )  # in place on the shared FS
        assert report["run_id"] == f"{workflow_run}.call-probe-{i}.1"
        # inputs in situ, through the read-only view of the same filesystem
        assert report["text"] == READONLY_VIEW + "/text.txt" and not report["text_writable"]
        assert (
            report["text_inode"] == os.stat(text).st_ino
            and report["folder_inode"] == os.stat(folder).st_ino
        )
        key = f"results/{workflow_run}/call-probe-{i}/results.json"
        assert report["result_uri"] == f"azureblob://devstoreaccount1/{CONTAINER}/{key}"
        result = json.loads(blobs.download_blob(key).readall())
        assert result["ok"] is True and result["run_id"] == report["run_id"]
        assert os.path.exists(
            os.path.join(run.dir, f"call-probe-{i}", "work", "omnibio_result.json")
        )
    job = _settle(batch, _new_job(batch, before)["id"])
    assert job["state"] == "completed" and set(job["tasks"].values()) == {"completed"}
    assert not _containers(_new_job(batch, before)["id"])
    calls = batch.counts()["requests"]
    assert calls.get("GET /jobs/{jobId}/tasks/{taskId}", 0) == 0  # status comes from batched lists
    # tasks go in collections (test_tasks_ready_together_share_collections counts them exactly)
    assert (
        not calls.get("POST /jobs/{jobId}/tasks") and calls["POST /jobs/{jobId}/addtaskcollection"]
    )
    assert batch.key not in run.stderr + read_log(run.dir)


def test_nonzero_exit_and_return_codes(batch, workdir):
    wdl = write(
        workdir / "exit.wdl",
        """
version 1.1
task exits {
  input { Array[Int] ok = [0] }
  command <<< echo some output; exit 3 >>>
  output { String out = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" returnCodes: ok }
}
""",
    )
    config = azurebatch_config(batch, str(workdir))
    failed = run_miniwdl(
        wdl, [], str(workdir), backend=BACKEND, config=config, env=azurebatch_env(batch)
    )
    assert failed.returncode != 0
    cause = failed.error_json()["cause"]
    assert (
        cause["exit_status"] == 3
        and cause["engine"] == BACKEND
        and cause["batch_task"] == "exits-1"
    )
    assert batch.key not in json.dumps(cause) + failed.stderr + read_log(failed.dir)
    accepted = run_miniwdl(
        wdl,
        ["ok=0", "ok=3"],
        str(workdir),
        backend=BACKEND,
        config=config,
        env=azurebatch_env(batch),
    )
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert accepted.outputs["exits.out"] == "some output"


def test_max_retries_makes_a_new_batch_task(batch, workdir):
    marker = workdir / "first-attempt-was-here"
    wdl = write(
        workdir / "retry.wdl",
        f"""
version 1.1
task flaky {{
  command <<< if [ -e {marker} ]; then echo second; else touch {marker}; exit 1; fi >>>
  output {{ String out = read_string(stdout()) }}
  runtime {{ docker: "ubuntu:22.04" maxRetries: 1 }}
}}
""",
    )
    before = _jobs(batch)
    run = run_azurebatch(batch, workdir, wdl)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["flaky.out"] == "second"
    assert set(_new_job(batch, before)["tasks"]) == {"flaky-1", "flaky-2"}


def _wait_running(
    batch: BatchEmulator, before: set[str], count: int, total: int = 0, timeout: float = 60
) -> dict:
    def running() -> dict | None:
        new = _jobs(batch) - before
        if not new:
            return None
        job_id = next(iter(new))
        tasks = batch.state()["jobs"][job_id]["tasks"]
        if sum(1 for s in tasks.values() if s == "running") >= count and len(tasks) >= total:
            return {"id": job_id, "tasks": tasks}
        return None

    return wait_until(running, f"{count} of {total or count} tasks of a new job to run", timeout)


def _wait_served(batch: BatchEmulator, job_id: str, task_id: str, state: str) -> None:
    """Until a poll of the engine's has shown the task in ``state``."""
    wait_until(
        lambda: batch.served_state(job_id, task_id) == state,
        f"a poll to show {task_id} {state}",
        60,
    )


def _wait_task_state(batch: BatchEmulator, job_id: str, task_id: str, state: str) -> None:
    wait_until(
        lambda: batch.state()["jobs"][job_id]["tasks"].get(task_id) == state,
        f"{task_id} to be {state}",
        120,  # a rerun waits out the emulator's requeue_delay, then a container start
    )


PREEMPTIBLE_WDL = """
version 1.1
task slow {
  command <<< sleep %d; echo finished >>>
  output { String out = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" preemptible: 2 }
}
"""


def _preempted_run(batch: BatchEmulator, workdir, seconds: int, between) -> tuple:
    """Run a preemptible task of ``seconds``; once a poll showed it running, preempt its node
    (``between(job_id)`` does it). Returns miniwdl's stderr and the settled job."""
    wdl = write(workdir / "slow.wdl", PREEMPTIBLE_WDL % seconds)
    before = _jobs(batch)
    proc = popen_miniwdl(
        wdl,
        [],
        str(workdir),
        BACKEND,
        azurebatch_config(batch, str(workdir)),
        azurebatch_env(batch),
    )
    try:
        job = _wait_running(batch, before, 1)
        _wait_served(batch, job["id"], "slow-1", "running")
        between(job["id"])
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    assert json.loads(stdout)["outputs"]["slow.out"] == "finished"
    return stderr, {"id": job["id"], **_settle(batch, job["id"])}


@pytest.mark.parametrize("counted", [True, False], ids=["requeueCount", "uncounted"])
def test_preemption_is_retried_within_preemptible(batch, workdir, counted):
    """Batch requeues the task of a preempted node; whether requeueCount counts that is not
    documented, so the engine also sees the task back in the queue or started again."""
    batch.configure(preemption_counts_requeue=counted)
    stderr, job = _preempted_run(batch, workdir, 8, lambda job_id: batch.preempt(job_id, "slow-1"))
    assert "task interrupted" in stderr
    assert set(job["tasks"]) == {"slow-1", "slow-2"}  # the rerun was stopped; miniwdl retried
    rerun = batch.service.get_task(job["id"], "slow-1")["executionInfo"]
    assert rerun["failureInfo"]["code"] == "TaskEnded" and rerun["requeueCount"] == int(counted)


@pytest.mark.parametrize("counted", [True, False], ids=["requeueCount", "uncounted"])
def test_a_rerun_that_completed_between_polls_is_the_result(batch, workdir, counted):
    batch.configure(preemption_counts_requeue=counted)

    def unseen_rerun(job_id: str) -> None:
        batch.hold(job_id, "slow-1")  # no poll sees what happens next ...
        batch.preempt(job_id, "slow-1")
        _wait_task_state(batch, job_id, "slow-1", "completed")  # ... until the rerun is done
        batch.hold(job_id, "slow-1", held=False)

    stderr, job = _preempted_run(batch, workdir, 2, unseen_rerun)
    assert "task interrupted" not in stderr
    assert set(job["tasks"]) == {"slow-1"}  # no retry was needed


def test_sigint_terminates_every_task_and_the_job(batch, workdir):
    wdl = write(
        workdir / "long.wdl",
        """
version 1.1
workflow long {
  scatter (i in range(6)) { call sleeper { input: i = i } }
}
task sleeper {
  input { Int i }
  command <<< sleep 300 >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 }
}
""",
    )
    before = _jobs(batch)
    proc = popen_miniwdl(
        wdl,
        [],
        str(workdir),
        BACKEND,
        azurebatch_config(batch, str(workdir)),
        azurebatch_env(batch),
    )
    try:
        job = _wait_running(batch, before, 4, total=6)  # the pool runs 4 at a time: 2 stay queued
        assert "active" in job["tasks"].values()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode != 0
    settled = _settle(batch, job["id"])
    assert settled["state"] == "completed", settled
    assert not [
        t for t, s in settled["tasks"].items() if s in ("active", "preparing", "running")
    ], settled
    assert not _containers(job["id"])
    assert batch.key not in stderr


@pytest.mark.parametrize(
    "case, overrides, key, expected",
    [
        (
            "missing account URL",
            {"account_url": ""},
            None,
            ["[omnibio_azurebatch] account_url", "required"],
        ),
        (
            "wrong key",
            {},
            "d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudHM=",
            ["[omnibio_azurebatch] account_key_env", "AuthenticationFailed"],
        ),
        (
            "unknown pool",
            {"pool_id": "no-such-pool"},
            None,
            ["[omnibio_azurebatch] pool_id", "'no-such-pool' does not exist"],
        ),
        (
            "unreachable endpoint",
            {"account_url": "http://127.0.0.1:9"},
            None,
            ["[omnibio_azurebatch] account_url", "cannot reach", "Connection refused"],
        ),
    ],
)
def test_bad_configuration_is_one_clear_line(batch, workdir, case, overrides, key, expected):
    wdl = write(
        workdir / "t.wdl",
        'version 1.1\ntask t { command <<< echo hi >>> runtime { docker: "ubuntu:22.04" } }\n',
    )
    env = azurebatch_env(batch)
    if key:
        env["AZURE_BATCH_ACCOUNT_KEY"] = key
    before = _jobs(batch)
    run = run_azurebatch(batch, workdir, wdl, env=env, **overrides)
    assert run.returncode != 0
    final = [line for line in run.stderr.splitlines() if "miniwdl-run ERROR" in line]
    assert len(final) == 1, run.stderr[-3000:]
    assert all(text in final[0] for text in expected), final[0]
    assert _jobs(batch) == before  # nothing was created
    assert batch.key not in run.stderr and (not key or key not in run.stderr)


@pytest.mark.parametrize("spelling", ["docs", "spec"])
def test_nonexistent_image_is_named(batch, workdir, spelling):
    batch.configure(spelling=spelling)  # UserError (docs) or usererror (REST spec)
    wdl = write(
        workdir / "img.wdl",
        'version 1.1\ntask t { command <<< echo hi >>> runtime { docker: "omnibio/no-such-image:1" } }\n',
    )
    before = _jobs(batch)
    run = run_azurebatch(batch, workdir, wdl)
    assert run.returncode != 0
    message = run.error_json()["cause"]["message"]
    assert "image omnibio/no-such-image:1" in message and "ContainerInvalidImage" in message
    job = _settle(batch, _new_job(batch, before)["id"])
    assert job["state"] == "completed" and not _containers(_new_job(batch, before)["id"])


def test_node_without_the_shared_filesystem_shows_the_batch_stderr_tail(batch, workdir):
    """A node that does not mount the filesystem: the wrapper's own error is only in Batch's stderr.txt."""
    wdl = write(
        workdir / "t.wdl",
        'version 1.1\ntask t { command <<< echo hi >>> runtime { docker: "ubuntu:22.04" } }\n',
    )
    missing = workdir / "not-mounted-on-the-node"
    config = azurebatch_config(batch, str(workdir), node_mount_path=str(missing))
    run = run_miniwdl(
        wdl, [], str(workdir), backend=BACKEND, config=config, env=azurebatch_env(batch)
    )
    assert run.returncode != 0
    cause = run.error_json()["cause"]
    assert cause["exit_status"] == 97
    tail = cause["batch_stderr_tail"]
    assert (
        f"is not visible on Azure Batch node {cause['batch_node']}" in tail and str(missing) in tail
    ), cause


@pytest.mark.parametrize(
    "runtime, overrides, where, code, exit_code",
    [
        ("omnibio_time_limit: 2", {}, "runtime.omnibio_time_limit", "TaskEnded", True),
        (
            "",
            {"default_time_limit": "2"},
            "[omnibio_azurebatch] default_time_limit",
            "MaxWallClockTimeExpiry",
            True,
        ),
        ("omnibio_time_limit: 2", {}, "runtime.omnibio_time_limit", "TaskEnded", False),
    ],
    ids=["TaskEnded", "MaxWallClockTimeExpiry", "no-exitCode"],
)
def test_time_limit_is_max_wall_clock_time(
    batch, workdir, runtime, overrides, where, code, exit_code
):
    """The failure code of a task ended at maxWallClockTime is undocumented, and its exit code
    a "may": each alternative works."""
    batch.configure(timeout_code=code, timeout_exit_code=exit_code)
    wdl = write(
        workdir / "slow.wdl",
        'version 1.1\ntask t { command <<< sleep 60 >>> runtime { docker: "ubuntu:22.04" '
        + runtime
        + " } }\n",
    )
    before = _jobs(batch)
    run = run_azurebatch(batch, workdir, wdl, **overrides)
    assert run.returncode != 0
    cause = run.error_json()["cause"]
    assert f"exceeded its time limit of 2 s ({where})" in cause["message"], cause
    task = batch.service.get_task(_new_job(batch, before)["id"], "t-1")
    assert parse_duration(task["constraints"]["maxWallClockTime"]) == 2  # Batch enforced it


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_backs_off(batch, workdir, status):
    wdl = write(
        workdir / "t.wdl",
        'version 1.1\ntask t { command <<< echo hi >>> output { String o = read_string(stdout()) } runtime { docker: "ubuntu:22.04" } }\n',
    )
    batch.throttle(4, status)  # the pool lookup at start and whatever follows meet throttling
    run = run_azurebatch(batch, workdir, wdl)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["t.o"] == "hi"
    assert batch.counts()["requests"]["GET /pools/{poolId}"] >= 5


def test_active_job_quota_is_named(batch, workdir):
    wdl = write(
        workdir / "t.wdl",
        'version 1.1\ntask t { command <<< echo hi >>> runtime { docker: "ubuntu:22.04" } }\n',
    )
    batch.set_active_job_quota(0)
    try:
        run = run_azurebatch(batch, workdir, wdl, quota_wait_seconds="0")
    finally:
        batch.set_active_job_quota(None)
    assert run.returncode != 0
    assert "ActiveJobAndScheduleQuotaReached" in run.error_json()["cause"]["message"]


def test_pool_created_from_pool_spec(batch, workdir):
    wdl = write(
        workdir / "t.wdl",
        'version 1.1\ntask t { command <<< echo hi >>> output { String o = read_string(stdout()) } runtime { docker: "ubuntu:22.04" } }\n',
    )
    spec = {
        "vm_size": "Standard_D2s_v3",
        "image": {
            "publisher": "microsoft-dsvm",
            "offer": "ubuntu-hpc",
            "sku": "2204",
            "version": "latest",
        },
        "node_agent_sku_id": "batch.node.ubuntu 22.04",
        "dedicated_nodes": 1,
        "task_slots_per_node": 2,
        "mount_configuration": [
            {
                "nfsMountConfiguration": {
                    "source": "10.0.0.4:/omnibio",
                    "relativeMountPath": "omnibio",
                }
            }
        ],
    }
    pool_id = f"auto-{os.path.basename(workdir)}"[:64].replace(".", "-")
    config = azurebatch_config(batch, str(workdir), pool_id=pool_id, pool_spec=json.dumps(spec))
    run = run_miniwdl(
        wdl, [], str(workdir), backend=BACKEND, config=config, env=azurebatch_env(batch)
    )
    assert run.returncode == 0, run.stderr[-3000:]
    pool = batch.service.get_pool(pool_id)
    assert (
        pool["taskSlotsPerNode"] == 2
        and pool["mountConfiguration"][0]["nfsMountConfiguration"]["relativeMountPath"] == "omnibio"
    )


def test_entra_id_through_managed_identity(batch, workdir):
    """auth = entra: DefaultAzureCredential gets a token from a managed identity endpoint."""
    wdl = write(
        workdir / "t.wdl",
        'version 1.1\ntask t { command <<< echo hi >>> output { String o = read_string(stdout()) } runtime { docker: "ubuntu:22.04" } }\n',
    )
    env = {
        "IDENTITY_ENDPOINT": f"{batch.url}/_emulator/msi/token",
        "IDENTITY_HEADER": batch.identity_header,
        "AZURE_BATCH_ACCOUNT_KEY": "",
    }
    run = run_azurebatch(batch, workdir, wdl, env=env, auth="entra")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["t.o"] == "hi"
    logs = run.stderr + read_log(run.dir)
    assert batch.issued_tokens() and not any(token in logs for token in batch.issued_tokens())


def test_offline_selftest_passes(batch, azurite, workdir):
    from miniwdl_omnibio.cli.selftest import run as selftest

    env = miniwdl_env(
        BACKEND, azurebatch_config(batch, str(workdir), azurite), azurebatch_env(batch, azurite)
    )
    assert selftest(BACKEND, str(workdir), env=env) == []
