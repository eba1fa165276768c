"""Host-side result verification (results.py) against what the runtime writes (file:// store)."""

import json
import os
from pathlib import Path

import pytest

from miniwdl_omnibio.attempt import Mount
from miniwdl_omnibio.results import (
    RESULT_FILE,
    ResultProblem,
    clear_stale,
    container_to_host,
    verify_result,
)
from miniwdl_omnibio.runtime import ResultTooLarge, parse_result_uri, write_result
from miniwdl_omnibio.runtime.provenance import SIGNING_KEY_VARIABLE

RUN = "20261122_000000_wf.call-a.1"


@pytest.fixture
def result(tmp_path):
    return parse_result_uri(f"file://{tmp_path}/results/results.json")


def _put(result, document) -> None:
    path = result.key
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as outfile:
        outfile.write(document if isinstance(document, str) else json.dumps(document))


def _env(result, **extra):
    env = {
        "TOOL_ID": "a",
        "RUN_ID": RUN,
        "INPUTS_JSON": "{}",
        "RESOURCES_JSON": "{}",
        "RESULT_URI": str(result),
    }
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def no_launcher_key(monkeypatch):
    monkeypatch.delenv(SIGNING_KEY_VARIABLE, raising=False)


def test_written_result_verifies_and_is_copied(result, tmp_path):
    write_result({"n": 1}, env=_env(result))
    document = verify_result(result, RUN, str(tmp_path))
    assert document["results"] == {"n": 1}
    assert json.loads((tmp_path / RESULT_FILE).read_text()) == document


def test_stale_result_is_removed(result, tmp_path):
    _put(result, {"ok": True, "run_id": RUN})
    clear_stale(result)
    with pytest.raises(ResultProblem, match="results.json missing"):
        verify_result(result, RUN, str(tmp_path))
    clear_stale(result)  # absent is fine


@pytest.mark.parametrize(
    "document,message",
    [
        ({}, "has no ok and no run_id"),
        ({"run_id": RUN}, "has no ok$"),
        ({"ok": True}, "has no run_id$"),
        ({"ok": "yes", "run_id": RUN}, "ok must be true or false, not 'yes'"),
        ({"ok": True, "run_id": "other.call-a.1"}, f"is from run other.call-a.1, not {RUN}"),
        ({"ok": False, "run_id": RUN, "error": "index corrupt"}, "says ok=false: index corrupt"),
        ([1, 2], "not a JSON object"),
        ("{not json", "unreadable"),
    ],
)
def test_bad_documents_fail_with_one_line(result, tmp_path, document, message):
    _put(result, document)
    with pytest.raises(ResultProblem, match=message) as problem:
        verify_result(result, RUN, str(tmp_path))
    assert "\n" not in str(problem.value)
    assert not (tmp_path / RESULT_FILE).exists()


def test_size_limit_on_both_sides(result, tmp_path):
    _put(result, {"ok": True, "run_id": RUN, "results": {"x": "y" * 200}})
    with pytest.raises(
        ResultProblem, match=r"is \d+ bytes, above \[omnibio\] result_max_bytes = 100"
    ):
        verify_result(result, RUN, str(tmp_path), max_bytes=100)
    clear_stale(result)
    with pytest.raises(
        ResultTooLarge, match=r"above the limit of 100 \(\[omnibio\] result_max_bytes\)"
    ):
        write_result({"x": "y" * 200}, env=_env(result, RESULT_MAX_BYTES="100"))
    assert not os.path.exists(result.key)


def _tool_output(tmp_path, content=b"ACGT\n"):
    """A file the tool names, at its in-container path /work/out.txt (host: tmp_path/work)."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "out.txt").write_bytes(content)
    return work


def test_manifest_rehashed_on_the_host(result, tmp_path, monkeypatch):
    work = _tool_output(tmp_path)
    # the tool runs "in the container": /work is its view of tmp_path/work
    document = write_result({"out": str(work / "out.txt")}, env=_env(result))
    (entry,) = document["manifest"]
    assert entry["path"] == str(work / "out.txt") and entry["size"] == 5
    identity = container_to_host([(str(work), str(work), False)])
    assert verify_result(result, RUN, str(tmp_path), to_host=identity)["ok"] is True
    (work / "out.txt").write_bytes(b"ACGA\n")
    with pytest.raises(ResultProblem, match=r"out.txt does not match its sha256"):
        verify_result(result, RUN, str(tmp_path), to_host=identity)
    (work / "out.txt").write_bytes(b"AC\n")
    with pytest.raises(ResultProblem, match=r"out.txt is 3 bytes, the manifest says 5"):
        verify_result(result, RUN, str(tmp_path), to_host=identity)
    (work / "out.txt").unlink()
    with pytest.raises(ResultProblem, match=r"names .*out.txt, which does not exist"):
        verify_result(result, RUN, str(tmp_path), to_host=identity)
    # a file on no shared mount is not re-hashed
    assert verify_result(result, RUN, str(tmp_path), to_host=lambda path: None)["ok"] is True


def test_signature(result, tmp_path):
    work = _tool_output(tmp_path)
    write_result({"out": str(work / "out.txt")}, env=_env(result, **{SIGNING_KEY_VARIABLE: "k1"}))
    text = Path(result.key).read_text()
    stored = json.loads(text)
    assert stored["signature"].startswith("hmac-sha256:") and "k1" not in text
    assert verify_result(result, RUN, str(tmp_path), signing_key="k1")["ok"] is True
    with pytest.raises(ResultProblem, match="signature does not match"):
        verify_result(result, RUN, str(tmp_path), signing_key="k2")
    stored["results"]["out"] = "/elsewhere"
    _put(result, stored)
    with pytest.raises(ResultProblem, match="signature does not match"):
        verify_result(result, RUN, str(tmp_path), signing_key="k1")
    del stored["signature"]
    _put(result, stored)
    with pytest.raises(ResultProblem, match=f"is not signed, but {SIGNING_KEY_VARIABLE} is set"):
        verify_result(result, RUN, str(tmp_path), signing_key="k1")


def test_launcher_key_from_environment(result, tmp_path, monkeypatch):
    write_result({}, env=_env(result))
    monkeypatch.setenv(SIGNING_KEY_VARIABLE, "k1")
    with pytest.raises(ResultProblem, match="is not signed"):
        verify_result(result, RUN, str(tmp_path))


def test_container_to_host_takes_the_longest_mount():
    to_host = container_to_host(
        [
            Mount("/host/run/work", "/mnt/work", False),
            ("/host/inputs/r.fq", "/mnt/work/_inputs/r.fq", True),
        ]
    )
    assert to_host("/mnt/work/out/x") == "/host/run/work/out/x"
    assert to_host("/mnt/work/_inputs/r.fq") == "/host/inputs/r.fq"
    assert to_host("/mnt/work") == "/host/run/work"
    assert to_host("/mnt/workspace/x") is None
    assert to_host("/tmp/x") is None
