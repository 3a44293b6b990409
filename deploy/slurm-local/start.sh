#!/usr/bin/env bash
# Start a Slurm on this machine for tests and wait until its nodes are idle. Idempotent:
# running daemons are left alone. Needs root.
#
#   deploy/slurm-local/start.sh             # install if needed, configure, start, wait
#   deploy/slurm-local/stop.sh              # cancel jobs, stop the daemons, remove the network
#   deploy/slurm-local/cut-node.sh rmm-node2 down|up   # cut a node off the network and back
#
# Two compute nodes by default, as on a real cluster: munged and slurmctld run in the root
# network namespace, each slurmd in its own network and UTS namespace, so that a job sees
# its node's hostname and address, not the scheduler's:
#
#   root namespace    bridge rmm0 198.18.0.1/24        munged, slurmctld (SlurmctldHost=<host>(198.18.0.1))
#   netns rmm-node1   rmm0 198.18.0.11/24, hostname rmm-node1   slurmd -N rmm-node1   (veth rmmv1 on the bridge)
#   netns rmm-node2   rmm0 198.18.0.12/24, hostname rmm-node2   slurmd -N rmm-node2   (veth rmmv2 on the bridge)
#
# The interface is called rmm0 on both sides, so dask-jobqueue's `interface: rmm0` works for
# the scheduler (here) and the workers (in a node) alike. The nodes have no default route and
# no /etc/hosts entries: Slurm uses the NodeAddr IPs, and only 198.18.0.0/24 is reachable
# from a job. Files (mounts) are shared: the namespaces do not isolate them. The partition
# places a job on the least loaded node (LLN=YES): two worker jobs run on different nodes.
# Debian's Slurm is built with MULTIPLE_SLURMD (scontrol show config), so slurmd -N and %n
# in the slurmd file names (slurm.conf.in) are supported; both slurmd use the default port
# 6818, each in its own namespace.
#
# When network namespaces cannot be made (no CAP_NET_ADMIN, no bridge or veth support,
# traffic over the bridge filtered), or with RMM_SLURM_NETNS=0, it starts the single node
# `hostname -s` on the host instead, as before. What runs is told in /run/rmm-slurm-local/:
#   mode            `netns` or `single`
#   nodes           (netns only) one line per node: `rmm-node1 198.18.0.11`
#   netns-problem   (single only) one line: why there are no namespaced nodes
#
# start.sh also puts a node cut off by cut-node.sh back on the bridge.
#
# RMM_SLURM_CPUS is the number of CPUs each node declares (default 4 per node with two
# nodes, 8 for the single node): more than the real cores, so that several one-core Dask
# worker jobs run at once (SlurmdParameters=config_overrides). Each of the two nodes
# declares half the memory (less 1 GiB), the single node all of it (less 1 GiB).
# Logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd-<node>.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/install.sh"

run=/run/rmm-slurm-local
log=/var/log/slurm
controller=$(hostname -s)
bridge=rmm0
bridge_ip=198.18.0.1
nodes=(rmm-node1 rmm-node2)
node_ips=(198.18.0.11 198.18.0.12)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
want=netns
[ "${RMM_SLURM_NETNS:-1}" = 0 ] && want=single

# whether process $1 lives: exists and is no zombie (a daemon's first process exits at once,
# and a PID 1 that reaps slowly, as in some containers, leaves it a zombie for seconds)
alive() { grep -qs '^State:[[:space:]]*[^Z]' "/proc/$1/status"; }
# whether a live process is called $1
runs() {
    local pid
    for pid in $(pgrep -x "$1"); do alive "$pid" && return 0; done
    return 1
}

mkdir -p "$run" /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$log" /run/munge /var/lib/munge /var/log/munge /etc/munge

# the mode of a Slurm already running ("" when none runs)
running=""
if runs slurmctld; then
    running=$(cat "$run/mode" 2>/dev/null || echo single)
fi

problem=""
# Run a command; on failure remember it and its message as the problem (one line).
try() {
    local out
    if ! out=$("$@" 2>&1); then
        problem="\`$*\` failed: $(echo "$out" | tr '\n' ' ' | sed 's/ *$//')"
        return 1
    fi
}

# Whether TCP from namespace $1 ("" for the root namespace) to $2 gets an answer: a refused
# connection (nothing listens on port 9) is an answer, a timeout or "no route" is not.
answers() {
    local out
    out=$(${1:+ip netns exec "$1"} timeout 1 bash -c "exec 3<>/dev/tcp/$2/9" 2>&1) && return 0
    case "$out" in *refused*) return 0 ;; esac
    return 1
}

