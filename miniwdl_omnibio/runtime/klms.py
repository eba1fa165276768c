"""KLMS-style tools: ``main.py input.json output.json``, adapted to the contract.

The input JSON is built from the contract (files under ``input``, everything else under
``parameters``, S3/MinIO access under ``minio``, the launcher's named secrets under ``secrets``);
the tool's output JSON (``message``, ``output``, ``metrics``, ``status``) becomes results.json.
"""

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .contract import Contract, read_contract
from .result import complete, publish


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("/") and os.path.exists(value)


def split_inputs(inputs: Mapping[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """File and Directory inputs (paths present in the container, alone or in a list) apart
    from the other inputs. INPUTS_JSON carries no WDL types: a String naming an existing
    absolute path counts as a file."""
    files: dict[str, list[str]] = {}
    parameters: dict[str, Any] = {}
    for name, value in inputs.items():
        if _is_path(value):
            files[name] = [value]
        elif isinstance(value, list) and value and all(_is_path(v) for v in value):
            files[name] = list(value)
        else:
            parameters[name] = value
    return files, parameters


def minio(env: Mapping[str, str]) -> dict[str, str | None]:
    """The S3 endpoint and credentials of the task's environment, in KLMS's field names."""
    return {
        "endpoint_url": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        "id": env.get("AWS_ACCESS_KEY_ID"),
        "key": env.get("AWS_SECRET_ACCESS_KEY"),
        "skey": env.get("AWS_SESSION_TOKEN"),
    }


def tool_input(
    contract: Contract, env: Mapping[str, str], outputs: Mapping[str, str]
) -> dict[str, Any]:
    files, parameters = split_inputs(contract.inputs if isinstance(contract.inputs, dict) else {})
    return {
        "input": files,
        "output": {name: os.path.abspath(path) for name, path in outputs.items()},
        "parameters": parameters,
        "secrets": {name: env[name] for name in contract.secret_names if name in env},
        "minio": minio(env),
    }


def succeeded(status: Any) -> bool:
    """KLMS status: "success", or an HTTP-like code 200-299."""
    if isinstance(status, str) and status.strip().lower() == "success":
        return True
    try:
        return 200 <= int(status) < 300
    except (TypeError, ValueError):
        return False


def result_document(output_path: str, exit_code: int) -> dict[str, Any]:
    """results.json from the tool's output JSON; ok only when its status says so."""
    try:
        with open(output_path, encoding="utf-8") as infile:
            output = json.load(infile)
    except FileNotFoundError:
        return {"ok": False, "error": f"the tool wrote no {output_path} (exit {exit_code})"}
    except ValueError as exn:
        return {"ok": False, "error": f"{output_path} is not JSON: {exn}"}
    if not isinstance(output, dict):
        return {"ok": False, "error": f"{output_path} is not a JSON object"}
    document: dict[str, Any] = {
        "ok": succeeded(output.get("status")) and exit_code == 0,
        "results": output.get("output", {}),
        "metrics": output.get("metrics", {}),
        "status": output.get("status"),
    }
    if output.get("message"):
        document["message"] = output["message"]
    if not document["ok"]:
        document["error"] = str(output.get("message") or output.get("error") or "tool failed")
        if exit_code:
            document["error"] += f" (exit {exit_code})"
    return document


def run_klms(
    command: Sequence[str],
    outputs: Mapping[str, str],
    input_path: str = "input.json",
    output_path: str = "output.json",
) -> int:
    """Write the input JSON, run ``COMMAND input.json output.json``, upload results.json.

    With a result URI the exit status is 0 and the plugin's verification fails a task whose
    results.json says ok=false, with the tool's message; without one, a failure exits 1.
    """
    if not command:
        print("klms: no tool command given (klms -- python3 main.py)", file=sys.stderr)
        return 2
    env = os.environ
    contract = read_contract(env)
    document = tool_input(contract, env, outputs)
    fd = os.open(input_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold secrets
    with os.fdopen(fd, "w", encoding="utf-8") as outfile:
        json.dump(document, outfile, indent=2)
    try:
        exit_code = subprocess.run([*command, input_path, output_path]).returncode
    finally:
        if document["secrets"]:
            os.unlink(input_path)
    result = complete(result_document(output_path, exit_code), contract, env)
    publish(json.dumps(result, indent=2).encode("utf-8"), contract)
    if not result["ok"]:
        print(f"klms: {result['error']}", file=sys.stderr)
    return 0 if result["ok"] or contract.result_uri else 1
