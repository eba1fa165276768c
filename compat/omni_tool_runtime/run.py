"""``python -m omni_tool_runtime.run``: run ``tools.<TOOL_ID>.run:main`` from the working directory.

Exit 2 with one line on stderr when TOOL_ID is unset or the tool cannot be loaded; otherwise the
tool's own return value.
"""

import importlib
import os
import sys


def main() -> int:
    tool_id = os.environ.get("TOOL_ID", "").strip()
    if not tool_id:
        print("omni_tool_runtime.run: TOOL_ID not set; nothing to run", file=sys.stderr)
        return 2
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # tools/ is looked up where the tool image starts
    module_name = f"tools.{tool_id}.run"
    try:
        module = importlib.import_module(module_name)
    except Exception as exn:
        print(f"omni_tool_runtime.run: cannot import {module_name}: {exn}", file=sys.stderr)
        return 2
    if not callable(getattr(module, "main", None)):
        print(f"omni_tool_runtime.run: {module_name} has no main()", file=sys.stderr)
        return 2
    return int(module.main())


if __name__ == "__main__":
    raise SystemExit(main())
