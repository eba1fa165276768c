"""Both APIs (miniwdl_omnibio.runtime and upstream's omni_tool_runtime) against every store,
each a real server on 127.0.0.1 spoken to by its real SDK."""

import json

import pytest

from miniwdl_omnibio.results import verify_result
from miniwdl_omnibio.runtime import delete_result, download_result, write_result
from omni_tool_runtime.upload_result import upload_result, upload_to_result_uri

SCHEMES = ["file", "s3", "azureblob", "gs"]


@pytest.mark.parametrize("store_env", SCHEMES, indirect=True)
def test_upstream_upload_to_a_prefix(store_env):
    prefix, _env = store_env
    upload_to_result_uri(result_uri=f"{prefix}/upstream", content=b'{"ok": true}')
    assert download_result(f"{prefix}/upstream/results.json") == b'{"ok": true}'
    delete_result(f"{prefix}/upstream/results.json")
    with pytest.raises(FileNotFoundError):
        download_result(f"{prefix}/upstream/results.json")
    delete_result(f"{prefix}/upstream/results.json")  # absent is fine


@pytest.mark.parametrize("store_env", SCHEMES, indirect=True)
def test_both_apis_write_what_the_plugin_verifies(store_env, monkeypatch, tmp_path):
    prefix, env = store_env
    uri = f"{prefix}/run/call-a/results.json"
    contract = {
        "TOOL_ID": "a",
        "RUN_ID": "run.call-a.1",
        "INPUTS_JSON": "{}",
        "RESOURCES_JSON": "{}",
        "RESULT_URI": uri,
    }
    write_result({"n": 1}, env={**env, **contract})
    from miniwdl_omnibio.runtime import parse_result_uri

    assert verify_result(parse_result_uri(uri), "run.call-a.1", str(tmp_path))["results"] == {
        "n": 1
    }
    for name, value in contract.items():
        monkeypatch.setenv(name, value)
    upload_result({"results": {"n": 2}})  # upstream README's tool example
    stored = json.loads(download_result(uri))
    assert stored["ok"] is True and stored["run_id"] == "run.call-a.1"
    assert stored["results"] == {"n": 2}
