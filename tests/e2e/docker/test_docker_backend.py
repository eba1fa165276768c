"""omnibio_docker end to end: real miniwdl runs on the local dockerd."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import (
    containers_with_label,
    miniwdl_env,
    popen_miniwdl,
    run_dir_name,
    run_miniwdl,
)

pytestmark = pytest.mark.usefixtures("docker_rig")

CONTRACT_WDL = r"""
version 1.2

task probe {
  input {
    File text
    Directory folder
    Array[File] more
    Int number = 7
    env String greeting = "hi"
  }
  command <<<
    set -euo pipefail
    python3 - <<'PY'
    import json, os
    names = ["TOOL_ID", "RUN_ID", "INPUTS_JSON", "RESOURCES_JSON", "RESULT_URI", "S3_RESULT_URI", "greeting", "FROM_CONFIG"]
    env = {k: os.environ.get(k) for k in names}
    inputs = json.loads(env["INPUTS_JSON"])
    paths = [inputs["text"], inputs["folder"], *inputs["more"]]
    env["exists"] = {p: os.path.exists(p) for p in paths}
    env["inode"] = {p: os.stat(p).st_ino for p in paths}
    json.dump(env, open("probe.json", "w"))
    PY
  >>>
  output { File probe = "probe.json" }
  requirements { container: "ubuntu:22.04" cpu: 1 memory: "300 MiB" omnibio_result_check: "off" }
}
"""


def _write(path, text):
    with open(path, "w") as outfile:
        outfile.write(text)
    return str(path)


def test_contract_inside_container(workdir):
    wdl = _write(workdir / "probe.wdl", CONTRACT_WDL)
    text = _write(workdir / "text.txt", "hello\n")
    folder = workdir / "folder"
    folder.mkdir()
    _write(folder / "a.txt", "a\n")
    more = [_write(workdir / f"more{i}.txt", str(i)) for i in range(3)]
    run = run_miniwdl(
        wdl,
        [f"text={text}", f"folder={folder}", "number=7"] + [f"more={m}" for m in more],
        str(workdir),
        config={
            "omnibio": {"result_uri_prefix": "s3://bucket/prefix"},
            "task_runtime": {"env": json.dumps({"FROM_CONFIG": "cfg-value"})},
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(run.outputs["probe.probe"]) as infile:
        seen = json.load(infile)
    workflow_run = os.path.basename(run.dir)
    assert seen["TOOL_ID"] == "probe"
    assert seen["RUN_ID"] == f"{workflow_run}.probe.1"
    assert seen["RESULT_URI"] == f"s3://bucket/prefix/{workflow_run}/probe/results.json"
    assert seen["S3_RESULT_URI"] == seen["RESULT_URI"]
    assert seen["greeting"] == "hi"  # WDL 1.2 env input
    assert seen["FROM_CONFIG"] == "cfg-value"  # [task_runtime] env
    inputs = json.loads(seen["INPUTS_JSON"])
    assert inputs["number"] == 7  # the supplied inputs, as in miniwdl's inputs.json
    assert "greeting" not in inputs  # defaults are not supplied inputs
    assert all(
        p.startswith("/mnt/miniwdl_task_container/work/_miniwdl_inputs/")
        for p in [inputs["text"], inputs["folder"], *inputs["more"]]
    )
    assert all(seen["exists"].values())
    # in situ: the container sees the host files themselves, not copies
    assert seen["inode"][inputs["text"]] == os.stat(text).st_ino
    assert seen["inode"][inputs["folder"]] == os.stat(folder).st_ino
    assert [seen["inode"][p] for p in inputs["more"]] == [os.stat(m).st_ino for m in more]
    resources = json.loads(seen["RESOURCES_JSON"])
    assert (
        resources["cpu"] == 1 and resources["memory"] == 300 * 1024 * 1024 and resources["gpu"] == 0
    )
    assert set(resources) >= {"cpu", "memory", "gpu", "disk", "time"}


def test_copy_input_files_gives_copies(workdir):
    wdl = _write(workdir / "probe.wdl", CONTRACT_WDL)
    text = _write(workdir / "text.txt", "hello\n")
    folder = workdir / "folder"
    folder.mkdir()
    run = run_miniwdl(
        wdl,
        [f"text={text}", f"folder={folder}", f"more={text}"],
        str(workdir),
        config={"file_io": {"copy_input_files": "true"}},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(run.outputs["probe.probe"]) as infile:
        seen = json.load(infile)
    inputs = json.loads(seen["INPUTS_JSON"])
    assert seen["inode"][inputs["text"]] != os.stat(text).st_ino


def test_tool_id_runtime_override_and_no_ignored_warning(workdir):
    wdl = _write(
        workdir / "t.wdl",
        """
