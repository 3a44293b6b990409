#!/usr/bin/env bash
# Start a single-node Slurm on localhost for tests: munged, slurmctld and slurmd, configured
# here, and wait until the node is idle. Idempotent: running daemons are left alone.
#
#   deploy/slurm-local/start.sh        # install if needed, configure, start, wait
#   deploy/slurm-local/stop.sh         # cancel jobs and stop the daemons
#
# RMM_SLURM_CPUS (default 8) is the number of CPUs the node declares: more than the real
# cores, so that several one-core Dask worker jobs run at once (SlurmdParameters=config_overrides).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/install.sh"

node=$(hostname -s)
cpus=${RMM_SLURM_CPUS:-8}
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
log=/var/log/slurm

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$log" /run/munge /var/lib/munge /var/log/munge /etc/munge

# munge: the daemon must run as user munge, with its directories owned by munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi

sed -e "s/@NODE@/$node/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEMORY@/$mem_mb/g" "$here/slurm.conf.in" > /etc/slurm/slurm.conf
cp "$here/cgroup.conf" /etc/slurm/cgroup.conf

if ! pgrep -x slurmctld >/dev/null; then
    slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd
fi

# wait for the node to register and be idle (a node seen before may come back down)
for _ in $(seq 1 60); do
    state=$(sinfo -h -N -n "$node" -o %t 2>/dev/null | head -n1 || true)
    case "$state" in
        idle|mix|alloc) echo "slurm: node $node is $state ($cpus CPUs, ${mem_mb} MB)"; exit 0 ;;
        down*|drain*|drng*) scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
echo "slurm: node $node did not become idle; see $log/slurmctld.log and $log/slurmd.log" >&2
tail -n 20 "$log/slurmctld.log" "$log/slurmd.log" >&2 || true
exit 1
