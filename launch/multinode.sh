#!/usr/bin/env bash
# Several nodes through the DeepSpeed launcher and a hostfile (one line per node: "hostname slots=GPUS").
#   HOSTFILE=hosts launch/multinode.sh configs/1b.yaml train.max_steps=10000
# Run it on the first host. The launcher reaches the others over passwordless ssh (pdsh when installed);
# every node needs this repository, its environment and the data at the same paths.
set -euo pipefail
config=${1:?usage: HOSTFILE=FILE launch/multinode.sh CONFIG.yaml [key=value ...]}; shift
hostfile=${HOSTFILE:?set HOSTFILE to a DeepSpeed hostfile (lines of \"hostname slots=N\")}
test -f "$hostfile" || { echo "error: HOSTFILE: $hostfile: file not found" >&2; exit 2; }
# World size = the sum of the slots, the number of ranks the launcher will start.
world=$(awk '!/^[[:space:]]*(#|$)/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) n = substr($i, 7); s += n } END { print s + 0 }' "$hostfile")
test "$world" -gt 0 || { echo "error: HOSTFILE: $hostfile names no slots (lines of \"hostname slots=N\")" >&2; exit 2; }
WORLD_SIZE="$world" "${PYTHON:-python}" -m resnetbk.train --dry-run --config "$config" "$@" >/dev/null
exec "${DEEPSPEED:-deepspeed}" --hostfile "$hostfile" --master_port "${MASTER_PORT:-29500}" \
    --module resnetbk.train --config "$config" "$@"
