"""The test TES server keeps to TES v1.1 and to what the servers people run do (see its module
docstrings for the sources); the backend tests are only as good as it."""

import os

import pytest
import requests

from tests.e2e.tes.support import BUCKET
from tests.emulators.tes_server import S3Access, TesServer
from tests.helpers import wait_until

API = "/ga4gh/tes/v1"
FINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED")


@pytest.fixture
def server(moto):
    with TesServer(s3=S3Access(moto.endpoint, "testing", "testing"), workers=1) as server:
        yield server


def _task(command, image="ubuntu:22.04", **fields):
    return {"executors": [{"image": image, "command": ["sh", "-c", command]}], **fields}


def _create(server, task, base=API):
    response = requests.post(server.url + base + "/tasks", json=task, timeout=10)
    assert response.ok, response.text
    return response.json()["id"]


def _get(server, task_id, view="FULL"):
    return requests.get(
        f"{server.url}{API}/tasks/{task_id}", params={"view": view}, timeout=10
    ).json()


def _wait(server, task_id, states=FINAL, timeout=60.0):
    wait_until(
        lambda: _get(server, task_id, "MINIMAL")["state"] in states,
        f"task {task_id} to reach {states}",
        timeout,
    )
    return _get(server, task_id)


def _listed(server, params):
    response = requests.get(server.url + API + "/tasks", params=params, timeout=10)
    response.raise_for_status()
    return response.json()


def test_service_info_on_both_base_paths(server):
    for base in (API, "/v1"):
        info = requests.get(server.url + base + "/service-info", timeout=10).json()
        assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
        assert info["tesResources_backend_parameters"] == ["shm_size"]
    assert requests.get(server.url + "/service-info", timeout=10).status_code == 404
    with TesServer(base_paths=("/v1",)) as azure_like:
        assert requests.get(azure_like.url + API + "/service-info", timeout=10).status_code == 404
        assert requests.get(azure_like.url + "/v1/service-info", timeout=10).ok


def test_inputs_from_s3_outputs_to_s3_nothing_from_the_host(server, s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="in/one.txt", Body=b"one\n")
    s3.put_object(Bucket=BUCKET, Key="in/dir/a.txt", Body=b"a\n")
    s3.put_object(Bucket=BUCKET, Key="in/dir/sub/b.txt", Body=b"b\n")
    s3.put_object(Bucket=BUCKET, Key="in/dirx/not-mine.txt", Body=b"x\n")
    host_file = tmp_path / "host.txt"
    host_file.write_text("host\n")
    script = (
        "cat /data/one.txt /data/dir/a.txt /data/dir/sub/b.txt /data/cmd.sh; ls /data/dir;"
        f" test -e {host_file} && echo host-visible; touch /rootfs-write 2>/dev/null || echo ro-root;"
        " mkdir -p /out/d/e && echo made > /out/d/e/f.txt && echo log > /out/log.txt"
    )
    task_id = _create(
        server,
        _task(
            script,
            inputs=[
                {"url": f"s3://{BUCKET}/in/one.txt", "path": "/data/one.txt"},
                {"url": f"s3://{BUCKET}/in/dir", "path": "/data/dir", "type": "DIRECTORY"},
                {"content": "literal\n", "path": "/data/cmd.sh"},
            ],
            outputs=[
                {"url": f"s3://{BUCKET}/out/d", "path": "/out/d", "type": "DIRECTORY"},
                {"url": f"s3://{BUCKET}/out/log.txt", "path": "/out/log.txt"},
            ],
        ),
    )
    task = _wait(server, task_id)
    assert task["state"] == "COMPLETE", task
    stdout = task["logs"][0]["logs"][0]["stdout"]
    assert stdout == "one\na\nb\nliteral\na.txt\nsub\nro-root\n"  # no not-mine.txt, no host file
    assert s3.get_object(Bucket=BUCKET, Key="out/d/e/f.txt")["Body"].read() == b"made\n"
    assert s3.get_object(Bucket=BUCKET, Key="out/log.txt")["Body"].read() == b"log\n"
    assert {o["url"] for o in task["logs"][0]["outputs"]} == {
        f"s3://{BUCKET}/out/d/e/f.txt",
        f"s3://{BUCKET}/out/log.txt",
    }
    basic = _get(server, task_id, "BASIC")
    assert "content" not in basic["inputs"][2] and "system_logs" not in basic["logs"][0]
    assert _get(server, task_id, "MINIMAL") == {"id": task_id, "state": "COMPLETE"}


