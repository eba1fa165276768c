#!/usr/bin/env bash
# The first command: from a fresh clone to a verified result on omnibio_docker.
#   1. installs this package into the active virtual environment, or into .venv in the clone;
#   2. makes sure a Docker engine answers and the local images exist (scripts/local-docker.sh);
#   3. runs examples/quickstart/hello_results.wdl, whose tool uploads results.json through the
#      contract to examples/quickstart/results/, and prints the verified results.
# Run directories go under examples/quickstart/runs/. A second run only does step 3.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
example="$repo/examples/quickstart"
say() { echo "[example] $*" >&2; }

# 1. the package
if [ -n "${VIRTUAL_ENV:-}" ]; then
  python="$VIRTUAL_ENV/bin/python"
  where="the active virtual environment $VIRTUAL_ENV"
else
  if [ ! -x "$repo/.venv/bin/python" ]; then
    python3 -m venv "$repo/.venv" 2>/dev/null || {
      rm -rf "$repo/.venv"
      echo "omnibio: python3 cannot create a virtual environment: install python3-venv" \
        "(Debian/Ubuntu: sudo apt-get install python3-venv) and run this again" >&2
      exit 1
    }
  fi
  python="$repo/.venv/bin/python"
  where="$repo/.venv (no virtual environment was active)"
fi
# -I: not from the current directory; WDL and docker: its dependencies are there too
installed=$("$python" -I -c 'import WDL, docker, miniwdl_omnibio, os; print(os.path.dirname(miniwdl_omnibio.__file__))' 2>/dev/null || true)
if [ "$installed" = "$repo/miniwdl_omnibio" ]; then
  say "package: already installed in $where"
else
  say "package: installing this checkout into $where"
  pip_log=$(mktemp -t omnibio-pip-install.XXXXXX)
  "$python" -m pip install -q --disable-pip-version-check -e "$repo" >"$pip_log" 2>&1 || true
  if ! "$python" -I -c 'import WDL, miniwdl_omnibio' 2>/dev/null; then
    tail -n 5 "$pip_log" >&2
    echo "omnibio: installing the package into $where failed; pip's log: $pip_log" >&2
    exit 1
  fi
  rm -f "$pip_log"
fi

# 2. a Docker engine and the images (no registry)
PYTHON="$python" bash "$repo/scripts/local-docker.sh"

# 3. the example
say "running examples/quickstart/hello_results.wdl on omnibio_docker (run directories under $example/runs)"
mkdir -p "$example/runs" "$example/results"
out=$(MINIWDL_CFG="$example/quickstart.cfg" \
  MINIWDL__OMNIBIO__RESULT_URI_PREFIX="file://$example/results" \
  "$python" -m WDL run "$example/hello_results.wdl" names="$repo/examples/data/names.txt" \
  --dir "$example/runs" --no-color) ||
  { echo "omnibio: the example failed; its log is in the newest directory under $example/runs" >&2; exit 1; }
"$python" - "$out" "$example/results" <<'PY'
import json, os, sys

from miniwdl_omnibio.contract import workflow_run_name

run_dir = json.loads(sys.argv[1])["dir"]
print(f"run directory: {run_dir}")
# results go under the run's name: its directory's name and a digest of where it is
results = os.path.join(sys.argv[2], workflow_run_name(run_dir, ("run",)))
for directory, _, files in sorted(os.walk(results)):
    if "results.json" in files:
        path = os.path.join(directory, "results.json")
        with open(path) as infile:
            document = json.load(infile)
        print(f"verified result of {document['run_id']}: {json.dumps(document['results'])}")
        print(f"  at {path}")
PY
