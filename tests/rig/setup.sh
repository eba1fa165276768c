#!/usr/bin/env bash
# Idempotent offline test rig: dockerd, local images, emulators. Safe to run again and again.
# Everything heavy is cached under $OMNIBIO_RIG_DIR so a second run takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rig=${OMNIBIO_RIG_DIR:-/var/tmp/omnibio-rig}
mkdir -p "$rig"
log() { echo "[rig] $*" >&2; }

command -v node >/dev/null || {
  log "apt-get install nodejs npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
}
# headless Chromium loads report.html in the report tests and benchmarks/report_size.py
command -v chromium >/dev/null || {
  log "apt-get install chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

# dockerd, omnibio/base:bookworm and omnibio/runtime:latest (shared with examples/run-example.sh)
PYTHON=${PYTHON:-python} OMNIBIO_RIG_DIR="$rig" bash "$repo/scripts/local-docker.sh"
# the base image also under the names the WDL spec examples and miniwdl's defaults ask for
for alias in ubuntu:22.04 ubuntu:20.04 ubuntu:latest ubuntu:focal python:latest debian:bookworm; do
  docker image inspect "$alias" >/dev/null 2>&1 || docker tag omnibio/base:bookworm "$alias"
done

# Azurite (Azure Blob emulator) from npm
if [ ! -x "$rig/node_modules/.bin/azurite" ]; then
  log "npm install azurite"
  (cd "$rig" && npm install --silent --no-audit --no-fund azurite@3.35 >/dev/null)
fi
bash "$here/slurm.sh" >/dev/null  # one-node Slurm cluster (omnibio_slurm)
echo "$rig"
