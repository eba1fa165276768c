"""``python -m miniwdl_omnibio.runtime COMMAND``: the runtime's commands for tools in any language.

- ``upload FILE``: put a tool's own results.json at RESULT_URI (``ok`` defaults to true)
- ``show``: print the contract as JSON
- ``klms -- COMMAND...``: run a KLMS-style tool (input JSON in, output JSON out)
- ``new-tool NAME``: write a tool skeleton in the upstream layout
"""

import argparse
import json
import os
import sys
from dataclasses import asdict

from .contract import read_contract
from .klms import run_klms
from .result import ResultTooLarge, complete, publish
from .scaffold import new_tool


def _upload(path: str) -> int:
    contract = read_contract()
    if not contract.result_uri:
        print("no RESULT_URI in the environment contract; nothing uploaded", file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as infile:
        document = json.load(infile)
    if not isinstance(document, dict):
        print(f"{path} is not a JSON object; nothing uploaded", file=sys.stderr)
        return 2
    document = complete(document, contract, os.environ)
    try:
        publish(json.dumps(document, indent=2).encode("utf-8"), contract)
    except ResultTooLarge as exn:
        print(str(exn), file=sys.stderr)
        return 2
    print(f"uploaded {path} to {contract.result_uri}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miniwdl_omnibio.runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    upload = sub.add_parser("upload", help="upload results.json to the contract's RESULT_URI")
    upload.add_argument("file")
    sub.add_parser("show", help="print the contract as JSON")
    klms = sub.add_parser("klms", help="run COMMAND input.json output.json (a KLMS-style tool)")
    klms.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an output the tool writes, relative to the working directory (repeatable)",
    )
    klms.add_argument("tool", nargs=argparse.REMAINDER, help="-- COMMAND...")
    scaffold = sub.add_parser("new-tool", help="write a tool skeleton in upstream's layout")
    scaffold.add_argument("name")
    scaffold.add_argument("--dir", default=".")
    args = parser.parse_args(argv)
    if args.command == "upload":
        return _upload(args.file)
    if args.command == "klms":
        outputs = dict(item.partition("=")[::2] for item in args.output)
        tool = args.tool[1:] if args.tool[:1] == ["--"] else args.tool
        return run_klms(tool, outputs)
    if args.command == "new-tool":
        try:
            written = new_tool(args.name, args.dir)
        except ValueError as exn:
            print(f"new-tool: {exn}", file=sys.stderr)
            return 2
        print("\n".join(written))
        return 0
    json.dump(asdict(read_contract()), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
