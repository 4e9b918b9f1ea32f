#!/bin/bash
# gen on several SLURM nodes: one task per node runs `accelerate launch`, which starts one process
# per GPU of its node (torchrun underneath) and meets the other nodes at the first node's address.
# From the project root (run.dir on a filesystem every node shares):
#
#   sbatch docs/slurm_multinode.sh configs/pix2pix/facades.yaml run.dir=runs/facades-2nodes
#
# Adapt the #SBATCH lines to your cluster (partition, account, GPUs per node). Submitting the same
# command again (same run.dir) resumes from the newest complete checkpoint; with --requeue SLURM does
# so by itself after a node failure or preemption. PROCS_PER_NODE (default: the node's GPUs, else 1),
# MAIN_PORT and OMP_NUM_THREADS may be set in the environment. See docs/multi_gpu.md.
#SBATCH --job-name=gen-multinode
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-.}"
NODES=${SLURM_NNODES:?run this with sbatch (SLURM_NNODES is not set)}
PROCS_PER_NODE=${PROCS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( ${SLURM_CPUS_PER_TASK:-8} / PROCS_PER_NODE ))}
echo "gen: $NODES nodes x $PROCS_PER_NODE processes, rendezvous at $MAIN_ADDR:$MAIN_PORT"

# One task per node; SLURM_NODEID (this node's rank) is read inside each task, hence the single
# quotes. --kill-on-bad-exit stops every node when one fails, so a resubmission restarts them all.
srun --kill-on-bad-exit=1 bash -c 'exec accelerate launch --multi_gpu \
    --num_machines "$0" --num_processes "$1" --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$2" --main_process_port "$3" train.py "${@:4}"' \
  "$NODES" "$((NODES * PROCS_PER_NODE))" "$MAIN_ADDR" "$MAIN_PORT" "$@"
