#!/usr/bin/env bash
# The GPU runs behind docs/performance.md and docs/quality.md, one section per question, on a machine without a package
# index. Carry the wheels from `bash benchmarks/gpu_wheels.sh` (in .whl) and the
# prepared corpus data/kjv (`python -m data_prep kjv --out data/kjv`), then, from the repository root:
#   bash benchmarks/gpu_runs.sh strategies        # one GPU: each h100 strategy trains `small` for 50 steps
#   bash benchmarks/gpu_runs.sh largest           # one GPU: 1b, 3b under zero3-offload, a few steps
#   bash benchmarks/gpu_runs.sh largest7b         # one GPU: 7b as its preset says (zero3-offload-partial)
#   bash benchmarks/gpu_runs.sh multi             # all GPUs: zero2/zero3 weak scaling at 1, 2, 4.. GPUs
#   bash benchmarks/gpu_runs.sh multi-equal       # all GPUs: zero2/zero3 at 1 and N GPUs, equal global batch
#   bash benchmarks/gpu_runs.sh faults            # one GPU: start-up OOM retry; kill at step 17, resume, export
#   PRESETS=small bash benchmarks/gpu_runs.sh archs  # one GPU: ResNet-BK vs GPT tokens/s at N = 1k-16k
#     (then: python -m benchmarks.training.plot_throughput $OUT/arch_throughput_*.json --out arch.svg)
#   bash benchmarks/gpu_runs.sh response          # one GPU: BK kernel tests compiled, response kernel timings
#   bash benchmarks/gpu_runs.sh quality-kjv       # one GPU: the quality protocol on the KJV (d = 192; QUALITY_SIZE
#                                                      and QUALITY_OVERRIDES for others, docs/quality.md)
#   bash benchmarks/gpu_runs.sh quality-docs      # one GPU: the quality protocol on data/docs (make data-docs) at
#                                                      N = 1024, d = 384 and 6 layers unless QUALITY_OVERRIDES says
# Results (JSON) go to $OUT (default /tmp/out).
set -euo pipefail
OUT=${OUT:-/tmp/out}
export TORCH_CUDA_ARCH_LIST=9.0  # an image's 9.0a breaks DeepSpeed 0.19.8's op builder (training/workarounds.py)
mkdir -p "$OUT"
if [ -d .whl ]; then
  # Once per machine: sections started side by side must not install into the same folder at once.
  [ -d /tmp/site/deepspeed ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
fi
export PYTHONUNBUFFERED=1
KJV=(data.train=data/kjv/train data.val=data/kjv/val data.tokenizer=data/kjv/tokenizer.model)
NGPUS=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

for what in "$@"; do
  case $what in
    strategies)
      python3 -m benchmarks.training.ds_strategies --config configs/small.yaml --ngpus 1 --steps 50 \
        --strategies zero1,zero2,zero3,zero2-offload,zero3-offload --out "$OUT/strategies_h100.json" "${KJV[@]}" || true
      # NVMe offload needs DeepSpeed's async I/O op (libaio) and a local NVMe directory. Images without libaio:
      # carry Debian's libaio1 and libaio-dev .deb files in .aio/ (apt-get download libaio1 libaio-dev).
      if [ -d .aio ]; then
        mkdir -p /tmp/aio && for deb in .aio/*.deb; do dpkg -x "$deb" /tmp/aio; done
        aio_lib=/tmp/aio/usr/lib/x86_64-linux-gnu
        export CPATH=/tmp/aio/usr/include LIBRARY_PATH=$aio_lib LD_LIBRARY_PATH=$aio_lib:${LD_LIBRARY_PATH:-}
      fi
      mkdir -p /tmp/nvme
      python3 -m benchmarks.training.ds_strategies --config configs/small.yaml --ngpus 1 --steps 20 --strategies zero3-nvme \
        --out "$OUT/strategies_nvme.json" "${KJV[@]}" deepspeed.nvme_path=/tmp/nvme || true
      # CPU activation checkpointing (the t4 and rtx10 profiles) on CUDA: same loss as without.
      python3 - <<'EOF'
import json
from resnetbk.profiles import strategy_config
c = strategy_config("h100", "zero2"); c["activation_checkpointing"]["cpu_checkpointing"] = True
json.dump(c, open("/tmp/h100_zero2_cpuckpt.json", "w"))
EOF
      for ac in "deepspeed.config=/tmp/h100_zero2_cpuckpt.json train.activation_checkpoint_interval=1" \
                "deepspeed.strategy=zero2 train.activation_checkpoint_interval=0"; do
        deepspeed --num_gpus 1 --module resnetbk.train --config configs/small.yaml "${KJV[@]}" $ac train.max_steps=20 \
          train.log_interval=5 train.eval_interval=20 train.eval_max_batches=4 sample.max_new_tokens=0 \
          optim.warmup_steps=5 run_dir=/tmp/ac-${ac%% *} 2>&1 | grep -E "^step|error" || true
      done
      ;;
    largest)
      for preset in 1b 3b; do
        python3 -m benchmarks.training.ds_strategies --config configs/$preset.yaml --ngpus 1 --steps 6 --log-interval 2 \
          --strategies zero3-offload --out "$OUT/largest_$preset.json" "${KJV[@]}" train.seq_len=1024 || true
      done
      ;;
    largest7b)
      # The preset's own schedule (warmup 500: with a warmup of 2 the first Adam steps sent the loss from 11 to 34),
      # stopped by the time limit after about 8 steps; no checkpoint (it would be about 100 GB on a 64 GB disk).
      (while sleep 20; do echo "$(date +%T) host_used_GiB=$(free -g | awk '/Mem:/{print $3}')"; done) > "$OUT/largest_7b_memory.log" &
      monitor=$!
      timeout 400 deepspeed --num_gpus 1 --module resnetbk.train --config configs/7b.yaml "${KJV[@]}" train.max_steps=1000 \
        train.log_interval=1 train.eval_interval=1000 train.save_interval=-1 sample.max_new_tokens=0 run_dir=/tmp/largest7b \
        | grep -E "^step|error" || true
      kill "$monitor"; cp /tmp/largest7b/metrics.jsonl "$OUT/largest_7b_metrics.jsonl"
      ;;
    multi)
      # Weak scaling: micro-batch 64 per GPU, no accumulation, so the global batch grows with
      # the GPU count and each rank's work per step stays the same. Counts 1, 2, 4, .. up to the machine's.
      counts=1; n=2; while [ "$n" -le "$NGPUS" ]; do counts=$counts,$n; n=$((n * 2)); done
      python3 -m benchmarks.training.ds_strategies --config configs/small.yaml --ngpus "$counts" --steps 30 \
        --strategies zero2,zero3 --out "$OUT/weak_${NGPUS}gpu.json" "${KJV[@]}" train.micro_batch=64
      ;;
    multi-equal)
      # The same global batch at 1 and N GPUs (1 GPU accumulates), so the loss curves must agree (the earlier scaling
      # figures in docs/history were measured this way). Then DeepSpeed's MoE layer with experts split over the GPUs
      # (all-to-all over NCCL).
      python3 -m benchmarks.training.ds_strategies --config configs/small.yaml --ngpus "1,$NGPUS" --steps 30 \
        --strategies zero2,zero3 --out "$OUT/multi_${NGPUS}gpu.json" "${KJV[@]}" train.micro_batch=64 \
        train.global_batch=$((64 * NGPUS))
      python3 -m benchmarks.training.ds_strategies --config configs/small.yaml --ngpus "$NGPUS" --steps 50 --strategies zero2 \
        --out "$OUT/moe_ep_${NGPUS}gpu.json" "${KJV[@]}" model.moe_impl=deepspeed model.moe_ep_size="$NGPUS" \
        train.micro_batch=16 train.global_batch=$((16 * NGPUS)) || true
      ;;
    faults)
      # Start-up out of memory: a micro-batch far too large for one GPU; the trainer halves it until a step fits.
      deepspeed --num_gpus 1 --module resnetbk.train --config configs/small.yaml "${KJV[@]}" deepspeed.strategy=zero2 \
        train.micro_batch=512 train.global_batch=512 train.max_steps=6 train.log_interval=2 train.eval_interval=6 \
        train.eval_max_batches=2 sample.max_new_tokens=0 optim.warmup_steps=2 run_dir=/tmp/oom 2>&1 \
        | grep -E "out of memory|^step|error" | tee "$OUT/oom_h100.log" || true
      # Killed (SIGKILL, whole job) at step 17 of 30 and resumed; the export evaluated without DeepSpeed.
      python3 -m benchmarks.training.fault_drill --config configs/small.yaml --ngpus 1 --steps 30 --kill-at 17 \
        --out "$OUT/fault_drill_h100.json" "${KJV[@]}" deepspeed.strategy=zero2 train.micro_batch=16 \
        train.eval_max_batches=4 optim.warmup_steps=5 || true
      ;;
    archs)
      # ResNet-BK vs GPT at equal parameters, sequence lengths 1024-16384 (PRESETS=small,base by default;
      # one preset per call fits the device tool's 10-minute limit).
      python3 -m benchmarks.training.arch_throughput --presets "${PRESETS:-small,base}" --seq-lens 1024,2048,4096,16384 --steps 30 \
        --out "$OUT/arch_throughput_$(echo "${PRESETS:-small,base}" | tr , _).json" "${KJV[@]}" \
        data.val=data/kjv/train || true  # the held-out books are shorter than 16385 tokens each
      ;;
    response|kernel-tests)
      # DeepSpeed's FusedAdam builds (about 50 s) while the kernel tests run, so that later trainings find it.
      python3 -c 'from deepspeed.ops.op_builder import FusedAdamBuilder; FusedAdamBuilder().load()' \
        > "$OUT/fused_adam_build.log" 2>&1 &
      build=$!
      # The kernels compiled (the CPU-only tests of these files run through the interpreter elsewhere).
      python3 -m pytest -q -p no:cacheprovider tests/test_bk_response.py tests/test_cuda_graphs.py \
        -k "kernel or layout or depend or half or graphed_blocks_train" > "$OUT/gpu_tests.log" 2>&1 || true
      tail -3 "$OUT/gpu_tests.log"
      if [ "$what" = response ]; then
        python3 -m benchmarks.kernels.bk_core --response-only --quick --out "$OUT/bk_response.json" 2>&1 | tail -24 || true
      fi
      wait "$build" || { tail -5 "$OUT/fused_adam_build.log"; exit 1; }
      ;;
    archs-response)
      # The trainer with the response mixer against the diagonal one and GPT, small at N = 1024 and 8192.
      python3 -m benchmarks.training.arch_throughput --presets small --seq-lens "${SEQ_LENS:-1024,8192}" \
        --arms gpt,resnetbk-diagonal,resnetbk --steps 30 --out "$OUT/arch_response.json" "${KJV[@]}" \
        data.val=data/kjv/train ${ARCH_OVERRIDES:-} || true
      ;;
    quality-kjv)
      # Small models leave the GPU mostly idle: QUALITY_PARALLEL trainings share it. d = 192 (the tiny configs) and
      # d = 384 (6 layers, experts of width 1024), each arm at its best of three rates, three seeds, GPT in the run.
      P=${QUALITY_PARALLEL:-12}
      COMMON=(deepspeed.profile=auto deepspeed.strategy=zero2 train.micro_batch=32)
      # QUALITY_TIME_S bounds the call; the JSON holds every run finished by then (--reuse continues from it).
      # QUALITY_ARGS: more options (--arms, --reuse FILE, ...); QUALITY_OVERRIDES: config overrides for every arm.
      timeout "${QUALITY_TIME_S:-1800}" python3 -m benchmarks.quality.compare --parallel "$P" \
        --out "$OUT/quality_kjv_${QUALITY_SIZE:-d192}.json" ${QUALITY_ARGS:-} "${COMMON[@]}" \
        ${QUALITY_OVERRIDES:-} > "$OUT/quality_kjv_${QUALITY_SIZE:-d192}.log" 2>&1 || true
      tail -12 "$OUT/quality_kjv_${QUALITY_SIZE:-d192}.log"
      ;;
    quality-docs)
      # The Debian documentation corpus (8192-piece vocabulary) at N = 1024: 8 x 1024 tokens per step, 1200 steps
      # (9.8M tokens, about half an epoch) unless QUALITY_ARGS says otherwise.
      P=${QUALITY_PARALLEL:-8}
      COMMON=(deepspeed.profile=auto deepspeed.strategy=zero2 model.vocab_size=8192 model.max_seq_len=1024
              train.seq_len=1024 train.micro_batch=8 train.eval_max_batches=40)
      timeout "${QUALITY_TIME_S:-1800}" python3 -m benchmarks.quality.compare --data data/docs --steps 1200 \
        --parallel "$P" --out "$OUT/quality_docs_${QUALITY_SIZE:-d384}.json" ${QUALITY_ARGS:-} "${COMMON[@]}" \
        ${QUALITY_OVERRIDES:-model.d_model=384 model.n_layers=6 model.ffn_hidden=1024} \
        > "$OUT/quality_docs_${QUALITY_SIZE:-d384}.log" 2>&1 || true
      tail -12 "$OUT/quality_docs_${QUALITY_SIZE:-d384}.log"
      ;;
    *) echo "unknown section '$what' (strategies, largest, largest7b, multi, multi-equal, faults, archs, response, kernel-tests, archs-response, quality-kjv, quality-docs)" >&2; exit 2 ;;
  esac
done
