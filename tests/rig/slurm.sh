#!/usr/bin/env bash
# Idempotent one-node Slurm cluster for the omnibio_slurm tests: munged, MariaDB, slurmdbd,
# slurmctld and slurmd on this host, configured under $OMNIBIO_RIG_DIR/slurm. Safe to run again
# and again; a second run only checks that the daemons answer and the accounting records exist,
# and restarts a daemon only when its configuration file changed.
#
# Debian 12 packages Slurm 22.05. Accounting is real: slurmdbd stores jobs in MariaDB, so sacct
# answers for jobs squeue forgot (MinJobAge), and slurmctld enforces associations, limits and QOS
# (slurm.conf(5) AccountingStorageEnforce). Cluster "omnibio", account "omnibio" holding root
# (default QOS "normal", no limits) and the opt-in QOS "limited" (MaxJobsPerUser=2,
# MaxSubmitJobsPerUser=4; sacctmgr(1)), which a job gets only by asking (sbatch --qos=limited;
# the engine's [omnibio_slurm] qos or runtime.slurm_qos). The daemons run as root
# (SlurmUser=root), as the rest of the rig does; slurmdbd reaches MariaDB as its root user over
# the local socket (unix_socket authentication: no password anywhere).
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
command -v slurmdbd >/dev/null || need_apt+=(slurmdbd)
command -v mariadbd >/dev/null || need_apt+=(mariadb-server)
# podman, the second container runtime the engine runs (docker's runc satisfies its runtime)
command -v podman >/dev/null || need_apt+=(podman)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq -o DPkg::Lock::Timeout=600
  # the packages' own service start is refused in containers (policy-rc.d); we start them below
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need_apt[@]}" >/dev/null
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
# accounting through slurmdbd (below); jobs without an association, over a limit or asking for a
# QOS their association lacks are refused or held as Slurm documents (accounting.html)
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$node
AccountingStorageEnforce=associations,limits,qos
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
if ! cmp -s "$conf.tmp" "$conf"; then mv "$conf.tmp" "$conf"; else rm "$conf.tmp"; fi

mkdir -p /etc/slurm
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$conf" ]; then
  ln -sfn "$conf" /etc/slurm/slurm.conf
else
  log "/etc/slurm/slurm.conf is not the rig's; callers must export SLURM_CONF=$conf"
fi
export SLURM_CONF="$conf"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # stop() PIDFILE: TERM the daemon and wait until it is gone
  kill "$(cat "$1")" 2>/dev/null || true
  for _ in $(seq 1 40); do alive "$1" || return 0; sleep 0.25; done
  log "$1: the daemon did not stop"; return 1
}

# MariaDB, Debian's own data directory and socket (/run/mysqld/mysqld.sock), no TCP listener;
# started directly (no systemd here) unless it answers, e.g. when the package's service runs it
if ! mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1; then
  log "starting mariadbd"
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --skip-test-db >/dev/null
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  touch "$dir/log/mariadb.log" && chown mysql:mysql "$dir/log/mariadb.log"  # written as mysql
  setsid -f /usr/sbin/mariadbd --user=mysql --skip-networking --log-error="$dir/log/mariadb.log" \
    </dev/null >/dev/null 2>&1
  for _ in $(seq 1 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.5; done
  mariadb-admin ping >/dev/null 2>&1 || { log "mariadbd did not start; see $dir/log"; exit 1; }
fi

# slurmdbd reads slurmdbd.conf beside $SLURM_CONF (slurmdbd.conf(5)); root-only, as it must be
dbd_conf="$dir/slurmdbd.conf"
cat >"$dbd_conf.tmp" <<CONF
# written by tests/rig/slurm.sh: accounting for the one-node test cluster
AuthType=auth/munge
DbdHost=$node
SlurmUser=root
PidFile=$dir/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
CONF
chmod 600 "$dbd_conf.tmp"
if ! cmp -s "$dbd_conf.tmp" "$dbd_conf"; then mv "$dbd_conf.tmp" "$dbd_conf"; else rm "$dbd_conf.tmp"; fi
# a daemon whose file is newer than its pid file (written at its start) runs an older config
if alive "$dir/slurmdbd.pid" && [ "$dbd_conf" -nt "$dir/slurmdbd.pid" ]; then
  log "slurmdbd.conf changed: restarting slurmdbd"
  stop "$dir/slurmdbd.pid"
fi
if ! alive "$dir/slurmdbd.pid"; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd
fi
dbd_ok=""
for _ in $(seq 1 60); do
  sacctmgr --noheader --parsable2 show cluster format=Cluster >/dev/null 2>&1 && dbd_ok=1 && break
  sleep 0.5
done
[ -n "$dbd_ok" ] || { log "slurmdbd does not answer sacctmgr; see $dir/log"; exit 1; }

# the accounting records (sacctmgr(1)), each added only when missing: the cluster, the account
# holding root (jobs without --qos get "normal", which has no limits) and the opt-in QOS
show() { sacctmgr --noheader --parsable2 show "$@" 2>/dev/null; }
add() { log "sacctmgr $*"; sacctmgr --immediate --quiet "$@" >/dev/null; }
[ -n "$(show cluster omnibio format=Cluster)" ] || add add cluster omnibio
[ -n "$(show account omnibio format=Account)" ] || add add account omnibio cluster=omnibio \
  description=omnibio-tests organization=omnibio
[ -n "$(show qos limited format=Name)" ] || add add qos limited
[ "$(show qos limited format=MaxJobsPU,MaxSubmitPU)" = "2|4" ] ||
  add modify qos limited set MaxJobsPerUser=2 MaxSubmitJobsPerUser=4
[ -n "$(show association cluster=omnibio account=omnibio user=root format=User)" ] ||
  add add user root cluster=omnibio account=omnibio
[ "$(show user root format=DefaultAccount)" = "omnibio" ] ||
  add modify user root set DefaultAccount=omnibio
case "$(show association cluster=omnibio account=omnibio user=root format=QOS,DefaultQOS)" in
  "limited,normal|normal") ;;  # sacctmgr lists the QOS names sorted
  *) add modify user root where cluster=omnibio account=omnibio set QOS=normal,limited DefaultQOS=normal ;;
esac

if alive "$dir/slurmctld.pid" && [ "$conf" -nt "$dir/slurmctld.pid" ]; then
  log "slurm.conf changed: restarting slurmctld and slurmd (jobs survive in the state files)"
  stop "$dir/slurmd.pid"
  stop "$dir/slurmctld.pid"
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
