"""The environment contract, checked from inside a task: one scenario for every backend.

``check_contract(backend, env, run_root)`` runs one workflow with ``tests.helpers.run_miniwdl``
and asserts what the README ("The environment contract") and docs/runtime.md ("The contract a
task receives") promise, as a task sees it: every variable and its value, RESOURCES_JSON, the
``omnibio_tool_id`` override, PATH_MAPPING_RULES mapping each input's launcher path to the path
the task got, secrets passed by name and shown in no log, ``[task_runtime] env`` and WDL 1.2
``env`` inputs losing to the contract on a name clash, and a value longer than ``[omnibio]
env_value_max_bytes`` arriving as ``NAME_FILE``. ``check_contract_form_clash`` does the same
run with ``[task_runtime] env`` naming the other form (NAME vs NAME_FILE) of contract variables.
Expected values come from those documents, not from the plugin's code.
"""

import json
import os
import uuid
from typing import Any

from tests.helpers import Run, run_miniwdl, workflow_run_of

IMAGE = "omnibio/runtime:latest"  # python3 and the tool runtime (for the result upload)
# docs/runtime.md, "The contract a task receives" (deliberately not imported from the plugin)
CONTRACT = (
    "TOOL_ID",
    "RUN_ID",
    "INPUTS_JSON",
    "RESOURCES_JSON",
    "RESULT_URI",
    "S3_RESULT_URI",
    "RESULT_MAX_BYTES",
    "PATH_MAPPING_RULES",
    "OMNIBIO_SECRETS",
)
SECRET = "OMNIBIO_CONTRACT_SECRET"  # a launcher variable the "inspect" task asks for by name
MiB = 1024 * 1024
SPILL_LIMIT = 1024  # [omnibio] env_value_max_bytes for the run: the smallest allowed
PADDING = "p" * 2 * SPILL_LIMIT  # makes INPUTS_JSON of the "spilled" call too long to pass inline
RESULT_MAX_BYTES = 262144  # [omnibio] result_max_bytes for the run (not the default)
# [task_runtime] env: a clash with the contract (the contract must win) and one plain variable
CONFIG_ENV = {"TOOL_ID": "from-config", "FROM_CONFIG": "config-value"}
# ... and clashes with the other form of a variable: the contract passes INPUTS_JSON as a file in
# the "spilled" call, and RESOURCES_JSON inline in every call
FORM_CLASHES = {"INPUTS_JSON": "from-config", "RESOURCES_JSON_FILE": "/from-config"}

WDL = """
version 1.2

workflow contract {
  input {
    File probe
    File text
    Directory folder
  }
  call inspect as spilled { input: probe, text, folder, padding = "%(padding)s" }
  call inspect as inline { input: probe, text, folder, padding = "" }
  call renamed { input: probe }
}

task inspect {
  input {
    File probe
    File text
    Directory folder
    String padding
    Int unset = 7
    env String greeting = "hi"
    env String RUN_ID = "from-wdl-env"
  }
  command <<< python3 '~{probe}' >>>
  output { File seen = "seen.json" }
  requirements {
    container: "%(image)s"
    cpu: 2
    memory: "300 MiB"
    omnibio_time_limit: "1h"
    omnibio_secrets: ["%(secret)s"]
  }
}

task renamed {
  input { File probe }
  command <<< python3 '~{probe}' >>>
  output { File seen = "seen.json" }
  requirements { container: "%(image)s" omnibio_tool_id: "aligner-v2" }
}
"""

# Runs inside the task: reports the environment, reads each input back, uploads a result.
PROBE = r"""
import json, os
from miniwdl_omnibio.runtime import write_result

names = %(names)r
env = {k: v for k, v in os.environ.items() if k in names or k.endswith("_FILE")}
env.update({k: os.environ.get(k) for k in ("greeting", "FROM_CONFIG")})
files = {k: open(v).read() for k, v in env.items() if k.endswith("_FILE") and os.path.isfile(v)}
raw = os.environ.get("INPUTS_JSON") or files.get("INPUTS_JSON_FILE") or "{}"
try:
    inputs = json.loads(raw)
except ValueError:
    inputs = {}
contents = {}
for name, path in inputs.items():
    if isinstance(path, str) and os.path.isfile(path):
        contents[name] = open(path).read()
    elif isinstance(path, str) and os.path.isdir(path):
        contents[name] = sorted(os.listdir(path))
seen = {"env": env, "files": files, "contents": contents, "upload_error": None}
try:
    write_result({"probe": "ok"})
except Exception as exn:  # reported by the checker, which says what the task saw
    seen["upload_error"] = repr(exn)
json.dump(seen, open("seen.json", "w"))
"""


