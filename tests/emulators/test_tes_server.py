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


@pytest.mark.parametrize(
    "profile, served",
    [
        ("spec", [API]),
        ("funnel", [API, "/v1", ""]),
        ("tesk", [API]),
        ("tes-azure", ["/v1"]),
    ],
)
def test_base_paths_per_profile(profile, served):
    with TesServer(profile=profile, execute=False) as server:
        for base in (API, "/v1", ""):
            response = requests.get(server.url + base + "/service-info", timeout=10)
            assert response.status_code == (200 if base in served else 404), (base, response.text)
            if response.ok:
                info = response.json()
                assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
                assert info["tesResources_backend_parameters"] == ["shm_size"]
    with TesServer(base_paths=("/custom",), execute=False) as custom:
        assert requests.get(custom.url + "/custom/service-info", timeout=10).ok


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


@pytest.mark.parametrize(
    "profile, kwargs, upload_on_error",
    [("funnel", {}, True), ("tesk", {}, False), ("spec", {"upload_on_error": False}, False)],
)
def test_outputs_of_a_failed_executor(moto, s3, profile, kwargs, upload_on_error):
    """Funnel uploads outputs after a failed executor; TESK's taskmaster does not; the keyword
    overrides the profile."""
    key = f"failed-{profile}-{upload_on_error}/err.txt"
    access = S3Access(moto.endpoint, "testing", "testing")
    with TesServer(profile=profile, s3=access, workers=1, **kwargs) as server:
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
    executor_log = task["logs"][0]["logs"][0]
    assert task["state"] == "EXECUTOR_ERROR" and executor_log["exit_code"] == 3
    assert executor_log.get("stderr", executor_log["stdout"]) == "oops\n"  # TESK: one pod log
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
    # zipped as arrays (the spec): all keys, then all values
    arrays = [("tag_key", "run"), ("tag_key", "i"), ("tag_value", "a"), ("tag_value", "2")]
    assert [t["id"] for t in _listed(server, arrays)["tasks"]] == [ids[2]]
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
    requests.post(f"{server.url}{API}/tasks/{third}:cancel", timeout=10).raise_for_status()
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


# --- server profiles: what differs, over HTTP --------------------------------------------------


def _base(server):
    return server.base_paths[0]


def _post(server, task):
    return requests.post(server.url + _base(server) + "/tasks", json=task, timeout=10)


def _list_ids(server, params):
    response = requests.get(server.url + _base(server) + "/tasks", params=params, timeout=10)
    assert response.ok, response.text
    return [t["id"] for t in response.json()["tasks"]]


def _held(profile, **kwargs):
    """A server of that profile that runs nothing (tasks stay QUEUED): filters, pages, create."""
    return TesServer(profile=profile, execute=False, **kwargs)


def _tagged(server):
    ids = {}
    for name, tags in (("a", {"run": "a", "i": "1"}), ("b", {"run": "a", "i": "2"}), ("c", {})):
        response = _post(server, _task("true", name=f"job-{name}", tags=tags))
        assert response.ok, response.text
        ids[name] = response.json()["id"]
    return ids


def _key_then_value(key, value):
    return [("tag_key", key), ("tag_value", value)]


ARRAYS = [("tag_key", "run"), ("tag_key", "i"), ("tag_value", "a"), ("tag_value", "2")]
KEY_ALONE_FIRST = [("tag_key", "run"), ("tag_key", "i"), ("tag_value", "2")]


