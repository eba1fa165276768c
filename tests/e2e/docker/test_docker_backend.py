"""omnibio_docker end to end: real miniwdl runs on the local dockerd."""

import json
import os

import pytest

from tests.e2e.docker.support import run_dir
from tests.helpers import run_miniwdl, workflow_run_of

pytestmark = pytest.mark.usefixtures("docker_rig")

CONTRACT_WDL = r"""
version 1.2

task probe {
  input {
    File text
    Directory folder
    Array[File] more
    Int number = 7
  }
  command <<<
    set -euo pipefail
    python3 - <<'PY'
    import json, os
    names = ["INPUTS_JSON", "RESULT_URI", "S3_RESULT_URI"]
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


def test_inputs_are_the_host_files_in_place(workdir):
    """omnibio_docker binds each input read-only at its container path: the same inode. (The
    contract itself is checked on every backend by tests/scenarios/contract.py.)"""
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
        config={"omnibio": {"result_uri_prefix": "s3://bucket/prefix"}},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(run.outputs["probe.probe"]) as infile:
        seen = json.load(infile)
    workflow_run = workflow_run_of(run_dir(run))
    assert seen["RESULT_URI"] == f"s3://bucket/prefix/{workflow_run}/probe/results.json"
    assert seen["S3_RESULT_URI"] == seen["RESULT_URI"]
    inputs = json.loads(seen["INPUTS_JSON"])
    assert inputs["number"] == 7  # the supplied inputs, as in miniwdl's inputs.json
    assert all(
        p.startswith("/mnt/miniwdl_task_container/work/_miniwdl_inputs/")
        for p in [inputs["text"], inputs["folder"], *inputs["more"]]
    )
    assert all(seen["exists"].values())
    # in situ: the container sees the host files themselves, not copies
    assert seen["inode"][inputs["text"]] == os.stat(text).st_ino
    assert seen["inode"][inputs["folder"]] == os.stat(folder).st_ino
    assert [seen["inode"][p] for p in inputs["more"]] == [os.stat(m).st_ino for m in more]


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
    with open(target) as original:
        assert original.read() == "original\n"
    with open(os.path.join(run_dir(run), "stderr.txt")) as stderr:
        assert "Read-only file system" in stderr.read()


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
    workflow_run = workflow_run_of(run_dir(run))
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
