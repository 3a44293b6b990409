#!/usr/bin/env bash
# Cut a node of the two-node Slurm of start.sh off the network, or put it back (for tests
# that lose a worker node mid-run):
#
#   deploy/slurm-local/cut-node.sh rmm-node2 down   # host-side veth rmmv2 down: the node is cut off
#   deploy/slurm-local/cut-node.sh rmm-node2 up     # back on the bridge, and back in Slurm
#
# down: sets the node's veth on the bridge (rmmv1 for rmm-node1, rmmv2 for rmm-node2) down.
#   Nothing passes between the node and the root namespace (slurmctld, a Dask scheduler) or
#   the other node, in either direction, and nobody gets an error: connections just time
#   out. The processes on the node (slurmd, its jobs, Dask workers) keep running. With the
#   slurm.conf of start.sh (SlurmdTimeout=30) slurmctld marks the node not responding
#   (sinfo state with `*`, e.g. mix*) after 15-30 s and DOWN after 40-50 s (measured); then
#   its jobs end as NODE_FAIL (JobRequeue=0: not requeued) and leave squeue, although their
#   processes still run on the node. A cut shorter than that leaves the jobs running. A Dask
#   scheduler drops a worker there after about 30 s (distributed.comm.timeouts.tcp).
#   Returns at once.
# up: sets the veth up again and makes the node's slurmd register anew (SIGHUP), so that
#   the node returns to service now (ReturnToService=2; slurmctld does not ping a DOWN node,
#   unprompted it came back only after about 100 s) and slurmctld kills the processes of the
#   jobs it ended meanwhile. If the node went DOWN less than 11 s ago it first waits until
#   11 s have passed (jobs that ended within MessageTimeout=10 s are not killed on
#   registration). Waits up to 30 s for the node to answer and prints its state.
#
# Idempotent. Needs root and the two-node mode (/run/rmm-slurm-local/mode is `netns`).
# Exit status: 0 done, 1 the node's link is missing or the node did not answer, 2 usage.
set -euo pipefail
usage="usage: $0 rmm-node1|rmm-node2 down|up"
[ $# = 2 ] || { echo "$usage" >&2; exit 2; }
node=$1 action=$2
case "$node" in
    rmm-node1) veth=rmmv1 ;;
    rmm-node2) veth=rmmv2 ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
case "$action" in
    down|up) ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
if ! ip link show "$veth" >/dev/null 2>&1; then
    echo "cut-node: no link $veth: is the two-node Slurm of deploy/slurm-local/start.sh running?" >&2
    exit 1
fi
ip link set "$veth" "$action"
if [ "$action" = down ]; then
    echo "cut-node: $node down ($veth)"
    exit 0
fi

state() { sinfo -h -N -n "$node" -o %t 2>/dev/null | head -n1; }
# Reason=Not responding [root@2026-12-07T09:22:54] when slurmctld set the node DOWN
info=$(scontrol show node "$node" 2>/dev/null || true)
if [[ $info == *State=DOWN* && $info =~ Reason=Not\ responding\ \[[^@]*@([0-9T:-]+)\] ]]; then
    since=$(( $(date +%s) - $(date -d "${BASH_REMATCH[1]}" +%s) ))
    [ "$since" -lt 11 ] && sleep $(( 11 - since ))
fi
pid=$(cat "/run/slurmd-$node.pid" 2>/dev/null || true)
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmd ]; then
    kill -HUP "$pid"
fi
for _ in $(seq 1 60); do
    s=$(state)
    case "$s" in
        ""|*'*'|down*) sleep 0.5 ;;
        *) echo "cut-node: $node up ($veth), $s"; exit 0 ;;
    esac
done
echo "cut-node: $node up ($veth) but still ${s:-unknown} in Slurm after 30 s" >&2
exit 1
