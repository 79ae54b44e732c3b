#!/usr/bin/env bash
# Start or stop a throw-away two-node SLURM cluster on this one machine for the tests.
#
#   env_line=$(tests/slurm/cluster.sh start [DIR]) && eval "$env_line"   # prints `export SLURM_CONF=...`
#   tests/slurm/cluster.sh stop [DIR]
#
# Needs the Debian packages slurm-wlm and munge (installed by .ci/run). State, logs and the
# generated slurm.conf live under DIR (default /tmp/xecmae-slurm). Two slurmd daemons, nodes n1
# and n2 (both NodeHostname = this host, n1/n2 resolve to 127.0.0.1 through /etc/hosts), each with
# this machine's CPU count and memory; one partition `debug` over both. `start` exits non-zero
# unless both nodes answer. Ports (so that a second cluster can run beside another one):
#   SLURMCTLD_PORT    slurmctld's port [6817]
#   SLURMD_BASE_PORT  node nK's slurmd listens on SLURMD_BASE_PORT + K [17000]
set -euo pipefail

action=${1:-}
dir=${2:-/tmp/xecmae-slurm}
ctld_port=${SLURMCTLD_PORT:-6817}
base_port=${SLURMD_BASE_PORT:-17000}
nodes=(n1 n2)
host=$(hostname -s)

write_conf() {
    local cpus mem_mb index
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$dir/slurm.conf" <<CONF
ClusterName=xectest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again only after its old credential expired (default 120 s).
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
JobRequeue=1
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.%n.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.%n.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=600
CONF
    for index in "${!nodes[@]}"; do
        echo "NodeName=${nodes[index]} NodeHostname=$host Port=$((base_port + index + 1)) CPUs=$cpus" \
            "RealMemory=$mem_mb State=UNKNOWN" >>"$dir/slurm.conf"
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${nodes[*]}") Default=YES MaxTime=INFINITE State=UP" \
        >>"$dir/slurm.conf"
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    # Ask munged itself (a pgrep would also match a defunct one); --force takes over a stale
    # socket left by a munged that was killed.
    if ! munge -n >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged --force
    fi
}

start() {
    local node idle
    mkdir -p "$dir/state"
    for node in "${nodes[@]}"; do
        mkdir -p "$dir/spool/$node"
        grep -qE "^127\.0\.0\.1[[:space:]]+$node([[:space:]]|$)" /etc/hosts || echo "127.0.0.1 $node" >>/etc/hosts
    done
    write_conf
    start_munge
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -f "$SLURM_CONF"
    for node in "${nodes[@]}"; do
        slurmd -f "$SLURM_CONF" -N "$node"
    done
    for _ in $(seq 60); do
        idle=$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -cE ' (idle|mixed|allocated)$' || true)
        if ((idle == ${#nodes[@]})); then
            echo "export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 1
    done
    echo "SLURM cluster did not come up (nodes: $(sinfo -h -N -o '%N=%T' 2>&1 | tr '\n' ' '));" \
        "see $dir/slurmctld.log and $dir/slurmd.*.log" >&2
    return 1
}

stop() {
    local pidfile
    for pidfile in "$dir"/slurmd.*.pid "$dir/slurmctld.pid"; do
        if [[ -f $pidfile ]]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
}

case $action in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop [DIR]" >&2; exit 2 ;;
esac
