"""``new-tool NAME``: a tool in upstream's layout, its Dockerfile and a WDL task that calls it."""

import os
import re

INIT = '"""The {name} tool."""\n'

RUN = '''"""{name}: reads the environment contract, does its work, uploads results.json."""

import os

from omni_tool_runtime.contract import read_contract_from_env
from omni_tool_runtime.upload_result import upload_result


def main() -> int:
    contract = read_contract_from_env()
    message = str(contract.inputs.get("message", ""))
    # the tool's work goes here; files it writes and names in results get a sha256 manifest
    out = os.path.abspath("{name}.txt")
    with open(out, "w") as outfile:
        outfile.write(message.upper() + "\\n")
    upload_result({{"results": {{"shout": message.upper(), "file": out}}}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''

DOCKERFILE = """# The {name} tool image. The runtime and its omni_tool_runtime API come from
# ./wheels when that holds their wheels (pip wheel --no-deps -w wheels miniwdl-omnibio
# miniwdl-omnibio-compat), else from the index.
ARG BASE=python:3.12-slim
FROM ${{BASE}}
COPY wheels /tmp/wheels
RUN if ls /tmp/wheels/miniwdl_omnibio-*.whl >/dev/null 2>&1; then \\
      pip install -q --no-index --find-links /tmp/wheels --no-deps --break-system-packages \\
        /tmp/wheels/miniwdl_omnibio*.whl; \\
    else \\
      pip install -q --no-deps --break-system-packages miniwdl-omnibio miniwdl-omnibio-compat; \\
    fi && rm -rf /tmp/wheels
WORKDIR /opt/tool
COPY tools ./tools
ENV PYTHONPATH=/opt/tool
"""

WDL = """version 1.1

task {name} {{
  input {{
    String message
  }}
  command <<<
    python3 -m omni_tool_runtime.run
  >>>
  output {{
    File result = "omnibio_result.json"
  }}
  runtime {{
    container: "omnibio/tool-{image}:latest"
    omnibio_tool_id: "{name}"
  }}
}}
"""

NAME = re.compile(r"[a-z][a-z0-9_]*")


def new_tool(name: str, directory: str = ".") -> list[str]:
    """Write the skeleton under ``directory``; ValueError for a bad name or an existing tool."""
    if not NAME.fullmatch(name):
        raise ValueError(f"tool name {name!r} must be a Python identifier in lower case")
    tool_dir = os.path.join(directory, "tools", name)
    if os.path.exists(os.path.join(tool_dir, "run.py")):
        raise ValueError(f"{tool_dir}/run.py exists; not overwritten")
    files = {
        os.path.join(directory, "tools", "__init__.py"): '"""Tools run by omni_tool_runtime."""\n',
        os.path.join(tool_dir, "__init__.py"): INIT.format(name=name),
        os.path.join(tool_dir, "run.py"): RUN.format(name=name),
        os.path.join(directory, "Dockerfile"): DOCKERFILE.format(name=name),
        os.path.join(directory, f"{name}.wdl"): WDL.format(name=name, image=name.replace("_", "-")),
    }
    os.makedirs(tool_dir, exist_ok=True)
    os.makedirs(os.path.join(directory, "wheels"), exist_ok=True)
    written = []
    for path, text in files.items():
        if path.endswith("tools/__init__.py") and os.path.exists(path):
            continue
        with open(path, "w", encoding="utf-8") as outfile:
            outfile.write(text)
        written.append(path)
    return written