@pytest.mark.parametrize(
    "profile, arrays, key_alone_first, surplus_value",
    [
        # the spec zips the arrays: the second query is {"run": "2", "i": ""}
        ("spec", ["b"], [], 400),
        ("funnel", ["b"], [], ["b"]),  # funnel GetTags: surplus values dropped
        # TES on Azure: by position first ({"run": "", "i": "2"}), zipped as a fallback
        ("tes-azure", ["b"], ["b"], 400),
    ],
)
def test_tag_filters_per_profile(profile, arrays, key_alone_first, surplus_value):
    with _held(profile) as server:
        ids = _tagged(server)

        def named(names):
            return sorted(ids[n] for n in names)

        assert sorted(_list_ids(server, _key_then_value("i", "1"))) == named(["a"])
        assert sorted(_list_ids(server, {"tag_key": "run"})) == named(["a", "b"])  # any value
        assert sorted(_list_ids(server, ARRAYS)) == named(arrays)
        assert sorted(_list_ids(server, KEY_ALONE_FIRST)) == named(key_alone_first)
        surplus = [*_key_then_value("i", "2"), ("tag_value", "x")]
        response = requests.get(server.url + _base(server) + "/tasks", params=surplus, timeout=10)
        if surplus_value == 400:
            assert response.status_code == 400, response.text
        else:
            assert sorted(t["id"] for t in response.json()["tasks"]) == named(surplus_value)


def test_tesk_ignores_every_list_filter():
    """tesk-api TesServiceImpl.listTasks (and the Python TESK's ListTesTask) filter nothing."""
    with _held("tesk") as server:
        ids = _tagged(server)
        every = sorted(ids.values())
        assert _list_ids(server, {}) == every  # in id order
        for params in (
            _key_then_value("i", "1"),
            {"state": "COMPLETE"},
            {"name_prefix": "job-a"},
            {"state": "NOT-A-STATE"},
        ):
            assert _list_ids(server, params) == every, params
        requests.post(f"{server.url}{API}/tasks/{ids['a']}:cancel", timeout=10).raise_for_status()
        again = requests.post(f"{server.url}{API}/tasks/{ids['a']}:cancel", timeout=10)
        assert again.status_code == 400  # CancelNotRunningTask
        page = requests.get(server.url + API + "/tasks", params={"page_size": 2}, timeout=10)
        token = page.json()["next_page_token"]
        rest = _list_ids(server, {"page_size": 2, "page_token": token})
        assert [t["id"] for t in page.json()["tasks"]] + rest == every


@pytest.mark.parametrize("profile", ["spec", "funnel", "tes-azure"])
def test_state_and_name_filters_honoured(profile):
    with _held(profile) as server:
        ids = _tagged(server)
        server.set_state(ids["b"], "RUNNING")
        assert _list_ids(server, {"state": "RUNNING"}) == [ids["b"]]
        assert _list_ids(server, {"name_prefix": "job-c"}) == [ids["c"]]
        assert _list_ids(server, {}) == [ids["c"], ids["b"], ids["a"]]  # newest first
        requests.post(
            f"{server.url}{_base(server)}/tasks/{ids['a']}:cancel", timeout=10
        ).raise_for_status()
        again = requests.post(f"{server.url}{_base(server)}/tasks/{ids['a']}:cancel", timeout=10)
        assert again.ok  # nothing to do: success on these servers


def test_page_sizes_and_tokens_per_profile():
    with _held("funnel") as funnel:
        ids = _tagged(funnel)
        assert len(_list_ids(funnel, {"page_size": 5000})) == 3  # clamped to 2048, not refused
        page = requests.get(funnel.url + API + "/tasks", params={"page_size": 3}, timeout=10)
        token = page.json()["next_page_token"]  # a full page has a token, even the last
        assert _list_ids(funnel, {"page_size": 3, "page_token": token}) == []
        assert sorted(_list_ids(funnel, {})) == sorted(ids.values())
    for profile in ("spec", "tes-azure"):
        with _held(profile) as server:
            _tagged(server)
            url = server.url + _base(server) + "/tasks"
            for size in (0, 2048):
                response = requests.get(url, params={"page_size": size}, timeout=10)
                assert response.status_code == 400, (profile, size)
            assert (
                "next_page_token"
                not in requests.get(url, params={"page_size": 3}, timeout=10).json()
            )


