#!/usr/bin/env bash
# The project's test command (see README): install, lint and type-check, set up the offline rig,
# run every test. Extra arguments go to pytest, e.g. `bash tests/run_all.sh tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Running pip as the 'root' user" || true
python -m pip install -q --disable-pip-version-check --no-deps -e ./compat 2>&1 | grep -v "^WARNING: Running pip as the 'root' user" || true  # omni_tool_runtime: its own distribution
python -m ruff check miniwdl_omnibio tests benchmarks
python -m ruff format --check -q miniwdl_omnibio tests benchmarks
python -m mypy
bash tests/rig/setup.sh >/dev/null
python -m pytest -q -ra "${@:-tests}"
