#!/usr/bin/env bash
# One SLURM task = one rank: SLURM's variables -> the torch.distributed environment, then the trainer.
set -euo pipefail
export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID
export LOCAL_WORLD_SIZE=${SLURM_NTASKS_PER_NODE:-$SLURM_NTASKS}
export LOCAL_WORLD_SIZE=${LOCAL_WORLD_SIZE%%(*}  # SLURM writes "8(x2)" for 8 tasks on each of 2 nodes
: "${MASTER_ADDR:?MASTER_ADDR is set by launch/slurm.sbatch}" "${MASTER_PORT:=29500}"
export MASTER_PORT
exec "${PYTHON:-python}" -m resnetbk.train "$@"