version 1.1
task t {
  command <<< echo "$TOOL_ID" >>>
  output { String tool = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" omnibio_tool_id: "aligner-v2" }
}
""",
    )
    run = run_miniwdl(wdl, [], str(workdir))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["t.tool"] == "aligner-v2"
    assert "ignored runtime settings" not in run.stderr


def test_writing_to_an_input_fails(workdir):
    wdl = _write(
        workdir / "w.wdl",
        """
version 1.1
task w {
  input { File f }
  command <<< echo tampered >> ~{f} >>>
  runtime { docker: "ubuntu:22.04" }
}
""",
    )
    target = _write(workdir / "input.txt", "original\n")
    run = run_miniwdl(wdl, [f"f={target}"], str(workdir))
    assert run.returncode != 0
    assert open(target).read() == "original\n"
    assert "Read-only file system" in open(os.path.join(run.dir, "stderr.txt")).read()


def test_five_thousand_file_inputs_spill_to_a_file(workdir):
    wdl = _write(
        workdir / "many.wdl",
        """
version 1.1
task many {
  input { Array[File] files }
  command <<<
    python3 -c 'import os, json; v = json.load(open(os.environ["INPUTS_JSON_FILE"])); print(len(v["files"]), all(os.path.exists(p) for p in v["files"]), "INPUTS_JSON" in os.environ)'
  >>>
  output { String seen = read_string(stdout()) }
  runtime { docker: "ubuntu:22.04" omnibio_result_check: "off" }
}
""",
    )
    inputs_dir = workdir / "inputs"
    inputs_dir.mkdir()
    files = [
        _write(inputs_dir / f"sample_{i:05d}_with_a_long_descriptive_name.fastq", "x")
        for i in range(5000)
    ]
    _write(workdir / "inputs.json", json.dumps({"many.files": files}))
    run = run_miniwdl(wdl, ["-i", str(workdir / "inputs.json")], str(workdir))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.outputs["many.seen"] == "5000 True False"


ECHO_WDL = """
version 1.1
task echo {
  input { String sample }
  command <<< python3 -m miniwdl_omnibio.runtime.echo_test >>>
  output { String result = read_string("omnibio_result.json") }
  runtime { docker: "omnibio/runtime:latest" }
}
"""


def test_result_uploaded_verified_and_available_to_outputs(workdir):
    wdl = _write(workdir / "echo.wdl", ECHO_WDL)
    prefix = f"file://{workdir}/results"
    run = run_miniwdl(
        wdl, ["sample=S1"], str(workdir), config={"omnibio": {"result_uri_prefix": prefix}}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.outputs["echo.result"])
    workflow_run = os.path.basename(run.dir)
    assert (
        result["ok"] is True
        and result["tool_id"] == "echo"
        and result["run_id"] == f"{workflow_run}.echo.1"
    )
    assert result["results"]["echo"] == {"sample": "S1"}
    uploaded = workdir / "results" / workflow_run / "echo" / "results.json"
    assert json.loads(uploaded.read_text()) == result
    assert "result verified" in run.stderr


@pytest.mark.parametrize(
    "command,expected",
    [
        ("true", "results.json missing"),
        (
            """echo '{"ok": false, "error": "reference index corrupt"}' > r.json && python3 -m miniwdl_omnibio.runtime upload r.json""",
            "says ok=false: reference index corrupt",
        ),
        (
            """python3 -c 'from miniwdl_omnibio.runtime import upload_result; import os; upload_result(os.environ["RESULT_URI"], b"{not json")'""",
            "results.json unreadable",
        ),
    ],
)
def test_bad_result_fails_the_task_saying_which(workdir, command, expected):
    wdl = _write(
        workdir / "bad.wdl",
        f"""
version 1.1
task bad {{
  command <<< {command} >>>
  runtime {{ docker: "omnibio/runtime:latest" }}
}}
""",
    )
    run = run_miniwdl(
        wdl,
        [],
        str(workdir),
        config={"omnibio": {"result_uri_prefix": f"file://{workdir}/results"}},
    )
    assert run.returncode != 0
    error = run.error_json()
    assert expected in json.dumps(error), error


def test_result_check_warn_lets_a_task_pass(workdir):
    wdl = _write(
        workdir / "t.wdl",
        'version 1.1\ntask t { command <<< true >>> runtime { docker: "ubuntu:22.04" } }\n',
    )
    run = run_miniwdl(
        wdl,
        [],
        str(workdir),
        config={"omnibio": {"result_uri_prefix": f"file://{workdir}/r", "result_check": "warn"}},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "results.json missing" in run.stderr


def test_out_of_memory_is_named(workdir):
    wdl = _write(
        workdir / "oom.wdl",
        """
version 1.1
task oom {
  command <<< python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))' >>>
  runtime { docker: "ubuntu:22.04" memory: "64 MiB" }
}
""",
    )
    run = run_miniwdl(
        wdl, [], str(workdir), config={"task_runtime": {"memory_limit_multiplier": "1.0"}}
    )
    assert run.returncode != 0
    assert "exceeding the memory limit" in json.dumps(run.error_json())


def test_task_time_limit_kills(workdir):
    wdl = _write(
        workdir / "slow.wdl",
        'version 1.1\ntask slow { command <<< sleep 60 >>> runtime { docker: "ubuntu:22.04" omnibio_time_limit: "2s" } }\n',
    )
    started = time.time()
    run = run_miniwdl(wdl, [], str(workdir))
    assert run.returncode != 0 and time.time() - started < 30
    assert "time limit of 2 s" in json.dumps(run.error_json())


SLEEPY_SCATTER = """
version 1.1
workflow sleepy {
  scatter (i in range(4)) { call nap { input: i } }
}
task nap {
  input { Int i }
  command <<< sleep 600 >>>
  runtime { docker: "ubuntu:22.04" cpu: 1 }
}
"""


def _wait_for_containers(label_value, count, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        running = [
            c
            for c in containers_with_label("omnibio.run", label_value)
            if c.status == "running" and "omnibio.sandbox" not in c.labels
        ]
        if len(running) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} containers started for {label_value}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_container_of_the_run(workdir, sig):
    wdl = _write(workdir / "sleepy.wdl", SLEEPY_SCATTER)
    proc = popen_miniwdl(wdl, [], str(workdir))
    try:
        run_name = run_dir_name(str(workdir))
        _wait_for_containers(run_name, 2)
        started = time.time()
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert time.time() - started < 30
        assert proc.returncode != 0
        left = [
            (c.name, c.status, dict(c.labels))
            for c in containers_with_label("omnibio.run", run_name)
        ]
        assert left == [], (left, proc.stderr.read()[-3000:])
    finally:
        if proc.poll() is None:
            proc.kill()


def test_fail_fast_stops_siblings(workdir):
    wdl = _write(
        workdir / "ff.wdl",
        """
