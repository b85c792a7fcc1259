#!/usr/bin/env bash
# One node through torchrun instead of the DeepSpeed launcher (the trainer reads RANK/WORLD_SIZE/LOCAL_RANK).
#   NGPUS=4 launch/torchrun.sh configs/tiny.yaml
set -euo pipefail
config=${1:?usage: launch/torchrun.sh CONFIG.yaml [key=value ...]}; shift
exec "${TORCHRUN:-torchrun}" --standalone --nproc_per_node "${NGPUS:-1}" -m resnetbk.train --config "$config" "$@"
