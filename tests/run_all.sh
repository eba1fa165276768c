#!/usr/bin/env bash
# The project's test command (see README): install, lint and type-check, set up the offline rig,
# run every test. Extra arguments go to pytest, e.g. `bash tests/run_all.sh tests/unit`.
#
# The tests run on OMNIBIO_TEST_WORKERS pytest-xdist workers (default 3: most tests wait on a
# service, so a third worker uses what two leave idle of 2 cores), each backend's tests on one
# worker (their xdist_group, set in tests/conftest.py); then the tests marked serial (they depend
# on the host's cores or measure time) run alone. Each part lists its slowest 30 tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# a failed install fails the script (pipefail); only pip's warning about running as root is hidden
python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 |
    { grep -v "^WARNING: Running pip as the 'root' user" || true; }
# omni_tool_runtime is its own distribution (compat/): the tests of upstream's API need it
python -m pip install -q --disable-pip-version-check --no-deps -e ./compat 2>&1 |
    { grep -v "^WARNING: Running pip as the 'root' user" || true; }
python -m ruff check miniwdl_omnibio tests benchmarks
python -m ruff format --check -q miniwdl_omnibio tests benchmarks
python -m mypy
bash tests/rig/setup.sh >/dev/null

parallel=0 serial=0
python -m pytest -q -ra --durations=30 -n "${OMNIBIO_TEST_WORKERS:-3}" --dist loadgroup \
    --no-loadscope-reorder -m "not serial" "${@:-tests}" || parallel=$?
python -m pytest -q -ra --durations=30 -m serial "${@:-tests}" || serial=$?
# pytest's 5 (no test selected) is fine for one part, not for both
for status in "$parallel" "$serial"; do
    if [ "$status" != 0 ] && [ "$status" != 5 ]; then exit "$status"; fi
done
if [ "$parallel" = 5 ] && [ "$serial" = 5 ]; then exit 5; fi