# Bridge, namespaces and veths (whatever already exists is kept); returns 1 with $problem set.
make_network() {
    local i ns ip
    [ "$(id -u)" = 0 ] || { problem="not root"; return 1; }
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        try ip link add "$bridge" type bridge || return 1
    fi
    try ip addr replace "$bridge_ip/24" dev "$bridge" || return 1
    try ip link set "$bridge" up || return 1
    for i in 0 1; do
        ns=${nodes[$i]} ip=${node_ips[$i]}
        if [ ! -e "/run/netns/$ns" ]; then
            try ip netns add "$ns" || return 1
        fi
        if ! ip link show "rmmv$((i + 1))" >/dev/null 2>&1; then
            ip -n "$ns" link del "$bridge" >/dev/null 2>&1 || true
            try ip link add "rmmv$((i + 1))" type veth peer name "rmmp$((i + 1))" netns "$ns" || return 1
            try ip -n "$ns" link set "rmmp$((i + 1))" name "$bridge" || return 1
        fi
        try ip link set "rmmv$((i + 1))" master "$bridge" up || return 1
        try ip -n "$ns" addr replace "$ip/24" dev "$bridge" || return 1
        try ip -n "$ns" link set "$bridge" up || return 1
        try ip -n "$ns" link set lo up || return 1
        try ip netns exec "$ns" unshare --uts true || return 1
    done
    # traffic over the bridge: root <-> nodes (INPUT/OUTPUT) and node <-> node (bridged, which
    # iptables' FORWARD chain sees when bridge-nf-call-iptables is 1, e.g. under Docker)
    local bad=""
    for _ in 1 2 3; do
        bad=""
        answers "" "${node_ips[0]}" || bad+=" $bridge_ip->${node_ips[0]}"
        answers "" "${node_ips[1]}" || bad+=" $bridge_ip->${node_ips[1]}"
        answers "${nodes[0]}" "$bridge_ip" || bad+=" ${node_ips[0]}->$bridge_ip"
        answers "${nodes[0]}" "${node_ips[1]}" || bad+=" ${node_ips[0]}->${node_ips[1]}"
        answers "${nodes[1]}" "${node_ips[0]}" || bad+=" ${node_ips[1]}->${node_ips[0]}"
        [ -z "$bad" ] && return 0
        # filtered: let the bridge's traffic through iptables (stop.sh removes these rules)
        if command -v iptables >/dev/null; then
            iptables -C INPUT -i "$bridge" -j ACCEPT 2>/dev/null || iptables -I INPUT -i "$bridge" -j ACCEPT 2>/dev/null || true
            iptables -C FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null || iptables -I FORWARD -i "$bridge" -o "$bridge" -j ACCEPT 2>/dev/null || true
        fi
        sleep 1
    done
    problem="no TCP answer over bridge $bridge (filtered? bridge-nf-call-iptables=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo n/a)):$bad"
    return 1
}

# The mode: netns if wanted and the network can be made, else single. The network is made
# first, next to a single node that may run, which then goes only if the nodes can replace
# it; a Slurm running in the other mode is stopped (stop.sh also removes the network).
mode=$want
if [ "$want" = single ]; then
    problem="RMM_SLURM_NETNS=0 forces the single node"
elif ! make_network; then
    mode=single
fi
if [ -n "$running" ] && [ "$running" != "$mode" ]; then
    echo "slurm: running with mode $running, $mode wanted: stopping it first"
    "$here/stop.sh"
    if [ "$mode" = netns ] && ! make_network; then
        mode=single
    fi
fi
if [ "$want" = netns ] && [ "$mode" = single ]; then
    echo "slurm: no network namespaces ($problem): the single node $controller instead" >&2
    "$here/stop.sh" --network-only >/dev/null 2>&1 || true   # what make_network made
fi

if [ "$mode" = netns ]; then
    cpus=${RMM_SLURM_CPUS:-4}
    node_mb=$(( mem_mb / 2 ))
    conf_nodes="NodeName=${nodes[0]} NodeAddr=${node_ips[0]} CPUs=$cpus RealMemory=$node_mb State=UNKNOWN
NodeName=${nodes[1]} NodeAddr=${node_ips[1]} CPUs=$cpus RealMemory=$node_mb State=UNKNOWN
PartitionName=debug Nodes=${nodes[0]},${nodes[1]} Default=YES MaxTime=INFINITE State=UP LLN=YES"
    conf_controller="$controller($bridge_ip)"
    wait_nodes=("${nodes[@]}")
