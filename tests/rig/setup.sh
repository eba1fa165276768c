#!/usr/bin/env bash
# Idempotent offline test rig: dockerd, local images, emulators. Safe to run again and again.
# Everything heavy is cached under $OMNIBIO_RIG_DIR so a second run takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rig=${OMNIBIO_RIG_DIR:-/var/tmp/omnibio-rig}
mkdir -p "$rig"
log() { echo "[rig] $*" >&2; }

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v node >/dev/null || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# dockerd: start one in the background unless one already answers
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  nohup /usr/sbin/dockerd >"$rig/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see $rig/dockerd.log"; exit 1; }
fi

# base image: Debian minbase with bash, python3 and pip, tagged also under the names the WDL
# spec examples and miniwdl's defaults ask for (no registry is reachable from here)
base=omnibio/base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [ ! -f "$rig/bookworm.tar" ]; then
    log "debootstrap bookworm (about 2 minutes)"
    rm -rf "$rig/rootfs"
    debootstrap --variant=minbase \
      --include=python3,python3-pip,python-is-python3,ca-certificates,procps \
      bookworm "$rig/rootfs" >"$rig/debootstrap.log" 2>&1
    rm -rf "$rig/rootfs/var/cache/apt/archives/"*.deb "$rig/rootfs/var/lib/apt/lists/"*
    tar -C "$rig/rootfs" -cf "$rig/bookworm.tar.tmp" . && mv "$rig/bookworm.tar.tmp" "$rig/bookworm.tar"
    rm -rf "$rig/rootfs"
  fi
  docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' "$rig/bookworm.tar" "$base" >/dev/null
fi
for alias in ubuntu:22.04 ubuntu:20.04 ubuntu:latest ubuntu:focal python:latest debian:bookworm; do
  docker image inspect "$alias" >/dev/null 2>&1 || docker tag "$base" "$alias"
done

# runtime image: this package's tool runtime installed from a host wheelhouse (containers
# cannot reach PyPI). Rebuilt when the package's runtime sources change.
runtime_hash=$(cat "$repo/setup.py" $(find "$repo/miniwdl_omnibio/runtime" -name '*.py' | sort) | sha256sum | cut -c1-16)
runtime_tag=omnibio/runtime:latest
if [ "$(docker image inspect -f '{{index .Config.Labels "omnibio.source"}}' "$runtime_tag" 2>/dev/null)" != "$runtime_hash" ]; then
  log "building $runtime_tag"
  ctx="$rig/runtime-build"
  rm -rf "$ctx" && mkdir -p "$ctx/wheels"
  pip wheel -q --no-deps -w "$ctx/wheels" "$repo" 2>>"$rig/pip-wheel.log"
  pip wheel -q -w "$ctx/wheels" boto3 azure-storage-blob azure-identity 2>>"$rig/pip-wheel.log"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $base
COPY wheels /tmp/wheels
RUN pip install -q --no-index --find-links /tmp/wheels --break-system-packages --no-deps /tmp/wheels/miniwdl_omnibio-*.whl \
 && pip install -q --no-index --find-links /tmp/wheels --break-system-packages boto3 azure-storage-blob azure-identity \
 && rm -rf /tmp/wheels
LABEL omnibio.source=$runtime_hash
DOCKERFILE
  docker build -q -t "$runtime_tag" "$ctx" >/dev/null
  rm -rf "$ctx"
fi

# Azurite (Azure Blob emulator) from npm
if [ ! -x "$rig/node_modules/.bin/azurite" ]; then
  log "npm install azurite"
  (cd "$rig" && npm install --silent --no-audit --no-fund azurite@3.35 >/dev/null)
fi
bash "$here/slurm.sh" >/dev/null  # one-node Slurm cluster (omnibio_slurm)
echo "$rig"
