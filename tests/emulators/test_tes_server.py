"""The fixture TES server keeps to TES v1.1 as py-tes and a plain HTTP client see it; the backend
tests are only as good as this fixture."""

import os
import time

import pytest
import requests
import tes

from tests.emulators.tes_server import TesServer

API = "/ga4gh/tes/v1"


def _task(command, image="ubuntu:22.04", **fields):
    return tes.Task(executors=[tes.Executor(image=image, command=["sh", "-c", command])], **fields)


def _wait(client, task_id, states, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        task = client.get_task(task_id, "MINIMAL")
        if task.state in states:
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} never reached {states}")


@pytest.fixture
def server(shared_dir):
    with TesServer([shared_dir], workers=1) as server:
        yield server


def test_service_info_is_tes_1_1(server, shared_dir):
    info = tes.HTTPClient(server.url).get_service_info()
    assert info.type == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info.storage == [f"file://{shared_dir}"] and info.tes_resources_backend_parameters == [
        "shm_size"
    ]


def test_views_logs_and_in_place_inputs(server, shared_dir, tmp_path):
    folder = os.path.join(shared_dir, "fixture-inputs")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "in.txt"), "w") as outfile:
        outfile.write("hello\n")
    client = tes.HTTPClient(server.url)
    task_id = client.create_task(
        tes.Task(
            name="views",
            executors=[
                tes.Executor(
                    image="ubuntu:22.04",
                    command=[
                        "sh",
                        "-c",
                        "cat /in/in.txt /lit.txt; echo no >&2; touch /in/x; exit 4",
                    ],
                    ignore_error=True,
                ),
                tes.Executor(
                    image="ubuntu:22.04", command=["sh", "-c", "touch /vol/ok && ls /vol"]
                ),
            ],
            inputs=[
                tes.Input(url=f"file://{folder}", path="/in", type="DIRECTORY"),
                tes.Input(content="literal\n", path="/lit.txt"),
            ],
            volumes=["/vol"],
            tags={"k": "v"},
        )
    )
    assert (
        _wait(client, task_id, ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR")).state == "COMPLETE"
    )
    assert client.get_task(task_id, "MINIMAL").as_dict() == {"id": task_id, "state": "COMPLETE"}
    basic = client.get_task(task_id, "BASIC")
    assert (
        basic.tags == {"k": "v"}
        and basic.inputs[1].content is None
        and basic.logs[0].system_logs is None
    )
    assert [e.exit_code for e in basic.logs[0].logs] == [4, 0] and basic.logs[0].logs[
        0
    ].stderr is None
    full = client.get_task(task_id, "FULL")
    first, second = full.logs[0].logs
    assert (
        first.stdout == "hello\nliteral\n"
        and "Read-only file system" in first.stderr
        and second.stdout == "ok\n"
    )
    assert (
        full.inputs[1].content == "literal\n" and full.logs[0].start_time and full.logs[0].end_time
    )
    assert not os.path.exists(os.path.join(folder, "x"))


def test_list_filters_pages_and_views(server):
    client = tes.HTTPClient(server.url)
    ids = [
        client.create_task(_task("true", name=f"run-a.{i}", tags={"run": "a", "i": str(i)}))
        for i in range(3)
    ]
    ids.append(client.create_task(_task("exit 1", name="run-b.0", tags={"run": "b"})))
    for task_id in ids:
        _wait(client, task_id, ("COMPLETE", "EXECUTOR_ERROR"))

    def listed(**params):
        response = requests.get(server.url + API + "/tasks", params=params)
        response.raise_for_status()
        return response.json()

    assert [t["id"] for t in listed()["tasks"]] == ids[::-1]  # newest first, MINIMAL by default
    assert set(listed()["tasks"][0]) == {"id", "state"}
    assert {t["id"] for t in listed(name_prefix="run-a.")["tasks"]} == set(ids[:3])
    assert [t["id"] for t in listed(state="EXECUTOR_ERROR")["tasks"]] == [ids[3]]
    assert {t["id"] for t in listed(tag_key="run", tag_value="a")["tasks"]} == set(ids[:3])
    assert [t["id"] for t in listed(tag_key=["run", "i"], tag_value=["a", "1"])["tasks"]] == [
        ids[1]
    ]
    assert {t["id"] for t in listed(tag_key="i")["tasks"]} == set(
        ids[:3]
    )  # a key alone matches any value
    assert listed(tag_key="run", tag_value="c")["tasks"] == []
    assert listed(view="BASIC", name_prefix="run-b")["tasks"][0]["tags"] == {"run": "b"}
    seen, token, pages = [], None, 0
    while True:
        page = client.list_tasks(view="MINIMAL", page_size=3, page_token=token)
        seen += [t.id for t in page.tasks]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1] and pages == 2
    assert requests.get(server.url + API + "/tasks", params={"page_size": 2048}).status_code == 400
    assert server.count("list") >= 11