else
    cpus=${RMM_SLURM_CPUS:-8}
    node_mb=$mem_mb
    conf_nodes="NodeName=$controller CPUs=$cpus RealMemory=$node_mb State=UNKNOWN
PartitionName=debug Nodes=$controller Default=YES MaxTime=INFINITE State=UP"
    conf_controller=$controller
    wait_nodes=("$controller")
fi

# munge: the daemon must run as user munge, with its directories owned by munge. Its socket
# (/run/munge/munge.socket.2) is a file, which the slurmd in a network namespace reach too.
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! runs munged; then
    runuser -u munge -- /usr/sbin/munged
fi

conf=$(awk -v controller="$conf_controller" -v nodes="$conf_nodes" \
    '{ gsub(/@CONTROLLER@/, controller); if ($0 == "@NODES@") $0 = nodes; print }' "$here/slurm.conf.in")
if [ "$conf" != "$(cat /etc/slurm/slurm.conf 2>/dev/null)" ]; then
    # the running daemons keep theirs (a slurmd reading a different one, e.g. on SIGHUP from
    # cut-node.sh, would not match slurmctld's)
    if runs slurmctld; then
        echo "slurm: the configuration changed (RMM_SLURM_CPUS?) but Slurm runs: kept /etc/slurm/slurm.conf; run stop.sh and start.sh to apply it" >&2
    else
        printf '%s\n' "$conf" > /etc/slurm/slurm.conf
    fi
fi
cp "$here/cgroup.conf" /etc/slurm/cgroup.conf

if ! runs slurmctld; then
    slurmctld
fi

# whether the slurmd of node $1 runs (its pid file names a live slurmd, in netns $2 if given)
slurmd_runs() {
    local pid
    pid=$(cat "/run/slurmd-$1.pid" 2>/dev/null) && [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = slurmd ] \
        && { [ -z "${2:-}" ] || [ "$(ip netns identify "$pid" 2>/dev/null)" = "$2" ]; }
}

if [ "$mode" = netns ]; then
    for node in "${nodes[@]}"; do
        mkdir -p "/var/spool/slurmd/$node"
        if ! slurmd_runs "$node" "$node"; then
            # own network namespace (ip netns exec) and own hostname (unshare --uts); slurmd
            # forks into the background, which stays in both namespaces
            ip netns exec "$node" unshare --uts sh -c "hostname $node && exec slurmd -N $node"
        fi
    done
    printf '%s %s\n' "${nodes[0]}" "${node_ips[0]}" "${nodes[1]}" "${node_ips[1]}" > "$run/nodes.tmp"
    mv "$run/nodes.tmp" "$run/nodes"
    rm -f "$run/netns-problem"
else
    mkdir -p "/var/spool/slurmd/$controller"
    if ! slurmd_runs "$controller" && ! runs slurmd; then
        slurmd
    fi
    echo "$problem" > "$run/netns-problem"
    rm -f "$run/nodes"
fi
echo "$mode" > "$run/mode"

# wait for the nodes to register and be idle (a node seen before may come back down)
declare -A ready=()
for _ in $(seq 1 120); do
    for node in "${wait_nodes[@]}"; do
        [ -n "${ready[$node]:-}" ] && continue
        state= node_cpus= node_mem= addr=
        read -r state node_cpus node_mem addr < <(sinfo -h -N -n "$node" -o '%t %c %m %o' 2>/dev/null) || true
        case "${state:-}" in
            idle|mix|alloc)
                ready[$node]=$state
                if [ "$mode" = netns ]; then
                    echo "slurm: node $node is $state at $addr ($node_cpus CPUs, $node_mem MB; netns $node)"
                else
                    echo "slurm: node $node is $state ($node_cpus CPUs, $node_mem MB; the single node on the host: $problem)"
                fi
                ;;
            down*|drain*|drng*) scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
        esac
    done
    [ "${#ready[@]}" = "${#wait_nodes[@]}" ] && exit 0
    sleep 0.5
done
for node in "${wait_nodes[@]}"; do
    [ -n "${ready[$node]:-}" ] || echo "slurm: node $node did not become idle; see $log/slurmctld.log and $log/slurmd-$node.log" >&2
done
tail -n 20 "$log/slurmctld.log" >&2 || true
for node in "${wait_nodes[@]}"; do tail -n 20 "$log/slurmd-$node.log" >&2 || true; done
exit 1
