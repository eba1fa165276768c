"""The plugin side of the contract, the config checks and the runtime{} parsers: pure functions."""

import json
import os
import re

import pytest
from WDL import Env, Type, Value
from WDL.runtime.config import Loader

from miniwdl_omnibio.attempt import Resources
from miniwdl_omnibio.config import ConfigError, OmnibioSettings, check_sections
from miniwdl_omnibio.contract import (
    call_path,
    contract_env,
    inputs_json,
    result_uri,
    run_id,
    spill_large_values,
    workflow_run_name,
)
from miniwdl_omnibio.engines.docker.settings import DockerSettings
from miniwdl_omnibio.runtime import parse_result_uri
from miniwdl_omnibio.task_values import parse_disks, parse_duration

RESOURCES = Resources(
    cpu=2,
    memory_reservation=1 << 30,
    memory_limit=0,
    gpu=0,
    disk=None,
    time_limit=None,
    max_interruptions=0,
)


def test_identity_of_a_call_in_a_subworkflow():
    stack = ("wf", "call-sub", "call-align-3")
    host_dir = "/runs/20261121_101500_wf/call-sub/call-align-3"
    assert re.fullmatch(r"20261121_101500_wf-[0-9a-f]{8}", workflow_run_name(host_dir, stack))
    assert call_path(stack) == "call-sub/call-align-3"
    assert (
        run_id("20261121_101500_wf", "call-sub/call-align-3", 2)
        == "20261121_101500_wf.call-sub.call-align-3.2"
    )
    prefix = parse_result_uri("s3://b/p", prefix=True)
    assert (
        str(result_uri(prefix, "20261121_101500_wf", "call-sub/call-align-3"))
        == "s3://b/p/20261121_101500_wf/call-sub/call-align-3/results.json"
    )


def test_identity_of_a_single_task_run():
    name = workflow_run_name("/runs/20261121_101500_hello", ("hello",))
    assert re.fullmatch(r"20261121_101500_hello-[0-9a-f]{8}", name)
    assert call_path(("hello",)) == "hello"


def test_runs_started_the_same_second_elsewhere_have_their_own_names():
    """Tags, RUN_ID and RESULT_URI carry the name: another directory's run must not share it,
    while every call of one run (a sub-workflow's too) does."""
    here = workflow_run_name("/a/20261121_101500_wf/call-x", ("wf", "call-x"))
    nested = workflow_run_name(
        "/a/20261121_101500_wf/call-sub/call-y", ("wf", "call-sub", "call-y")
    )
    elsewhere = workflow_run_name("/b/20261121_101500_wf/call-x", ("wf", "call-x"))
    assert here == nested != elsewhere
    assert here.startswith("20261121_101500_wf-") and elsewhere.startswith("20261121_101500_wf-")


def test_inputs_json_rewrites_only_files_and_directories():
    inputs = Env.Bindings()
    inputs = inputs.bind("reads", Value.File("/data/r1.fq"))
    inputs = inputs.bind("ref", Value.Directory("/data/ref"))
    inputs = inputs.bind("label", Value.String("/data/r1.fq"))
    inputs = inputs.bind(
        "pairs", Value.Array(Type.File(), [Value.File("/data/r1.fq"), Value.File("/elsewhere/x")])
    )
    mapping = {
        "/data/r1.fq": "/mnt/c/work/_miniwdl_inputs/0/r1.fq",
        "/data/ref/": "/mnt/c/work/_miniwdl_inputs/0/ref/",
    }
    doc = json.loads(inputs_json(inputs, mapping))
    assert doc == {
        "reads": "/mnt/c/work/_miniwdl_inputs/0/r1.fq",
        "ref": "/mnt/c/work/_miniwdl_inputs/0/ref",
        "label": "/data/r1.fq",
        "pairs": ["/mnt/c/work/_miniwdl_inputs/0/r1.fq", "/elsewhere/x"],
    }


def test_s3_result_uri_only_for_s3():
    s3 = contract_env(
        tool_id="t",
        run_id_value="r",
        inputs_json_value="{}",
        resources=RESOURCES,
        result=parse_result_uri("s3://b/k"),
    )
    assert s3["S3_RESULT_URI"] == s3["RESULT_URI"] == "s3://b/k"
    blob = contract_env(
        tool_id="t",
        run_id_value="r",
        inputs_json_value="{}",
        resources=RESOURCES,
        result=parse_result_uri("azureblob://a/c/k"),
    )
    assert "S3_RESULT_URI" not in blob
    none = contract_env(
        tool_id="t", run_id_value="r", inputs_json_value="{}", resources=RESOURCES, result=None
    )
    assert "RESULT_URI" not in none
    assert json.loads(none["RESOURCES_JSON"]) == {
        "cpu": 2,
        "memory": 1 << 30,
        "memory_reservation": 1 << 30,
        "gpu": 0,
        "disk": None,
        "time": None,
    }


def test_spill_large_values():
    env = {"TOOL_ID": "t", "INPUTS_JSON": "x" * 200_000}
    out, spilled = spill_large_values(env, 65536, "/mnt/c/omnibio")
    assert spilled == {"INPUTS_JSON": "x" * 200_000}
    assert out == {"TOOL_ID": "t", "INPUTS_JSON_FILE": "/mnt/c/omnibio/INPUTS_JSON"}


@pytest.mark.parametrize(
    "value,expected",
    [
        (10, 10 << 30),
        ("10 GiB", 10 << 30),
        ("/mnt/scratch 2 GiB", 2 << 30),
        ("local-disk 100 SSD", 100 << 30),
        (["1 GiB", "/x 1 GiB"], 2 << 30),
    ],
)
def test_parse_disks(value, expected):
    assert parse_disks(value) == expected


def test_parse_duration():
    assert parse_duration(90) == 90
    assert parse_duration("90m") == 5400
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400  # docs/runtime.md: seconds or 90m, 2h, 1d
    assert parse_duration("45s") == 45
    assert parse_duration(" 1.5h ") == 5400
    with pytest.raises(Exception, match="omnibio_time_limit"):
        parse_duration("soon")


def _cfg(monkeypatch, **env):
    for name in list(os.environ):
        if name.startswith("MINIWDL__"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import logging

    return Loader(logging.getLogger("test"), filenames=[])


def test_config_errors_name_the_key(monkeypatch):
    cfg = _cfg(monkeypatch, MINIWDL__OMNIBIO__RESULT_URI_PREFIX="ftp://bucket/x")
    with pytest.raises(ConfigError, match=r"\[omnibio\] result_uri_prefix .*unknown scheme 'ftp'"):
        OmnibioSettings.load(cfg)
    cfg = _cfg(monkeypatch, MINIWDL__OMNIBIO__RESULT_CHECK="maybe")
    with pytest.raises(ConfigError, match=r"\[omnibio\] result_check .*not one of fail, warn, off"):
        OmnibioSettings.load(cfg)
    cfg = _cfg(monkeypatch, MINIWDL__OMNIBIO_DOCKER__POLL_SECONDS="soon")
    with pytest.raises(ConfigError, match=r"MINIWDL__OMNIBIO_DOCKER__POLL_SECONDS"):
        DockerSettings.load(cfg)


def test_unknown_key_is_rejected(monkeypatch):
    cfg = _cfg(monkeypatch, MINIWDL__OMNIBIO_DOCKER__NETWRK="host")
    with pytest.raises(ConfigError, match=r"\[omnibio_docker\] netwrk"):
        check_sections(cfg, ["omnibio", "omnibio_docker"])
