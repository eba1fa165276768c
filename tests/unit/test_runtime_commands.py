"""docs/runtime.md's commands as a tool image runs them: `runtime show`, `omnibio-echo-test`,
`omni-tool-runtime` (the console scripts too), the KLMS input.json's mode and lifetime, and the
atomic `file://` result write."""

import json
import os
import shutil
import stat
import subprocess
import sys
from importlib import metadata

import pytest

from miniwdl_omnibio.runtime import store
from tests.helpers import REPO


def _contract(tmp_path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_JSON") and k != "RESULT_URI"}
    env.update(
        PYTHONPATH=REPO,
        TOOL_ID="echo",
        RUN_ID="run.call-echo.1",
        INPUTS_JSON=json.dumps({"text": "hi"}),
        RESOURCES_JSON=json.dumps({"cpu": 1}),
        RESULT_URI=f"file://{tmp_path}/out/results.json",
    )
    env.update(extra)
    return env


def _run(argv, env, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_show_prints_the_contract(tmp_path):
    done = _run([sys.executable, "-m", "miniwdl_omnibio.runtime", "show"], _contract(tmp_path))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["tool_id"] == "echo" and shown["run_id"] == "run.call-echo.1"
    assert shown["inputs"] == {"text": "hi"} and shown["resources"] == {"cpu": 1}
    assert shown["result_uri"] == f"file://{tmp_path}/out/results.json"


def _console_script(name: str, target: str) -> str:
    """The installed console script ``name``, declared by this distribution as ``target``."""
    declared = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert declared.get(name) == target
    path = shutil.which(name)
    assert path, f"{name} is not on PATH (pip install -e .)"
    return path


@pytest.mark.parametrize(
    "argv",
    [["-m", "miniwdl_omnibio.runtime.echo_test"], ["omnibio-echo-test"]],
    ids=["module", "console_script"],
)
def test_echo_test_writes_its_contract_as_the_result(tmp_path, argv):
    if argv[0] == "omnibio-echo-test":
        argv = [_console_script(argv[0], "miniwdl_omnibio.runtime.echo_test:main")]
    else:
        argv = [sys.executable, *argv]
    done = _run(argv, _contract(tmp_path))
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "results.json") as infile:
        stored = json.load(infile)
    assert stored["ok"] is True and stored["run_id"] == "run.call-echo.1"
    assert stored["results"] == {"echo": {"text": "hi"}, "resources": {"cpu": 1}}
    assert "echo_test: wrote results for run.call-echo.1" in done.stderr


def test_omni_tool_runtime_console_script_runs_the_tool_of_tool_id(tmp_path):
    script = _console_script("omni-tool-runtime", "omni_tool_runtime.run:main")
    tool = tmp_path / "tools" / "echo"
    tool.mkdir(parents=True)
    (tmp_path / "tools" / "__init__.py").write_text("")
    (tool / "__init__.py").write_text("")
    (tool / "run.py").write_text(
        "from omni_tool_runtime.upload_result import upload_result\n"
        "def main():\n    upload_result({'results': {'said': 'hi'}})\n    return 0\n"
    )
    done = _run([script], _contract(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "results.json") as infile:
        assert json.load(infile)["results"] == {"said": "hi"}
    missing = _run([script], _contract(tmp_path, TOOL_ID="absent"), cwd=tmp_path)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


# The KLMS tool: records what it sees of input.json, then writes output.json.
KLMS_TOOL = """
import json, os, stat, sys
seen = os.stat(sys.argv[1])
with open(sys.argv[1]) as infile:
    document = json.load(infile)
with open("seen.json", "w") as outfile:
    json.dump({"mode": stat.S_IMODE(seen.st_mode), "secrets": document["secrets"]}, outfile)
with open(sys.argv[2], "w") as outfile:
    json.dump({"message": "done", "output": {}, "metrics": {}, "status": "success"}, outfile)
"""


@pytest.mark.parametrize("secret", [True, False], ids=["secrets", "no_secrets"])
def test_klms_input_json_is_private_and_deleted_when_it_holds_secrets(tmp_path, secret):
    tool = tmp_path / "main.py"
    tool.write_text(KLMS_TOOL)
    extra = {"MINIO_TOKEN": "s3cr3t", "OMNIBIO_SECRETS": '["MINIO_TOKEN"]'} if secret else {}
    argv = [
        sys.executable,
        "-m",
        "miniwdl_omnibio.runtime",
        "klms",
        "--",
        sys.executable,
        str(tool),
    ]
    done = _run(argv, _contract(tmp_path, **extra), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "seen.json") as infile:
        seen = json.load(infile)
    assert seen["mode"] == 0o600  # while the tool ran
    assert seen["secrets"] == ({"MINIO_TOKEN": "s3cr3t"} if secret else {})
    assert (tmp_path / "input.json").exists() is not secret  # gone after, when it held secrets
    assert "s3cr3t" not in done.stdout + done.stderr


def test_a_file_result_is_written_atomically(tmp_path, monkeypatch):
    """A reader sees the old document or the new one, never part of one: the new one is written
    whole beside the target and renamed over it; a write that fails leaves the old one and no
    temporary file."""
    target = tmp_path / "r" / "results.json"
    store.upload_result(f"file://{target}", b'{"old": true}')
    renamed = []
    real_replace = os.replace

    def replace(source, destination):
        assert target.read_bytes() == b'{"old": true}'  # nothing written in place
        assert os.path.dirname(source) == str(target.parent)  # same filesystem: atomic rename
        with open(source, "rb") as infile:
            renamed.append(infile.read())
        real_replace(source, destination)

    monkeypatch.setattr(store.os, "replace", replace)
    store.upload_result(f"file://{target}", b'{"new": true}')
    assert renamed == [b'{"new": true}'] and target.read_bytes() == b'{"new": true}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644

    def broken_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.upload_result(f"file://{target}", b'{"newer": true}')
    assert target.read_bytes() == b'{"new": true}'
    assert os.listdir(target.parent) == ["results.json"]


def test_klms_input_document_splits_inputs_and_carries_s3_access(tmp_path, monkeypatch):
    """docs/runtime.md: File and Directory inputs (existing absolute paths, alone or in a list)
    under ``input``, the rest under ``parameters``; ``minio`` from AWS_ENDPOINT_URL_S3 (else
    AWS_ENDPOINT_URL) and the AWS credentials; ``output`` as absolute paths."""
    from miniwdl_omnibio.runtime.contract import read_contract
    from miniwdl_omnibio.runtime.klms import tool_input

    reads = tmp_path / "reads.fq"
    reads.write_text("ACGT\n")
    inputs = {
        "reads": [str(reads)],
        "reference": str(tmp_path),
        "min_length": 4,
        "name": "/not/there",
    }
    env = _contract(
        tmp_path,
        INPUTS_JSON=json.dumps(inputs),
        AWS_ENDPOINT_URL="http://general:9000",
        AWS_ENDPOINT_URL_S3="http://minio:9000",
        AWS_ACCESS_KEY_ID="id",
        AWS_SECRET_ACCESS_KEY="key",
        AWS_SESSION_TOKEN="token",
    )
    monkeypatch.chdir(tmp_path)
    document = tool_input(read_contract(env), env, {"kept": "kept.txt"})
    assert document["input"] == {"reads": [str(reads)], "reference": [str(tmp_path)]}
    assert document["parameters"] == {"min_length": 4, "name": "/not/there"}
    assert document["output"] == {"kept": str(tmp_path / "kept.txt")}
    assert document["minio"] == {
        "endpoint_url": "http://minio:9000",
        "id": "id",
        "key": "key",
        "skey": "token",
    }
    del env["AWS_ENDPOINT_URL_S3"]
    assert tool_input(read_contract(env), env, {})["minio"]["endpoint_url"] == "http://general:9000"


def test_upload_fills_in_ok_tool_id_and_run_id(tmp_path):
    """`python -m miniwdl_omnibio.runtime upload FILE`, for tools in any language: what the file
    does not say is filled in; what it says is kept."""
    (tmp_path / "r.json").write_text(json.dumps({"results": {"n": 1}}))
    upload = [sys.executable, "-m", "miniwdl_omnibio.runtime", "upload", "r.json"]
    done = _run(upload, _contract(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "results.json") as infile:
        stored = json.load(infile)
    assert (stored["ok"], stored["tool_id"], stored["run_id"]) == (True, "echo", "run.call-echo.1")
    (tmp_path / "r.json").write_text(json.dumps({"ok": False, "error": "no reference"}))
    assert _run(upload, _contract(tmp_path), cwd=tmp_path).returncode == 0
    with open(tmp_path / "out" / "results.json") as infile:
        assert json.load(infile)["ok"] is False
    nowhere = {k: v for k, v in _contract(tmp_path).items() if k != "RESULT_URI"}
    done = _run(upload, nowhere, cwd=tmp_path)
    assert done.returncode == 2 and "no RESULT_URI" in done.stderr
