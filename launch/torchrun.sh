#!/usr/bin/env bash
# One node through torchrun instead of the DeepSpeed launcher (the trainer reads RANK/WORLD_SIZE/LOCAL_RANK).
#   NGPUS=4 launch/torchrun.sh configs/tiny.yaml
set -euo pipefail
config=${1:?usage: launch/torchrun.sh CONFIG.yaml [key=value ...]}; shift
# Check config, data, batch sizes and the DeepSpeed strategy once, before any rank starts.
WORLD_SIZE="${NGPUS:-1}" "${PYTHON:-python}" -m resnetbk.train --dry-run --config "$config" "$@" >/dev/null
exec "${TORCHRUN:-torchrun}" --standalone --nproc_per_node "${NGPUS:-1}" -m resnetbk.train --config "$config" "$@"
