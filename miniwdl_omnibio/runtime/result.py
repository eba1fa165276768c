"""Writing a tool's results.json: the document, its provenance, the size limit, the upload."""

import json
import os
from collections.abc import Mapping
from typing import Any

from .contract import Contract, read_contract
from .provenance import seal
from .store import upload_result


class ResultTooLarge(ValueError):
    """results.json is above [omnibio] result_max_bytes; it was not uploaded."""


def publish(data: bytes, contract: Contract) -> None:
    """Upload results.json to the contract's result URI, refusing one above the size limit."""
    if len(data) > contract.result_max_bytes:
        raise ResultTooLarge(
            f"results.json is {len(data)} bytes, above the limit of {contract.result_max_bytes}"
            " ([omnibio] result_max_bytes); not uploaded"
        )
    if contract.result_uri:
        upload_result(contract.result_uri, data)


def complete(
    document: dict[str, Any], contract: Contract, env: Mapping[str, str]
) -> dict[str, Any]:
    """Fill in ok, tool_id and run_id where the document does not say, then seal it."""
    document.setdefault("ok", True)
    document.setdefault("tool_id", contract.tool_id)
    document.setdefault("run_id", contract.run_id)
    return seal(document, env)


def write_result(
    results: dict[str, Any],
    *,
    ok: bool = True,
    error: str = "",
    metrics: dict[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build results.json for this run from the contract and upload it to RESULT_URI.

    Files named by absolute path in ``results`` are listed with size and sha256 (signed when
    OMNIBIO_RESULT_SIGNING_KEY is set). Returns the document; without a result URI in the
    contract, nothing is uploaded.
    """
    env = os.environ if env is None else env
    contract = read_contract(env)
    document: dict[str, Any] = {
        "ok": ok,
        "tool_id": contract.tool_id,
        "run_id": contract.run_id,
        "results": results,
    }
    if error:
        document["error"] = error
    if metrics is not None:
        document["metrics"] = metrics
    document = complete(document, contract, env)
    publish(json.dumps(document, indent=2).encode("utf-8"), contract)
    return document