def test_cancel_queued_and_running_preempt_and_errors(server):
    client = tes.HTTPClient(server.url)
    running = client.create_task(_task("sleep 300"))
    queued = client.create_task(_task("sleep 300"))  # one worker: waits behind the first
    _wait(client, running, ("RUNNING",))
    assert client.get_task(queued, "MINIMAL").state == "QUEUED"
    assert requests.post(f"{server.url}/_fixture/tasks/{queued}:preempt").status_code == 409
    client.cancel_task(queued)
    assert client.get_task(queued, "MINIMAL").state == "CANCELED"
    requests.post(f"{server.url}/_fixture/tasks/{running}:preempt").raise_for_status()
    _wait(client, running, ("PREEMPTED",), timeout=20)
    assert "preempted" in client.get_task(running, "FULL").logs[0].system_logs[-1]
    third = client.create_task(_task("sleep 300"))
    _wait(client, third, ("RUNNING",))
    client.cancel_task(third)
    _wait(client, third, ("CANCELED",), timeout=20)
    assert server.containers() == []
    assert requests.post(server.url + API + "/tasks/task-nope:cancel").status_code == 404
    assert requests.get(server.url + API + "/tasks/task-nope").status_code == 404
    bad = requests.post(
        server.url + API + "/tasks",
        json={
            "executors": [{"image": "x", "command": ["true"]}],
            "outputs": [{"url": "file:///o", "path": "/o"}],
        },
    )
    assert bad.status_code == 400 and "outputs" in bad.json()["message"]
    assert requests.post(server.url + API + "/tasks", json={"executors": []}).status_code == 400


def test_system_errors_and_backend_parameters(server):
    client = tes.HTTPClient(server.url)
    ghost = client.create_task(_task("true", image="omnibio/no-such-image:1"))
    assert _wait(client, ghost, ("SYSTEM_ERROR",)).state == "SYSTEM_ERROR"
    assert "omnibio/no-such-image:1" in client.get_task(ghost, "FULL").logs[0].system_logs[-1]
    outside = client.create_task(
        _task("true", inputs=[tes.Input(url="file:///etc", path="/etc2", type="DIRECTORY")])
    )
    assert _wait(client, outside, ("SYSTEM_ERROR",)).state == "SYSTEM_ERROR"
    lenient = client.create_task(
        _task(
            "df -h /dev/shm | tail -1",
            resources=tes.Resources(backend_parameters={"SHM_SIZE": "70m", "VmSize": "x"}),
        )
    )
    assert _wait(client, lenient, ("COMPLETE",)).state == "COMPLETE"
    full = client.get_task(lenient, "FULL")
    assert full.resources.backend_parameters == {
        "SHM_SIZE": "70m"
    }  # unsupported keys are not stored
    assert "VmSize" in full.logs[0].system_logs[0] and "70M" in full.logs[0].logs[0].stdout
    strict = client.create_task(
        _task(
            "true",
            resources=tes.Resources(
                backend_parameters={"VmSize": "x"}, backend_parameters_strict=True
            ),
        )
    )
    assert _wait(client, strict, ("SYSTEM_ERROR",)).state == "SYSTEM_ERROR"


@pytest.mark.parametrize("auth", ["token", "basic"])
def test_auth(shared_dir, auth):
    kwargs = {"token": "t0k"} if auth == "token" else {"user": "u", "password": "p"}
    with TesServer([shared_dir], **kwargs) as server:
        good = (
            tes.HTTPClient(server.url, token="t0k")
            if auth == "token"
            else tes.HTTPClient(server.url, user="u", password="p")
        )
        bad = (
            tes.HTTPClient(server.url, token="nope")
            if auth == "token"
            else tes.HTTPClient(server.url, user="u", password="nope")
        )
        assert good.get_service_info().name
        with pytest.raises(requests.HTTPError) as caught:
            bad.list_tasks()
        assert caught.value.response.status_code == 401
        assert requests.get(server.url + API + "/tasks").status_code == 401
        assert (
            requests.get(server.url + "/_fixture/counters").json()["counters"]["unauthorized"] == 2
        )