def check_contract(backend: str, env: dict[str, str], run_root: str) -> dict[str, dict[str, Any]]:
    """Run the contract workflow on ``backend`` under ``run_root`` (on the shared filesystem for
    the cloud backends) and assert the contract; ``env`` is passed to miniwdl (endpoints, config;
    it must leave ``[task_runtime] env``, ``[omnibio] env_value_max_bytes`` and
    ``result_max_bytes`` to this check). Returns what each call saw, by call name."""
    run, seen, secret, files = _run(backend, env, run_root, CONFIG_ENV)
    _check_inputs(seen, files)
    _check_resources(seen)
    _check_secret(seen, run, secret)
    inline, spilled = seen["inline"], seen["spilled"]
    assert inline["env"]["greeting"] == "hi", inline["env"]  # a WDL 1.2 env input
    assert inline["env"]["FROM_CONFIG"] == "config-value", inline["env"]  # [task_runtime] env
    # the spilled value is the one INPUTS_JSON would have carried, in the file NAME_FILE names
    assert "INPUTS_JSON" in inline["env"] and "INPUTS_JSON_FILE" not in inline["env"]
    assert "INPUTS_JSON_FILE" in spilled["env"], spilled["env"]
    assert json.loads(spilled["files"]["INPUTS_JSON_FILE"])["padding"] == PADDING
    assert "RESOURCES_JSON" in spilled["env"]  # short values stay inline
    return seen


def check_contract_form_clash(backend: str, env: dict[str, str], run_root: str) -> None:
    """``[task_runtime] env`` naming the other form of a contract variable (INPUTS_JSON where the
    contract passes INPUTS_JSON_FILE, RESOURCES_JSON_FILE beside an inline RESOURCES_JSON): the
    contract still wins, so each task sees one form, and reads its contract."""
    _run(backend, env, run_root, {**CONFIG_ENV, **FORM_CLASHES})


def _run(
    backend: str, env: dict[str, str], run_root: str, config_env: dict[str, str]
) -> tuple[Run, dict[str, dict[str, Any]], str, dict[str, str]]:
    """Run the workflow; check what every contract has (identity, one form per variable, a
    result uploaded). Returns the run, what each call saw, the secret passed, the inputs."""
    files = _write_inputs(run_root)
    prefix = env.get("MINIWDL__OMNIBIO__RESULT_URI_PREFIX") or f"file://{run_root}/results"
    secret = uuid.uuid4().hex
    # the backend's own [task_runtime] env (e.g. the store credentials its tasks need) stays
    task_env = {**json.loads(env.get("MINIWDL__TASK_RUNTIME__ENV") or "{}"), **config_env}
    env = {k: v for k, v in env.items() if k != "MINIWDL__TASK_RUNTIME__ENV"}
    run = run_miniwdl(
        files["wdl"],
        [f"probe={files['probe']}", f"text={files['text']}", f"folder={files['folder']}"],
        run_root,
        backend=backend,
        config={
            "omnibio": {
                "result_uri_prefix": prefix,
                "env_value_max_bytes": str(SPILL_LIMIT),
                "result_max_bytes": str(RESULT_MAX_BYTES),
            },
            "task_runtime": {"env": json.dumps(task_env)},
        },
        env={**env, SECRET: secret},
    )
    seen = _seen(run)
    workflow_run = workflow_run_of(run.dir or "")
    for call, data in seen.items():  # what the tasks saw first: it says more than a failed run
        _check_exclusive(call, data)
        _check_identity(call, data, workflow_run, prefix)
        assert data["upload_error"] is None, (call, data["upload_error"])
    assert run.returncode == 0 and len(seen) == 3, run.stderr[-3000:]
    return run, seen, secret, files


