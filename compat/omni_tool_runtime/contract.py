"""``read_contract_from_env()`` as upstream has it: missing variables read as empty."""

import os
from dataclasses import dataclass
from typing import Any

from miniwdl_omnibio.runtime.contract import read_contract


@dataclass
class ToolContract:
    tool_id: str
    run_id: str
    inputs: Any
    resources: Any
    result_uri: str


def read_contract_from_env() -> ToolContract:
    """The contract; RuntimeError names INPUTS_JSON or RESOURCES_JSON when it is not JSON."""
    try:
        contract = read_contract(os.environ, required=False)
    except ValueError as exn:
        raise RuntimeError(str(exn)) from None
    return ToolContract(
        tool_id=contract.tool_id,
        run_id=contract.run_id,
        inputs=contract.inputs,
        resources=contract.resources,
        result_uri=contract.result_uri or "",
    )
