"""The tool runtime: URI validation, contract reading, uploads to file:// (s3/azure: e2e)."""

import json

import pytest

from miniwdl_omnibio.runtime import (
    download_result,
    parse_result_uri,
    read_contract,
    upload_result,
    write_result,
)


@pytest.mark.parametrize(
    "uri,parts",
    [
        ("s3://bucket/a/b/results.json", ("s3", "", "bucket", "a/b/results.json")),
        ("azureblob://acct/cont/x/results.json", ("azureblob", "acct", "cont", "x/results.json")),
        ("gs://bucket/a/results.json", ("gs", "", "bucket", "a/results.json")),
        ("file:///tmp/r/results.json", ("file", "", "", "/tmp/r/results.json")),
    ],
)
def test_parse_valid(uri, parts):
    parsed = parse_result_uri(uri)
    assert (parsed.scheme, parsed.account, parsed.bucket, parsed.key) == parts
    assert str(parsed) == uri


@pytest.mark.parametrize(
    "uri,message",
    [
        ("", "missing"),
        ("bucket/key", "no scheme"),
        ("ftp://bucket/key", "unknown scheme 'ftp'"),
        ("gs://bucket", "needs a key"),
        ("gs://bucket/", "needs a key"),
        ("s3://", "needs a bucket"),
        ("s3://bucket", "needs a key"),
        ("azureblob://", "needs a storage account"),
        ("azureblob://acct", "needs a container"),
        ("azureblob://acct/cont", "needs a blob path"),
        ("file://host/x", "no host"),
        ("s3://b/k?x=1", "query"),
    ],
)
def test_parse_invalid_names_the_problem(uri, message):
    with pytest.raises(ValueError, match=message):
        parse_result_uri(uri)


def test_prefix_allows_empty_key_and_lays_out_children():
    prefix = parse_result_uri("s3://bucket", prefix=True)
    assert (
        str(prefix.child("run", "call-x", "results.json")) == "s3://bucket/run/call-x/results.json"
    )
    assert str(parse_result_uri("file:///r/", prefix=True).child("a", "b")) == "file:///r/a/b"


def _env(tmp_path, **extra):
    env = {
        "TOOL_ID": "align",
        "RUN_ID": "run.call-align.1",
        "INPUTS_JSON": json.dumps({"reads": "/in/r.fq"}),
        "RESOURCES_JSON": json.dumps({"cpu": 2}),
        "RESULT_URI": f"file://{tmp_path}/out/results.json",
    }
    env.update(extra)
    return env


def test_contract_reads_spilled_values(tmp_path):
    spilled = tmp_path / "INPUTS_JSON"
    spilled.write_text(json.dumps({"many": list(range(3))}))
    env = _env(tmp_path)
    del env["INPUTS_JSON"]
    env["INPUTS_JSON_FILE"] = str(spilled)
    assert read_contract(env).inputs == {"many": [0, 1, 2]}


def test_contract_missing_variable_is_named(tmp_path):
    env = _env(tmp_path)
    del env["RUN_ID"]
    with pytest.raises(KeyError, match="RUN_ID"):
        read_contract(env)


def test_write_result_round_trip(tmp_path):
    env = _env(tmp_path)
    document = write_result({"n": 1}, env=env)
    stored = json.loads(download_result(env["RESULT_URI"]))
    assert (
        stored
        == document
        == {"ok": True, "tool_id": "align", "run_id": "run.call-align.1", "results": {"n": 1}}
    )


def test_missing_result_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        download_result(f"file://{tmp_path}/nothing.json")
    upload_result(f"file://{tmp_path}/deep/er/x.json", b"{}")
    assert download_result(f"file://{tmp_path}/deep/er/x.json") == b"{}"
