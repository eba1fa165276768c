#!/usr/bin/env bash
# Make a local Docker engine answer and build the two local images omnibio_docker runs
# (omnibio/base:bookworm, omnibio/runtime:latest) without any registry. Idempotent: when both
# exist and the runtime image matches this checkout, it only asks dockerd and returns.
# Called by examples/run-example.sh and tests/rig/setup.sh. Heavy files are cached under
# $OMNIBIO_RIG_DIR (default /var/tmp/omnibio-rig); $PYTHON (default python3) builds the wheels.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rig=${OMNIBIO_RIG_DIR:-/var/tmp/omnibio-rig}
python=${PYTHON:-python3}
mkdir -p "$rig"
log() { echo "[docker] $*" >&2; }
fail() { echo "omnibio: $*" >&2; exit 1; }

debian_root() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release
}

# install_or_fail COMMAND PACKAGE WHAT: apt-get install PACKAGE as root on Debian/Ubuntu, else stop
install_or_fail() {
  command -v "$1" >/dev/null && return 0
  debian_root || fail "$1 is missing: install $3 (Debian/Ubuntu: sudo apt-get install $2) and run this again"
  log "apt-get install $2"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# 1. a Docker engine that answers: a running one, else start an installed dockerd
if ! docker_error=$(docker info 2>&1 >/dev/null); then
  case "$docker_error" in *"permission denied"*)
    fail "dockerd runs but $(id -un) may not use it: sudo usermod -aG docker $(id -un), then log in again"
  esac
  [ -x /usr/sbin/dockerd ] || install_or_fail dockerd docker.io "Docker Engine (https://docs.docker.com/engine/install/)"
  [ "$(id -u)" = 0 ] || fail "Docker is installed but not running: sudo systemctl start docker"
  log "starting dockerd (log: $rig/dockerd.log)"
  nohup "$(command -v dockerd || echo /usr/sbin/dockerd)" >"$rig/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || fail "dockerd did not start; see $rig/dockerd.log"
fi

# 2. base image: Debian minbase with bash, python3 and pip, built by debootstrap (no registry)
base=omnibio/base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [ ! -f "$rig/bookworm.tar" ]; then
    install_or_fail debootstrap debootstrap "debootstrap (it builds the base image offline)"
    [ "$(id -u)" = 0 ] || fail "building $base needs root (debootstrap): run this once with sudo"
    log "debootstrap bookworm for $base (about 2 minutes, once)"
    rm -rf "$rig/rootfs"
    debootstrap --variant=minbase \
      --include=python3,python3-pip,python-is-python3,ca-certificates,procps \
      bookworm "$rig/rootfs" >"$rig/debootstrap.log" 2>&1 ||
      fail "debootstrap failed; see $rig/debootstrap.log"
    rm -rf "$rig/rootfs/var/cache/apt/archives/"*.deb "$rig/rootfs/var/lib/apt/lists/"*
    tar -C "$rig/rootfs" -cf "$rig/bookworm.tar.tmp" . && mv "$rig/bookworm.tar.tmp" "$rig/bookworm.tar"
    rm -rf "$rig/rootfs"
  fi
  docker import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' "$rig/bookworm.tar" "$base" >/dev/null
fi

# 3. runtime image: this checkout's tool runtime installed from a host wheelhouse (containers
# cannot reach PyPI); rebuilt when the package's runtime sources change
runtime_hash=$(cat "$repo/setup.py" $(find "$repo/miniwdl_omnibio/runtime" -name '*.py' | sort) | sha256sum | cut -c1-16)
runtime_tag=omnibio/runtime:latest
if [ "$(docker image inspect -f '{{index .Config.Labels "omnibio.source"}}' "$runtime_tag" 2>/dev/null)" != "$runtime_hash" ]; then
  log "building $runtime_tag"
  ctx=$(mktemp -d "$rig/runtime-build.XXXXXX")  # one per build: checkouts may build at once
  mkdir -p "$ctx/wheels"
  { "$python" -m pip wheel -q --no-deps -w "$ctx/wheels" "$repo" &&
    "$python" -m pip wheel -q -w "$ctx/wheels" boto3 azure-storage-blob azure-identity; } \
    2>>"$rig/pip-wheel.log" || fail "building the wheels of $runtime_tag failed; see $rig/pip-wheel.log"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $base
COPY wheels /tmp/wheels
RUN pip install -q --no-index --find-links /tmp/wheels --break-system-packages --no-deps /tmp/wheels/miniwdl_omnibio-*.whl \
 && pip install -q --no-index --find-links /tmp/wheels --break-system-packages boto3 azure-storage-blob azure-identity \
 && rm -rf /tmp/wheels
LABEL omnibio.source=$runtime_hash
DOCKERFILE
  docker build -q -t "$runtime_tag" "$ctx" >"$ctx.log" 2>&1 ||
    fail "building $runtime_tag failed; see $ctx.log"
  rm -f "$ctx.log"
  rm -rf "$ctx"
fi
