#!/usr/bin/env bash
# A private single-node Slurm cluster on this machine for tests/cli_slurm.rs:
#   cluster.sh start DIR   writes DIR/slurm.conf, starts munged (if not running), slurmctld and
#                          slurmd, waits until the node is idle; prints the SLURM_CONF path
#   cluster.sh stop DIR    stops the two Slurm daemons started for DIR
# Needs root and Debian's slurm-wlm and munge packages (.ci/run installs them). Ports 16817/16818,
# so a system Slurm on the default ports is left alone.
set -euo pipefail
cmd=$1
dir=$(realpath -m "$2")
conf="$dir/slurm.conf"

stop() {
  for d in slurmd slurmctld; do
    if [ -f "$dir/$d.pid" ]; then
      kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
    fi
  done
  for _ in $(seq 50); do
    alive=0
    for d in slurmd slurmctld; do
      [ -f "$dir/$d.pid" ] && kill -0 "$(cat "$dir/$d.pid")" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  rm -f "$dir"/slurmd.pid "$dir"/slurmctld.pid
}

case "$cmd" in
  start)
    mkdir -p "$dir/state" "$dir/spool"
    if ! pgrep -x munged >/dev/null; then
      if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
      fi
      mkdir -p /run/munge /var/lib/munge /var/log/munge
      chown munge:munge /run/munge /var/lib/munge /var/log/munge
      runuser -u munge -- /usr/sbin/munged
    fi
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat > "$conf" <<CONF
ClusterName=funcrl-test
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$conf"
    stop
    slurmctld -i
    slurmd
    for _ in $(seq 100); do
      state=$(sinfo -h -o %T 2>/dev/null || true)
      if [ "$state" = idle ]; then
        echo "$conf"
        exit 0
      fi
      sleep 0.2
    done
    echo "the test cluster did not come up (state: ${state:-none}); logs in $dir" >&2
    exit 1
    ;;
  stop)
    export SLURM_CONF="$conf"
    stop
    ;;
  *)
    echo "usage: cluster.sh start|stop DIR" >&2
    exit 2
    ;;
esac