@pytest.mark.parametrize("upload_on_error", [True, False])
def test_outputs_of_a_failed_executor(moto, s3, upload_on_error):
    """Funnel uploads outputs after a failed executor; TESK's taskmaster does not."""
    key = f"failed-{upload_on_error}/err.txt"
    access = S3Access(moto.endpoint, "testing", "testing")
    with TesServer(s3=access, upload_on_error=upload_on_error, workers=1) as server:
        task = _wait(
            server,
            _create(
                server,
                _task(
                    "echo oops > /o/err.txt; echo oops >&2; exit 3",
                    outputs=[{"url": f"s3://{BUCKET}/{key}", "path": "/o/err.txt"}],
                ),
            ),
        )
    assert task["state"] == "EXECUTOR_ERROR" and task["logs"][0]["logs"][0]["exit_code"] == 3
    assert task["logs"][0]["logs"][0]["stderr"] == "oops\n"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents") or []
    assert bool(listed) is upload_on_error


def test_worker_volumes_are_an_opt_in(moto, shared_dir):
    path = os.path.join(shared_dir, "volume-probe.txt")
    with open(path, "w") as outfile:
        outfile.write("shared\n")
    with TesServer(worker_volumes=[f"{shared_dir}:/shared", f"{shared_dir}:/ro:ro"]) as server:
        task = _wait(
            server,
            _create(
                server, _task("cat /shared/volume-probe.txt; touch /ro/x 2>/dev/null || echo ro")
            ),
        )
        info = requests.get(server.url + API + "/service-info", timeout=10).json()
    assert task["logs"][0]["logs"][0]["stdout"] == "shared\nro\n"
    assert "file:///shared" in info["storage"]


def test_list_filters_pages_and_views(server):
    ids = [
        _create(server, _task("true", name=f"run-a.{i}", tags={"run": "a", "i": str(i)}))
        for i in range(3)
    ]
    ids.append(_create(server, _task("exit 1", name="run-b.0", tags={"run": "b"})))
    for task_id in ids:
        _wait(server, task_id)
    assert [t["id"] for t in _listed(server, {})["tasks"]] == ids[::-1]  # newest first
    assert set(_listed(server, {})["tasks"][0]) == {"id", "state"}  # MINIMAL by default
    assert {t["id"] for t in _listed(server, {"name_prefix": "run-a."})["tasks"]} == set(ids[:3])
    assert [t["id"] for t in _listed(server, {"state": "EXECUTOR_ERROR"})["tasks"]] == [ids[3]]
    pairs = [("tag_key", "run"), ("tag_value", "a"), ("tag_key", "i"), ("tag_value", "1")]
    assert [t["id"] for t in _listed(server, pairs)["tasks"]] == [ids[1]]
    # by position: "run" has no value (any), "i" has 2
    positional = [("tag_key", "run"), ("tag_key", "i"), ("tag_value", "2")]
    assert [t["id"] for t in _listed(server, positional)["tasks"]] == [ids[2]]
    assert {t["id"] for t in _listed(server, {"tag_key": "i"})["tasks"]} == set(ids[:3])
    assert _listed(server, {"tag_key": "run", "tag_value": "c"})["tasks"] == []
    assert _listed(server, {"view": "BASIC", "name_prefix": "run-b"})["tasks"][0]["tags"] == {
        "run": "b"
    }
    seen, token, pages = [], None, 0
    while True:
        page = _listed(server, {"page_size": 3, **({"page_token": token} if token else {})})
        seen += [t["id"] for t in page["tasks"]]
        pages += 1
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == ids[::-1] and pages == 2
    bad = requests.get(server.url + API + "/tasks", params={"page_size": 2048}, timeout=10)
    assert bad.status_code == 400


def test_cancel_queued_and_running_preempt_and_errors(server):
    running = _create(server, _task("sleep 300"))
    queued = _create(server, _task("sleep 300"))  # one worker: waits behind the first
    _wait(server, running, ("RUNNING",))
    assert _get(server, queued, "MINIMAL")["state"] == "QUEUED"
    assert (
        requests.post(f"{server.url}/_fixture/tasks/{queued}:preempt", timeout=10).status_code
        == 409
    )
    requests.post(f"{server.url}{API}/tasks/{queued}:cancel", timeout=10).raise_for_status()
    assert _get(server, queued, "MINIMAL")["state"] == "CANCELED"
    requests.post(f"{server.url}/_fixture/tasks/{running}:preempt", timeout=10).raise_for_status()
    assert _wait(server, running)["state"] == "PREEMPTED"
    assert "preempted" in _get(server, running)["logs"][0]["system_logs"][-1]
    third = _create(server, _task("sleep 300"))
    _wait(server, third, ("RUNNING",))
    requests.post(f"{server.url}/v1/tasks/{third}:cancel", timeout=10).raise_for_status()
    assert _wait(server, third)["state"] == "CANCELED"
    assert server.containers() == []
    assert (
        requests.post(server.url + API + "/tasks/task-nope:cancel", timeout=10).status_code == 404
    )
    assert requests.get(server.url + API + "/tasks/task-nope", timeout=10).status_code == 404