version 1.1
workflow ff {
  call nap
  call boom
}
task nap { command <<< sleep 600 >>> runtime { docker: "ubuntu:22.04" cpu: 1 } }
task boom { command <<< sleep 2; exit 3 >>> runtime { docker: "ubuntu:22.04" cpu: 1 } }
""",
    )
    started = time.time()
    run = run_miniwdl(wdl, [], str(workdir), timeout=120)
    assert run.returncode != 0 and time.time() - started < 60
    assert containers_with_label("omnibio.run", os.path.basename(run.dir)) == []


def test_admission_queues_tasks_that_do_not_fit(workdir):
    wdl = _write(
        workdir / "big.wdl",
        """
version 1.1
workflow big { scatter (i in range(2)) { call hog { input: i } } }
task hog {
  input { Int i }
  command <<< date +%s.%N; sleep 1; date +%s.%N >>>
  output { Array[Float] span = read_lines(stdout()) }
  runtime { docker: "ubuntu:22.04" cpu: 2 }
}
""",
    )
    run = run_miniwdl(wdl, [], str(workdir))
    assert run.returncode == 0, run.stderr[-3000:]
    (a_start, a_end), (b_start, b_end) = sorted(run.outputs["big.hog.span"])
    assert b_start >= a_end  # 2 cpus each on a 2-cpu host: one after the other
    assert "waiting for host resources" in run.stderr


def test_as_me_runs_as_the_invoking_user(workdir):
    wdl = _write(
        workdir / "id.wdl",
        'version 1.1\ntask id { command <<< id -u >>> output { Int uid = read_int(stdout()) } runtime { docker: "ubuntu:22.04" } }\n',
    )
    proc = subprocess.run(
        [sys.executable, "-m", "WDL", "run", wdl, "--dir", str(workdir), "--as-me"],
        env=miniwdl_env("omnibio_docker"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["outputs"]["id.uid"] == os.geteuid()


def test_a_network_sandbox_is_shared_and_removed(workdir):
    wdl = _write(
        workdir / "net.wdl",
        'version 1.1\ntask net { command <<< cat /proc/net/dev | wc -l >>> runtime { docker: "ubuntu:22.04" } }\n',
    )
    run = run_miniwdl(wdl, [], str(workdir))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "docker network sandbox" in run.stderr
    assert containers_with_label("omnibio.run", os.path.basename(run.dir)) == []


def test_next_run_removes_what_a_killed_run_left(workdir):
    """SIGKILL leaves no chance to clean up; the next run on this host removes those containers."""
    wdl = _write(workdir / "sleepy.wdl", SLEEPY_SCATTER)
    proc = popen_miniwdl(wdl, [], str(workdir))
    try:
        run_name = run_dir_name(str(workdir))
        _wait_for_containers(run_name, 2)
    finally:
        proc.kill()
        proc.wait()
    assert containers_with_label("omnibio.run", run_name)  # left behind ...
    tiny = _write(
        workdir / "tiny.wdl",
        'version 1.1\ntask tiny { command <<< true >>> runtime { docker: "ubuntu:22.04" } }\n',
    )
    later = workdir / "later"
    later.mkdir()
    assert run_miniwdl(tiny, [], str(later)).returncode == 0
    assert containers_with_label("omnibio.run", run_name) == []  # ... and gone after the next run


def test_open_job_description_lines_are_surfaced(workdir):
    wdl = _write(
        workdir / "ojd.wdl",
        """
version 1.1
task ojd {
  command <<<
    echo "openjd_progress: 42" >&2
    echo "openjd_status: aligning" >&2
    echo "openjd_fail: reference index corrupt" >&2
    exit 1
  >>>
  runtime { docker: "ubuntu:22.04" }
}
""",
    )
    run = run_miniwdl(wdl, [], str(workdir))
    assert run.returncode != 0
    assert 'task progress :: percent: "42"' in run.stderr
    assert 'task status :: status: "aligning"' in run.stderr
    assert run.error_json()["cause"]["openjd_fail"] == "reference index corrupt"
