"""Reference tool: echoes its contract back as results.json.

Run as ``python -m miniwdl_omnibio.runtime.echo_test`` (or ``omnibio-echo-test``) inside a tool
image. It proves the whole path: contract in, results.json out at RESULT_URI.
"""

import json
import sys

from .contract import read_contract
from .result import write_result


def main() -> int:
    contract = read_contract()
    document = write_result(
        {"echo": contract.inputs, "resources": contract.resources},
    )
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    where = contract.result_uri or "(no RESULT_URI)"
    print(f"echo_test: wrote results for {contract.run_id} to {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