@pytest.mark.parametrize(
    "task, message",
    [
        ({"executors": []}, "at least one"),
        (_task("true", inputs=[{"url": "s3://b/k", "path": "data"}]), "absolute path"),
        (_task("true", inputs=[{"url": "s3://b/k", "path": "/"}]), "root directory"),
        (_task("true", outputs=[{"url": "s3://b/k", "path": "rel"}]), "absolute path"),
        (_task("true", inputs=[{"path": "/data"}]), "one of url and content"),
        (_task("true", inputs=[{"url": "s3://b/k", "content": "x", "path": "/d"}]), "cannot both"),
        (_task("true", inputs=[{"content": "x", "path": "/d", "type": "DIRECTORY"}]), "content"),
        (_task("true", volumes=["tmp"]), "absolute path"),
        (
            _task("true", resources={"backend_parameters": {"shm_size": "1m", "SHM_SIZE": "2m"}}),
            "Duplicate backend_parameters",
        ),
        (_task("true", resources={"cpu_cores": 0}), "greater than zero"),
    ],
)
def test_rejects_what_the_spec_and_servers_reject(server, task, message):
    response = requests.post(server.url + API + "/tasks", json=task, timeout=10)
    assert response.status_code == 400 and message in response.json()["message"], response.text


def test_system_errors_and_backend_parameters(server):
    ghost = _wait(server, _create(server, _task("true", image="omnibio/no-such-image:1")))
    assert ghost["state"] == "SYSTEM_ERROR"
    assert "omnibio/no-such-image:1" in ghost["logs"][0]["system_logs"][-1]
    missing = _wait(
        server,
        _create(server, _task("true", inputs=[{"url": f"s3://{BUCKET}/nope", "path": "/d"}])),
    )
    assert (
        missing["state"] == "SYSTEM_ERROR" and "input /d" in missing["logs"][0]["system_logs"][-1]
    )
    local = _wait(
        server,
        _create(server, _task("true", inputs=[{"url": "file:///etc/hostname", "path": "/h"}])),
    )
    assert local["state"] == "SYSTEM_ERROR" and "allowed" in local["logs"][0]["system_logs"][-1]
    lenient = _wait(
        server,
        _create(
            server,
            _task(
                "df -h /dev/shm | tail -1",
                resources={"backend_parameters": {"SHM_SIZE": "70m", "VmSize": "x"}},
            ),
        ),
    )
    assert lenient["state"] == "COMPLETE"
    assert lenient["resources"]["backend_parameters"] == {"SHM_SIZE": "70m"}  # not stored
    assert "VmSize" in lenient["logs"][0]["system_logs"][0]
    assert "70M" in lenient["logs"][0]["logs"][0]["stdout"]
    strict = _task(
        "true", resources={"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}
    )
    assert _wait(server, _create(server, strict))["state"] == "SYSTEM_ERROR"


def test_faults_answer_as_asked(server):
    server.fault("list", 429, count=2)
    for expected in (429, 429, 200):
        assert requests.get(server.url + API + "/tasks", timeout=10).status_code == expected
    server.fault("create", 503, after=True)  # the task is created, the answer is lost
    lost = requests.post(
        server.url + API + "/tasks", json=_task("true", tags={"k": "lost"}), timeout=10
    )
    assert lost.status_code == 503 and "Retry-After" not in lost.headers
    assert len(_listed(server, {"tag_key": "k", "tag_value": "lost"})["tasks"]) == 1


@pytest.mark.parametrize("auth", ["token", "basic"])
def test_auth(auth):
    kwargs = {"token": "t0k"} if auth == "token" else {"user": "u", "password": "p"}
    good = {"Authorization": "Bearer t0k"} if auth == "token" else None
    with TesServer(**kwargs) as server:
        url = server.url + API + "/tasks"
        assert requests.get(url, headers=good, auth=None if good else ("u", "p"), timeout=10).ok
        assert requests.get(url, auth=("u", "nope"), timeout=10).status_code == 401
        assert requests.get(url, timeout=10).status_code == 401
        assert server.count("unauthorized") == 2
