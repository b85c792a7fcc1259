#!/usr/bin/env bash
# One node, N processes, through the DeepSpeed launcher.
#   NGPUS=8 launch/local.sh configs/tiny.yaml train.max_steps=1000
# Without CUDA, set DS_ACCELERATOR=cpu: each "GPU" is then a CPU rank (gloo).
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG.yaml [key=value ...]}; shift
# Check config, data, batch sizes and the DeepSpeed strategy once, before any rank starts.
WORLD_SIZE="${NGPUS:-1}" "${PYTHON:-python}" -m resnetbk.train --dry-run --config "$config" "$@" >/dev/null
exec "${DEEPSPEED:-deepspeed}" --num_gpus "${NGPUS:-1}" --module resnetbk.train --config "$config" "$@"
