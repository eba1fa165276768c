#!/usr/bin/env bash
# Idempotent one-node Slurm cluster for the omnibio_slurm tests: munged, slurmctld and slurmd on
# this host, configured under $OMNIBIO_RIG_DIR/slurm. Safe to run again and again; a second run
# only checks that the daemons answer.
#
# Debian 12 packages Slurm 22.05. Accounting is off (slurmdbd would need a MySQL server), so
# sacct has nothing to say and finished jobs are visible through squeue/scontrol for MinJobAge
# seconds. The daemons run as root (SlurmUser=root), as the rest of the rig does.
# /etc/slurm/slurm.conf is a symlink to the rig's file so that every sbatch/squeue (tests, the
# engine, a human) finds it without SLURM_CONF; an /etc/slurm/slurm.conf that is not ours is left
# alone and the caller must export SLURM_CONF (printed on the last line).
set -euo pipefail
rig=${OMNIBIO_RIG_DIR:-/var/tmp/omnibio-rig}
dir="$rig/slurm"
conf="$dir/slurm.conf"
log() { echo "[rig/slurm] $*" >&2; }
started=$SECONDS

need_apt=()
command -v munged >/dev/null || need_apt+=(munge)
command -v slurmctld >/dev/null || need_apt+=(slurmctld)
command -v slurmd >/dev/null || need_apt+=(slurmd)
command -v sbatch >/dev/null || need_apt+=(slurm-client)
# podman, the second container runtime the engine runs (docker's runc satisfies its runtime)
command -v podman >/dev/null || need_apt+=(podman)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  # the packages' own service start is refused in containers (policy-rc.d); we start them below
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

mkdir -p "$dir/state" "$dir/spool" "$dir/log"

# munge: a key (the package creates /etc/munge/munge.key; make one if it is missing) and munged
if [ ! -s /etc/munge/munge.key ]; then
  log "creating the munge key"
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chmod 400 /etc/munge/munge.key
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge 2>/dev/null || true
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
  log "starting munged"
  su -s /bin/sh munge -c /usr/sbin/munged
  for _ in $(seq 1 30); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.5; done
  munge -n </dev/null >/dev/null || { log "munged did not start"; exit 1; }
fi

# slurm.conf: this host with its real CPUs and memory (as slurmd -C reports them), one partition
node=$(hostname -s)
hw=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *$//')
cat >"$conf.tmp" <<CONF
# written by tests/rig/slurm.sh: a one-node test cluster
ClusterName=omnibio
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# no cgroup plugins: this machine (a container) does not delegate cgroups; docker enforces limits
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# finished jobs stay visible to squeue/scontrol for 30 s (default 300): short enough that a test
# sees a job leave, long enough that a poll round never misses its final state
MinJobAge=30
# scancel and time limits: SIGTERM, then SIGKILL 5 s later (default 30)
KillWait=5
# a job over its time limit is killed at once (OverTimeLimit default 0), checked every 5 s
InactiveLimit=0
ReturnToService=2
MaxArraySize=10001
NodeName=$node $hw State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
changed=0
if ! cmp -s "$conf.tmp" "$conf"; then mv "$conf.tmp" "$conf"; changed=1; else rm "$conf.tmp"; fi

mkdir -p /etc/slurm
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$conf" ]; then
  ln -sfn "$conf" /etc/slurm/slurm.conf
else
  log "/etc/slurm/slurm.conf is not the rig's; callers must export SLURM_CONF=$conf"
fi
export SLURM_CONF="$conf"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ((changed)) && alive "$dir/slurmctld.pid"; then
  log "slurm.conf changed: restarting the daemons"
  kill "$(cat "$dir/slurmd.pid" 2>/dev/null)" "$(cat "$dir/slurmctld.pid")" 2>/dev/null || true
  for _ in $(seq 1 40); do alive "$dir/slurmctld.pid" || alive "$dir/slurmd.pid" || break; sleep 0.25; done
fi
if ! alive "$dir/slurmctld.pid"; then
  log "starting slurmctld"
  /usr/sbin/slurmctld -f "$conf"
fi
if ! alive "$dir/slurmd.pid"; then
  log "starting slurmd"
  /usr/sbin/slurmd -f "$conf"
fi

# ready: the controller answers and the node is idle/allocated (not down or unknown)
state=""
for _ in $(seq 1 120); do
  state=$(sinfo --noheader --nodes="$node" --format=%T 2>/dev/null | head -1 || true)
  case "$state" in idle* | mixed* | allocated* | completing*) break ;; esac
  case "$state" in down* | drain*) scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;; esac
  sleep 0.5
done
case "$state" in
  idle* | mixed* | allocated* | completing*) ;;
  *) log "the node is not up (state '${state:-no answer}'); see $dir/log"; exit 1 ;;
esac
# podman keeps its own images: the one the tests run, from dockerd's store (no registry)
podman image exists ubuntu:22.04 || docker save ubuntu:22.04 | podman load -q >/dev/null
log "ready in $((SECONDS - started)) s (node $node: $state)"
echo "$conf"
