#!/usr/bin/env bash
# Cancel every job and stop the Slurm started by start.sh: the slurmd (in the node network
# namespaces too), slurmctld and munged; then remove the namespaces rmm-node1/2, their veths
# and the bridge rmm0, and /run/rmm-slurm-local/{mode,nodes,netns-problem}. Idempotent, and
# never fails (CI runs it in a trap).
#
#   deploy/slurm-local/stop.sh                  # everything
#   deploy/slurm-local/stop.sh --network-only   # only the namespaces (and what runs in them), veths, bridge
set -u
nodes=(rmm-node1 rmm-node2)
run=/run/rmm-slurm-local

# whether process $1 lives: exists and is no zombie (which a slowly reaping PID 1 may keep)
alive() { grep -qs '^State:[[:space:]]*[^Z]' "/proc/$1/status"; }
# pids of the live processes called $1
live() {
    local pid
    for pid in $(pgrep -x "$1"); do alive "$pid" && echo "$pid"; done
}

network_only=""
[ "${1:-}" = --network-only ] && network_only=1

if [ -z "$network_only" ] && command -v scancel >/dev/null && [ -n "$(live slurmctld)" ]; then
    jobs=$(squeue -h -o %i 2>/dev/null)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        scancel --full --quiet $jobs 2>/dev/null || true
        for _ in $(seq 1 20); do
            [ -z "$(squeue -h 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

# Send TERM to the given pids, wait up to 10 s for them to exit, then KILL what is left.
stop_pids() {
    local pid left
    [ $# -gt 0 ] || return 0
    kill "$@" 2>/dev/null
    for _ in $(seq 1 50); do
        left=""
        for pid in "$@"; do alive "$pid" && left+=" $pid"; done
        [ -z "$left" ] && return 0
        sleep 0.2
    done
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null
    sleep 0.2
}

# pids from the pid files $@ that still name a process called $daemon
pids_of() {
    local daemon=$1 file pid
    shift
    for file in "$@"; do
        pid=$(cat "$file" 2>/dev/null) || continue
        [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$daemon" ] && echo "$pid"
    done
}

# at once (each takes 1-2 s to exit): the slurmd of the nodes and everything else left in
# their namespaces (jobs), any other slurmd, slurmctld and munged
if [ -z "$network_only" ]; then
    ns_pids=()
    for ns in "${nodes[@]}"; do
        [ -e "/run/netns/$ns" ] && mapfile -t -O "${#ns_pids[@]}" ns_pids < <(ip netns pids "$ns" 2>/dev/null)
    done
    # shellcheck disable=SC2046
    stop_pids "${ns_pids[@]}" $(pids_of slurmd /run/slurmd-*.pid /run/slurmd.pid) $(live slurmd) \
        $(pids_of slurmctld /run/slurmctld.pid) $(live slurmctld) $(pids_of munged /run/munge/munged.pid) $(live munged)
fi

# the network: deleting a namespace deletes the veth end in it, and so its peer on the bridge
for i in 1 2; do
    ns=${nodes[$((i - 1))]}
    if [ -e "/run/netns/$ns" ]; then
        # shellcheck disable=SC2046
        stop_pids $(ip netns pids "$ns" 2>/dev/null)
        ip netns del "$ns" 2>/dev/null || true
    fi
    ip link del "rmmv$i" 2>/dev/null || true
done
ip link del rmm0 2>/dev/null || true
if command -v iptables >/dev/null; then
    # rules start.sh adds when the bridge's traffic is filtered
    while iptables -D INPUT -i rmm0 -j ACCEPT 2>/dev/null; do :; done
    while iptables -D FORWARD -i rmm0 -o rmm0 -j ACCEPT 2>/dev/null; do :; done
fi
if [ -z "$network_only" ]; then
    rm -f "$run/mode" "$run/nodes" "$run/netns-problem"
    echo "slurm: stopped"
else
    echo "slurm: network removed"
fi
exit 0
