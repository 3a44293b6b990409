#!/usr/bin/env bash
# Install what start.sh needs from Debian's packages, when missing (needs root; ~15 s, nothing
# when all is there): Slurm (slurmctld, slurmd, the client commands) and munge; ip (iproute2:
# bridge, veth, network namespaces), unshare and runuser (util-linux), pgrep (procps).
set -euo pipefail
need=()
if ! { command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged; } >/dev/null; then
    need+=(slurmctld slurmd slurm-client munge)
fi
command -v ip >/dev/null || need+=(iproute2)
{ command -v unshare && command -v runuser; } >/dev/null || need+=(util-linux)
command -v pgrep >/dev/null || need+=(procps)
[ ${#need[@]} = 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
