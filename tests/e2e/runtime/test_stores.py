"""Both APIs (miniwdl_omnibio.runtime and upstream's omni_tool_runtime) against every store,
each a real server on 127.0.0.1 spoken to by its real SDK."""

import contextlib
import json
import os

import pytest
from omni_tool_runtime.upload_result import upload_result, upload_to_result_uri

from miniwdl_omnibio.results import verify_result
from miniwdl_omnibio.runtime import delete_result, download_result, write_result
from tests.e2e.runtime.conftest import BUCKET

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


def test_s3_through_aws_endpoint_url_s3_alone(moto, monkeypatch, tmp_path):
    """MinIO-style: the S3 endpoint in AWS_ENDPOINT_URL_S3, no AWS_ENDPOINT_URL at all."""
    env = moto.env()
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name, value in env.items():
        if name != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", env["AWS_ENDPOINT_URL"])
    uri = f"s3://{BUCKET}/endpoint-s3/run/call-a/results.json"
    contract = {"TOOL_ID": "a", "RUN_ID": "r.1", "INPUTS_JSON": "{}", "RESOURCES_JSON": "{}"}
    write_result({"n": 3}, env={**os.environ, **contract, "RESULT_URI": uri})
    stored = moto.client("s3").get_object(Bucket=BUCKET, Key="endpoint-s3/run/call-a/results.json")
    assert json.loads(stored["Body"].read())["results"] == {"n": 3}


def test_azure_blob_through_default_azure_credential(managed_identity_blob, monkeypatch):
    """No connection string: DefaultAzureCredential (here its managed identity) at
    AZURE_STORAGE_BLOB_ENDPOINT; the plugin reads back with the same chain."""
    env, asked = managed_identity_blob
    for name in [n for n in os.environ if n.startswith(("AZURE_", "MSI_", "IDENTITY_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(env["AZURE_STORAGE_BLOB_ENDPOINT"], DefaultAzureCredential())
    with contextlib.suppress(Exception):
        service.create_container("identity")
    uri = "azureblob://devstoreaccount1/identity/run/call-a/results.json"
    contract = {"TOOL_ID": "a", "RUN_ID": "r.1", "INPUTS_JSON": "{}", "RESOURCES_JSON": "{}"}
    write_result({"n": 4}, env={**os.environ, **contract, "RESULT_URI": uri})
    assert json.loads(download_result(uri))["results"] == {"n": 4}
    assert asked and asked[-1]["resource"].startswith("https://storage.azure.com")
    assert asked[-1]["header"] == "omnibio-test-header"
