# One command each: `make demo` (the main job) and `make test` (the tests). Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/kjv

VOCAB ?= 32000
WORKERS ?= $(shell nproc)

.PHONY: install cpu-ops demo data-kjv data-docs data-c4 data-pile test lint tensorboard clean tiny small base 1b 3b 7b

install: $(VENV)/.installed

# torch is installed first, alone, so pip takes the pinned CPU wheel where the machine has one on disk.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,plot]'
	touch $@

# torch compiles DeepSpeed's CPU ops (CPUAdam, the shared-memory allreduce) on first use, under a lock file that a
# process killed mid-build leaves behind for every later run to wait on. Here they are built once, by one process,
# into this venv's own directory (no lock or build from another venv or torch version), before any rank starts.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions
cpu-ops: $(VENV)/.cpu-ops
$(VENV)/.cpu-ops: $(VENV)/.installed
	DS_ACCELERATOR=cpu $(PY) -c 'from deepspeed.accelerator import get_accelerator as a; \
	    [a().create_op_builder(op).load() for op in ("CPUAdamBuilder", "ShareMemCommBuilder")]'
	touch $@

data-kjv: install
	$(PY) -m data_prep kjv --out $(DATA)

# Real text offline: English documentation from 31 pinned Debian packages (apt-get download into data/debian-cache,
# never installed), 75 MB of text, 21.3M training tokens in data/docs (README.md, Data).
data-docs: install
	$(PY) -m data_prep debian-docs --out data/docs --cache data/debian-cache --workers $(WORKERS)

# C4 / The Pile: a tokenizer trained on a sample, then shards. Quote the globs:
#   make data-c4 C4='/data/c4/en/c4-train.*.json.gz'     make data-pile PILE='/data/pile/train/*.jsonl.zst'
data-c4: install
	@test -n "$(C4)" || { echo "error: set C4='glob of c4-*.json.gz files'" >&2; exit 2; }
	test -f data/c4/tokenizer.model || $(PY) -m data_prep tokenizer --format c4 --input '$(C4)' --vocab-size $(VOCAB) --out data/c4/tokenizer.model
	$(PY) -m data_prep shards --format c4 --input '$(C4)' --tokenizer data/c4/tokenizer.model --out data/c4 --workers $(WORKERS)

data-pile: install
	@test -n "$(PILE)" || { echo "error: set PILE='glob of *.jsonl.zst files'" >&2; exit 2; }
	test -f data/pile/tokenizer.model || $(PY) -m data_prep tokenizer --format pile --input '$(PILE)' --vocab-size $(VOCAB) --out data/pile/tokenizer.model
	$(PY) -m data_prep shards --format pile --input '$(PILE)' --tokenizer data/pile/tokenizer.model --out data/pile --workers $(WORKERS)

# Tiny ResNet-BK on the embedded King James Bible: 2 CPU ranks, ZeRO-2, a few minutes (the `tiny` scale).
demo: tiny

# One target per scale, each a model preset (configs/<scale>.yaml) with its DeepSpeed profile and strategy:
#   make small                     one node, every GPU nvidia-smi lists, profile autodetected from the GPU
#   make 1b NGPUS=4 PROFILE=a100   override the GPU count or the profile
#   make 7b HOSTFILE=hosts         several nodes (lines of "hostname slots=N"; passwordless ssh)
#   make base ARGS='train.max_steps=5000 run_dir=runs/base-long'
# `tiny` runs on 2 CPU ranks and the embedded corpus; the others read data/c4 (make data-c4) and keep
# the strategy their preset names (zero3-offload for 3b, zero3-offload-partial for 7b).
GPUS_FOUND := $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
NGPUS ?= $(if $(filter 0,$(GPUS_FOUND)),1,$(GPUS_FOUND))
LAUNCH_ENV = PATH=$(CURDIR)/$(VENV)/bin:$$PATH PYTHON=$(CURDIR)/$(PY) NGPUS=$(NGPUS) HOSTFILE=$(HOSTFILE)
LAUNCH = $(if $(HOSTFILE),launch/multinode.sh,launch/local.sh)
PROFILE_ARG = $(if $(PROFILE),deepspeed.profile=$(PROFILE))

tiny: data-kjv cpu-ops
	DS_ACCELERATOR=cpu $(LAUNCH_ENV) NGPUS=2 launch/local.sh configs/tiny.yaml $(ARGS)

small base 1b 3b 7b: install
	$(LAUNCH_ENV) $(LAUNCH) configs/$@.yaml $(PROFILE_ARG) $(ARGS)

# Two pytest workers (TEST_WORKERS=1 for one, more on machines with more cores; on 2 cores the tests took 6 min 17 s
# with two, 7 min 48 s with one). --dist loadgroup keeps the tests of one shared training run on one worker
# (tests/conftest.py).
TEST_WORKERS ?= 2
test: cpu-ops
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# ruff with the settings in pyproject.toml (line length 120); the tests run it too (tests/test_lint.py).
lint: install
	$(VENV)/bin/ruff check .

tensorboard: install
	$(VENV)/bin/tensorboard --logdir runs

clean:
	rm -rf runs data
