"""What each service still runs for a workflow run, asked of the service itself (not of the
plugin): the oracle for "Ctrl-C, SIGTERM and fail_fast leave nothing behind"."""

from collections.abc import Callable

import docker
import requests

RUN_TAG = "omnibio.run"


def _docker(env: dict[str, str], run: str) -> list[str]:
    found = docker.from_env().containers.list(all=True, filters={"label": f"{RUN_TAG}={run}"})
    return [f"container {c.name} {c.status}" for c in found if c.status in ("created", "running")]


def _awsbatch(env: dict[str, str], run: str) -> list[str]:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    batch = session.client("batch", endpoint_url=env["AWS_ENDPOINT_URL"])
    queues = {env["MINIWDL__OMNIBIO_AWSBATCH__JOB_QUEUE"]}
    queues.add(env.get("MINIWDL__OMNIBIO_AWSBATCH__FALLBACK_QUEUE") or "")
    active = []
    for queue in filter(None, queues):
        for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"):
            ids = [
                j["jobId"]
                for j in batch.list_jobs(jobQueue=queue, jobStatus=status)["jobSummaryList"]
            ]
            for start in range(0, len(ids), 100):
                for job in batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]:
                    owner = job  # an array child (<parent>:<index>): its parent has the tags
                    if ":" in job["jobId"]:
                        parent = job["jobId"].split(":")[0]
                        owner = batch.describe_jobs(jobs=[parent])["jobs"][0]
                    if (owner.get("tags") or {}).get(RUN_TAG) == run:
                        active.append(f"job {job['jobId']} {job['status']}")
    return active


def _azurebatch(env: dict[str, str], run: str) -> list[str]:
    from azure.batch import BatchClient
    from azure.core.credentials import AzureNamedKeyCredential

    account = env["MINIWDL__OMNIBIO_AZUREBATCH__ACCOUNT_NAME"]
    client = BatchClient(
        env["MINIWDL__OMNIBIO_AZUREBATCH__ACCOUNT_URL"],
        AzureNamedKeyCredential(account, env["AZURE_BATCH_ACCOUNT_KEY"]),
    )
    active = []
    for job in client.list_jobs():
        if {m.name: m.value for m in job.metadata or []}.get(RUN_TAG) != run:
            continue
        for task in client.list_tasks(job.id, filter="state ne 'completed'"):
            active.append(f"task {job.id}/{task.id} {task.state}")
    return active


def _tes(env: dict[str, str], run: str) -> list[str]:
    url = env["MINIWDL__OMNIBIO_TES__URL"].rstrip("/") + "/ga4gh/tes/v1/tasks"
    query = {"tag_key": RUN_TAG, "tag_value": run, "view": "MINIMAL"}
    tasks = requests.get(url, params=query, timeout=10).json().get("tasks") or []
    live = ("QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "CANCELING")
    return [f"task {t['id']} {t['state']}" for t in tasks if t.get("state") in live]


def running(backend: str, env: dict[str, str], run: str) -> int:
    """Tasks of the run the service says are running, where a task's files are not on this host
    while it runs (omnibio_tes stages them: a 'started' marker arrives only at the end)."""
    if backend != "omnibio_tes":
        return 0
    return sum(" RUNNING" in task for task in _tes(env, run))


def _slurm(env: dict[str, str], run: str) -> list[str]:
    from tests.e2e.slurm.conftest import active_jobs

    return [f"job {job}" for job in active_jobs(run + ".")]


ACTIVE: dict[str, Callable[[dict[str, str], str], list[str]]] = {
    "omnibio_docker": _docker,
    "omnibio_awsbatch": _awsbatch,
    "omnibio_azurebatch": _azurebatch,
    "omnibio_tes": _tes,
    "omnibio_slurm": _slurm,
}


def still_active(backend: str, env: dict[str, str], run: str) -> list[str]:
    """What the backend's service still lists as queued or running for the workflow run."""
    return ACTIVE[backend](env, run)
