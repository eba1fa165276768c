"""Starting miniwdl runs on omnibio_tes against the test server, and reading what they left."""

import os

import requests

from tests.e2e.tes.support import tes_config
from tests.helpers import miniwdl_env, popen_miniwdl, run_miniwdl, workflow_run_of

ACTIVE = ("QUEUED", "INITIALIZING", "RUNNING", "CANCELING")


def write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as outfile:
        outfile.write(text)
    return path


def read(path):
    with open(path) as infile:
        return infile.read()


def run(server, moto, rundir, wdl_text, inputs=(), env=None, config=None, **tes_keys):
    """A miniwdl run in staging mode through moto S3, to its end."""
    config = config or tes_config(server.url, **tes_keys)
    return run_miniwdl(
        write(rundir, "test.wdl", wdl_text),
        list(inputs),
        rundir,
        backend="omnibio_tes",
        config=config,
        env={**moto.env(), **(env or {})},
        timeout=240,
    )


def start(server, moto, rundir, wdl_text, task_concurrency=None, results_dir=None, **tes_keys):
    config = tes_config(server.url, results_dir, **tes_keys)
    if task_concurrency:
        config["scheduler"] = {"task_concurrency": str(task_concurrency)}
    return popen_miniwdl(
        write(rundir, "test.wdl", wdl_text), [], rundir, "omnibio_tes", config, env=moto.env()
    )


def env_for(server, moto, **tes_keys):
    return miniwdl_env("omnibio_tes", tes_config(server.url, **tes_keys), moto.env())


def run_tasks(server, run_dir):
    """The server's tasks (FULL view) of one workflow run, oldest first: those tagged with its
    name, which no run in another directory shares."""
    if not run_dir:  # miniwdl refused the run before making its directory
        return []
    name = workflow_run_of(run_dir)
    return [t for t in server.tasks() if (t.get("tags") or {}).get("omnibio.run") == name]


def running_tasks(server, rundir, count):
    """The run's RUNNING tasks once there are ``count`` of them (None before)."""
    runs = [d for d in os.listdir(rundir) if d[:8].isdigit()]
    if not runs:
        return None
    tasks = [t for t in run_tasks(server, os.path.join(rundir, runs[0])) if t["state"] == "RUNNING"]
    return tasks if len(tasks) >= count else None


def staged_keys(s3, bucket, prefix="tes/"):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents") or [])


def logs_of(run):
    text = [run.stderr]
    for current, _dirs, files in os.walk(run.dir or ""):
        text += [read(os.path.join(current, f)) for f in files if f.endswith(".log")]
    return "\n".join(text)


def api(server):
    """Where the server serves the TES API (the first of its base paths)."""
    return server.url + server.base_paths[0]


def create_task(server, tags, seconds=600):
    """Another client's task, straight over HTTP: it sleeps, carrying ``tags``."""
    executor = {"image": "ubuntu:22.04", "command": ["sleep", str(seconds)]}
    task = {"name": "another-client", "executors": [executor], "tags": tags}
    answer = requests.post(f"{api(server)}/tasks", json=task, timeout=10)
    answer.raise_for_status()
    return str(answer.json()["id"])


def states(server, ids):
    """The tasks' states, in the order of ``ids``."""
    found = {t["id"]: t["state"] for t in server.tasks()}
    return [found[i] for i in ids]


def cancel_active(server, ids):
    for task_id, state in zip(ids, states(server, ids), strict=True):
        if state in ACTIVE:
            requests.post(f"{api(server)}/tasks/{task_id}:cancel", timeout=10).raise_for_status()
