"""omni_tool_runtime: upstream's API served by miniwdl_omnibio.runtime (upstream's own test files
were also run against it; see docs/runtime.md)."""

import json
import os
import subprocess
import sys

import pytest
from omni_tool_runtime.contract import read_contract_from_env
from omni_tool_runtime.result_uri import ParsedResultURI, parse_result_uri


@pytest.mark.parametrize(
    "uri,parsed",
    [
        ("s3://b/k/results.json", ParsedResultURI("s3", "b", None, "k/results.json")),
        ("gs://b/k/results.json", ParsedResultURI("gs", "b", None, "k/results.json")),
        (
            "azureblob://a/c/p/results.json",
            ParsedResultURI("azureblob", "a", "c", "p/results.json"),
        ),
        ("file:///r/results.json", ParsedResultURI("file", "", None, "/r/results.json")),
    ],
)
def test_parse_result_uri(uri, parsed):
    assert parse_result_uri(uri) == parsed


@pytest.mark.parametrize(
    "uri,message",
    [
        ("bucket/key", "missing scheme"),
        ("ftp://b/k", "Unsupported"),
        ("s3://bucket-only", "needs a key"),
        ("azureblob://acct/container", "needs a blob path"),
    ],
)
def test_parse_result_uri_errors(uri, message):
    with pytest.raises(ValueError, match=message):
        parse_result_uri(uri)


def test_contract_is_lenient_like_upstream_but_reads_spilled_values(monkeypatch, tmp_path):
    for name in ("TOOL_ID", "RUN_ID", "INPUTS_JSON", "RESOURCES_JSON", "RESULT_URI"):
        monkeypatch.delenv(name, raising=False)
    assert read_contract_from_env().inputs == {}
    (tmp_path / "inputs.json").write_text('{"x": 1}')
    monkeypatch.setenv("INPUTS_JSON_FILE", str(tmp_path / "inputs.json"))
    monkeypatch.setenv("S3_RESULT_URI", "s3://b/k/results.json")
    contract = read_contract_from_env()
    assert contract.inputs == {"x": 1} and contract.result_uri == "s3://b/k/results.json"
    monkeypatch.setenv("RESOURCES_JSON", "{bad")
    with pytest.raises(RuntimeError, match="RESOURCES_JSON"):
        read_contract_from_env()


def _run(cwd, tool_id):
    env = {k: v for k, v in os.environ.items() if k != "TOOL_ID"}
    if tool_id is not None:
        env["TOOL_ID"] = tool_id
    return subprocess.run(
        [sys.executable, "-m", "omni_tool_runtime.run"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def test_run_dispatches_from_the_working_directory(tmp_path):
    tool = tmp_path / "tools" / "hello"
    tool.mkdir(parents=True)
    (tmp_path / "tools" / "__init__.py").write_text("")
    (tool / "__init__.py").write_text("")
    (tool / "run.py").write_text(
        "import json, os\ndef main():\n    print(json.dumps({'tool': os.environ['TOOL_ID']}))\n"
        "    return 3\n"
    )
    done = _run(tmp_path, "hello")
    assert done.returncode == 3 and json.loads(done.stdout) == {"tool": "hello"}
    for tool_id, message in [
        (None, "TOOL_ID not set"),
        ("absent", "cannot import tools.absent.run"),
    ]:
        done = _run(tmp_path, tool_id)
        assert done.returncode == 2
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    (tool / "run.py").write_text("x = 1\n")
    done = _run(tmp_path, "hello")
    assert done.returncode == 2 and "tools.hello.run has no main()" in done.stderr


def test_missing_sdk_names_the_package(monkeypatch):
    from omni_tool_runtime.upload_result import upload_to_result_uri

    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(RuntimeError, match=r"google-cloud-storage not installed.*\[gcs\]"):
        upload_to_result_uri(result_uri="gs://b/k", content=b"{}")


def test_upstream_upload_refuses_above_the_limit(monkeypatch, tmp_path):
    from omni_tool_runtime.upload_result import upload_to_result_uri

    from miniwdl_omnibio.runtime import ResultTooLarge

    monkeypatch.setenv("RESULT_MAX_BYTES", "10")
    with pytest.raises(ResultTooLarge, match="11 bytes, above the limit of 10"):
        upload_to_result_uri(result_uri=f"file://{tmp_path}", content=b"x" * 11)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("profile", [None, "lab"])
def test_each_boto3_stand_in_gets_its_own_session(monkeypatch, profile):
    """Upstream's uploader tests put a stand-in boto3 in sys.modules, one per test: the launcher's
    client cache must not hand a later stand-in the client an earlier one made."""
    from unittest.mock import MagicMock

    from omni_tool_runtime.uploaders.s3_uploader import S3Uploader

    for _ in range(2):
        boto3 = MagicMock()
        monkeypatch.setitem(sys.modules, "boto3", boto3)
        S3Uploader(aws_profile=profile).upload_bytes(
            bucket="b", key="k/results.json", data=b"{}", content_type="application/json"
        )
        boto3.Session.assert_called_once_with(**({"profile_name": profile} if profile else {}))
        boto3.Session.return_value.client.return_value.put_object.assert_called_once_with(
            Bucket="b", Key="k/results.json", Body=b"{}", ContentType="application/json"
        )