def _write_inputs(run_root: str) -> dict[str, str]:
    def write(name: str, text: str) -> str:
        path = os.path.join(run_root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as outfile:
            outfile.write(text)
        return path

    folder = os.path.join(run_root, "folder")
    write("folder/a.txt", "a\n")
    write("folder/b.txt", "b\n")
    wdl = WDL % {"padding": PADDING, "image": IMAGE, "secret": SECRET}
    return {
        "wdl": write("contract.wdl", wdl),
        "probe": write("probe.py", PROBE % {"names": (*CONTRACT, SECRET)}),
        "text": write("text.txt", "hello contract\n"),
        "folder": folder,
    }


def _seen(run: Run) -> dict[str, dict[str, Any]]:
    """What each call's task wrote, read from its work directory (there even if the run failed)."""
    seen = {}
    for call in ("spilled", "inline", "renamed"):
        path = os.path.join(run.dir or "", f"call-{call}", "work", "seen.json")
        if os.path.exists(path):
            with open(path) as infile:
                seen[call] = json.load(infile)
    return seen


def _value(data: dict[str, Any], name: str) -> str | None:
    """A contract variable as a task reads it: NAME, else the file NAME_FILE names."""
    return data["env"].get(name) or data["files"].get(f"{name}_FILE")


def _check_identity(call: str, data: dict[str, Any], workflow_run: str, prefix: str) -> None:
    """TOOL_ID, RUN_ID, RESULT_URI, S3_RESULT_URI and RESULT_MAX_BYTES as documented."""
    env = data["env"]
    assert env["TOOL_ID"] == ("aligner-v2" if call == "renamed" else "inspect"), env
    assert env["RUN_ID"] == f"{workflow_run}.call-{call}.1", env
    tail = f"/{workflow_run}/call-{call}/results.json"
    if prefix.startswith("file://"):  # a shared filesystem may mount it elsewhere in the task
        assert env["RESULT_URI"].startswith("file:///") and env["RESULT_URI"].endswith(tail), env
    else:
        assert env["RESULT_URI"] == prefix.rstrip("/") + tail, env
    if prefix.startswith("s3://"):
        assert env["S3_RESULT_URI"] == env["RESULT_URI"], env
    else:
        assert "S3_RESULT_URI" not in env, env
    assert env["RESULT_MAX_BYTES"] == str(RESULT_MAX_BYTES), env


def _check_exclusive(call: str, data: dict[str, Any]) -> None:
    """Each contract variable arrives one way: NAME or NAME_FILE, never both (a clash with
    [task_runtime] env must not leave a second, different value beside the contract's)."""
    env = data["env"]
    for name in CONTRACT:
        assert not (name in env and f"{name}_FILE" in env), (call, name, env)


def _mapped(path: str, rules: list[dict[str, str]]) -> str:
    """Open Job Description pathmapping-1.0, as docs/runtime.md states it: the longest matching
    source path first; the first match wins."""
    for rule in sorted(rules, key=lambda r: len(r["source_path"]), reverse=True):
        source = rule["source_path"].rstrip("/")
        if path == source or path.startswith(source + "/"):
            return rule["destination_path"].rstrip("/") + path[len(source) :]
    return path


def _check_inputs(seen: dict[str, dict[str, Any]], files: dict[str, str]) -> None:
    """INPUTS_JSON: the supplied inputs only, each File/Directory readable where it says, and
    PATH_MAPPING_RULES taking each launcher path to that same place."""
    for call in ("spilled", "inline"):
        inputs = json.loads(_value(seen[call], "INPUTS_JSON") or "{}")
        assert set(inputs) == {"probe", "text", "folder", "padding"}, inputs  # no defaults
        assert inputs["padding"] == (PADDING if call == "spilled" else "")
        contents = seen[call]["contents"]
        assert contents["text"] == "hello contract\n", contents
        assert contents["folder"] == ["a.txt", "b.txt"], contents
        mapping = json.loads(_value(seen[call], "PATH_MAPPING_RULES") or "{}")
        assert mapping.get("version") == "pathmapping-1.0", mapping
        rules = mapping["path_mapping_rules"]
        for name in ("probe", "text", "folder"):
            assert _mapped(files[name], rules) == inputs[name], (name, inputs[name], rules)
    renamed = json.loads(seen["renamed"]["env"]["INPUTS_JSON"])
    assert set(renamed) == {"probe"}, renamed


def _check_resources(seen: dict[str, dict[str, Any]]) -> None:
    """RESOURCES_JSON: what was granted (runtime cpu 2, memory 300 MiB, time limit 1 h)."""
    for call in ("spilled", "inline"):
        resources = json.loads(seen[call]["env"]["RESOURCES_JSON"])
        assert resources == {
            "cpu": 2,
            "memory": 300 * MiB,
            "memory_reservation": 300 * MiB,
            "gpu": 0,
            "disk": None,
            "time": 3600,
        }, resources


def _check_secret(seen: dict[str, dict[str, Any]], run: Run, secret: str) -> None:
    """runtime.omnibio_secrets: the named launcher variable reaches the task that asks, listed in
    OMNIBIO_SECRETS; a task that does not ask gets neither; no log line shows the value."""
    for call in ("spilled", "inline"):
        assert seen[call]["env"].get(SECRET) == secret, call
        assert json.loads(seen[call]["env"]["OMNIBIO_SECRETS"]) == [SECRET]
    assert SECRET not in seen["renamed"]["env"] and "OMNIBIO_SECRETS" not in seen["renamed"]["env"]
    logs = [run.stderr]
    for current, _dirs, names in os.walk(run.dir or ""):
        for name in names:
            if name.endswith((".log", ".txt", ".json")) and name != "seen.json":
                with open(os.path.join(current, name), errors="replace") as infile:
                    logs.append(infile.read())
    assert not any(secret in text for text in logs), "a log shows the secret's value"