def test_file_inputs_refused_on_tes_azure():
    task = _task("true", inputs=[{"url": "file:///etc/hostname", "path": "/h"}])
    with _held("tes-azure") as azure:
        refused = _post(azure, task)
        assert refused.status_code == 400
        assert "local file system are not supported" in refused.json()["message"]
    with _held("spec") as spec:
        assert _post(spec, task).ok


STRICT = {"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}


@pytest.mark.parametrize("profile", ["funnel", "tes-azure"])
def test_strict_backend_parameters_refused_at_create(profile):
    with _held(profile) as server:
        refused = _post(server, _task("true", resources=STRICT))
        assert refused.status_code == 400 and "VmSize".lower() in refused.text.lower()


def test_strict_backend_parameters_fail_the_task_on_spec():
    """The spec: with backend_parameters_strict "backends should fail the task"."""
    with TesServer(profile="spec", workers=1) as server:
        task_id = _create(server, _task("true", resources=STRICT))
        task = _wait(server, task_id)
    assert task["state"] == "SYSTEM_ERROR" and task["logs"][0]["logs"] == []
    assert "VmSize" in task["logs"][0]["system_logs"][-1]
    assert task["resources"]["backend_parameters"] == {}  # "shall not store" unsupported keys


def test_backend_parameters_lower_cased_on_tes_azure():
    resources = {"backend_parameters": {"SHM_Size": "70m", "VM_SIZE": "x"}}
    with _held("tes-azure") as azure:
        task_id = _post(azure, _task("true", resources=resources)).json()["id"]
        stored = requests.get(
            f"{azure.url}/v1/tasks/{task_id}", params={"view": "FULL"}, timeout=10
        ).json()
    assert stored["resources"]["backend_parameters"] == {"shm_size": "70m"}
    with _held("funnel") as funnel:  # funnel keeps what it was sent
        task_id = _post(funnel, _task("true", resources=resources)).json()["id"]
        assert (
            _get(funnel, task_id)["resources"]["backend_parameters"]
            == resources["backend_parameters"]
        )


def _executors(*steps):
    return {
        "executors": [
            {"image": "ubuntu:22.04", "command": ["sh", "-c", command], **extra}
            for command, extra in steps
        ]
    }


@pytest.mark.parametrize(
    "profile, ran",
    [("spec", 2), ("funnel", 2), ("tesk", 1), ("tes-azure", 1)],
)
def test_ignore_error_per_profile(profile, ran):
    """spec and Funnel go on past a failed executor marked ignore_error; TESK's taskmaster stops;
    TES on Azure runs only the first executor."""
    task = _executors(("exit 3", {"ignore_error": True}), ("echo second", {}))
    with TesServer(profile=profile, workers=1) as server:
        task_id = _post(server, task).json()["id"]
        wait_until(
            lambda: _get_at(server, task_id, "MINIMAL")["state"] in FINAL, f"{task_id} to end", 60
        )
        done = _get_at(server, task_id, "FULL")
    logs = done["logs"][0]["logs"]
    assert done["state"] == "EXECUTOR_ERROR" and len(logs) == ran, done
    assert logs[0]["exit_code"] == 3
    if ran == 2:
        assert logs[1]["exit_code"] == 0 and logs[1]["stdout"] == "second\n"


def _get_at(server, task_id, view):
    return requests.get(
        f"{server.url}{_base(server)}/tasks/{task_id}", params={"view": view}, timeout=10
    ).json()


@pytest.mark.parametrize(
    "profile, while_running",
    [("spec", "no log"), ("funnel", 0), ("tesk", "absent"), ("tes-azure", None)],
)
def test_executor_logs_and_exit_code_per_profile(profile, while_running):
    """tesExecutorLog requires exit_code: the spec profile shows an executor's log only once it
    has one; the others as their code writes it."""
    with TesServer(profile=profile, workers=1) as server:
        task_id = _post(server, _task("echo out; echo err >&2; sleep 300")).json()["id"]
        wait_until(lambda: _get_at(server, task_id, "MINIMAL")["state"] == "RUNNING", "running", 60)
        running = _get_at(server, task_id, "BASIC")["logs"][0]["logs"]
        if while_running == "no log":
            assert running == []
        elif while_running == "absent":
            assert "exit_code" not in running[0]
        else:
            assert running[0]["exit_code"] == while_running
        requests.post(
            f"{server.url}{_base(server)}/tasks/{task_id}:cancel", timeout=10
        ).raise_for_status()
        if profile == "spec":  # CANCELING until the executor has stopped
            assert _get_at(server, task_id, "MINIMAL")["state"] in ("CANCELING", "CANCELED")
        else:
            assert _get_at(server, task_id, "MINIMAL")["state"] == "CANCELED"
        wait_until(lambda: not server.containers(), "the executor to be removed", 60)
        # the worker writes the end (state, exit code) just after it removed the executor

        def ended():
            task = _get_at(server, task_id, "FULL")
            logs = task["logs"][0]["logs"]
            return task["state"] in FINAL and logs and isinstance(logs[0].get("exit_code"), int)

        wait_until(ended, "the end to be written", 60)
        assert _get_at(server, task_id, "MINIMAL")["state"] == "CANCELED"


def test_views_as_tesk_and_funnel_build_them():
    task = _task(
        "echo out; echo err >&2",
        inputs=[{"content": "x", "path": "/in/x"}],
        tags={"k": "v"},
    )
    task["executors"][0]["stdout"] = "/out/stdout"  # a path: Funnel's BASIC view drops it
    with TesServer(profile="tesk", workers=1) as tesk:
        task_id = _post(tesk, task).json()["id"]
        wait_until(lambda: _get_at(tesk, task_id, "MINIMAL")["state"] in FINAL, "end", 60)
        minimal = _get_at(tesk, task_id, "MINIMAL")
        basic = _get_at(tesk, task_id, "BASIC")
        full = _get_at(tesk, task_id, "FULL")
        listed = requests.get(tesk.url + API + "/tasks", timeout=10).json()["tasks"][0]
    assert set(minimal) == {"id", "state", "logs"} and "USER_ID" in minimal["logs"][0]["metadata"]
    assert set(listed) == {"id", "state"}
    assert basic["tags"] == {"k": "v"} and "content" not in basic["inputs"][0]
    assert (
        basic["logs"][0]["logs"][0]["stdout"] == "" and "stderr" not in basic["logs"][0]["logs"][0]
    )
    assert "outputs" not in basic["logs"][0] and "system_logs" not in basic["logs"][0]
    assert full["inputs"][0]["content"] == "x"
    assert full["logs"][0]["logs"][0]["stdout"] == "out\nerr\n"  # the pod's one log
    with TesServer(profile="funnel", workers=1) as funnel:
        task_id = _post(funnel, task).json()["id"]
        wait_until(lambda: _get_at(funnel, task_id, "MINIMAL")["state"] in FINAL, "end", 60)
        basic = _get_at(funnel, task_id, "BASIC")
        full = _get_at(funnel, task_id, "FULL")
    assert "stdout" not in basic["executors"][0]  # ExecutorBasic has no stdout path
    assert basic["logs"][0]["logs"][0]["stderr"] == ""
    assert full["logs"][0]["logs"][0]["stderr"] == "err\n" and full["logs"][0]["system_logs"]
    with _held("funnel") as queued:
        task_id = _post(queued, task).json()["id"]
        # no system log yet: DetectView answers FULL in the BASIC shape
        assert _get_at(queued, task_id, "FULL") == _get_at(queued, task_id, "BASIC")


def test_requests_during_counts_by_kind():
    with _held("tesk") as server:
        _tagged(server)
        with server.requests_during() as seen:
            _list_ids(server, {"state": "RUNNING"})
            _list_ids(server, {})
        assert seen == {"list": 2}
        counters = requests.get(server.url + "/_fixture/counters", timeout=10).json()
        assert counters["profile"] == "tesk" and counters["counters"]["create"] == 3
