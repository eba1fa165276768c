"""``python -m miniwdl_omnibio.runtime upload FILE``: upload a tool's own results.json.

For tools written in any language: write results.json, then call this to put it at RESULT_URI.
``ok`` defaults to true when the file does not say.
"""

import argparse
import json
import sys

from .contract import read_contract
from .store import upload_result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miniwdl_omnibio.runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    upload = sub.add_parser("upload", help="upload results.json to the contract's RESULT_URI")
    upload.add_argument("file")
    sub.add_parser("show", help="print the contract as JSON")
    args = parser.parse_args(argv)
    contract = read_contract()
    if args.command == "show":
        json.dump(contract.__dict__, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not contract.result_uri:
        print("no RESULT_URI in the environment contract; nothing uploaded", file=sys.stderr)
        return 2
    with open(args.file, encoding="utf-8") as infile:
        document = json.load(infile)
    document.setdefault("ok", True)
    document.setdefault("tool_id", contract.tool_id)
    document.setdefault("run_id", contract.run_id)
    upload_result(contract.result_uri, json.dumps(document, indent=2).encode("utf-8"))
    print(f"uploaded {args.file} to {contract.result_uri}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
