#!/usr/bin/env bash
# Cancel every job and stop the single-node Slurm started by start.sh.
set -u
if command -v scancel >/dev/null && pgrep -x slurmctld >/dev/null; then
    scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null || true
    for _ in $(seq 1 20); do
        [ -z "$(squeue -h 2>/dev/null)" ] && break
        sleep 0.5
    done
fi
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
pkill -x munged 2>/dev/null || true
echo "slurm: stopped"
