# One command each: `make demo` (the main job) and `make test` (the tests). Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/kjv

VOCAB ?= 32000
WORKERS ?= $(shell nproc)

.PHONY: install demo data-kjv data-c4 data-pile test tensorboard clean

install: $(VENV)/.installed

# torch is installed first, alone, so pip takes the pinned CPU wheel where the machine has one on disk.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

data-kjv: install
	$(PY) -m data_prep kjv --out $(DATA)

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

# Tiny ResNet-BK on the embedded King James Bible: 2 CPU ranks, ZeRO-2, a few minutes.
demo: data-kjv
	DS_ACCELERATOR=cpu $(VENV)/bin/deepspeed --num_gpus 2 --module resnetbk.train --config configs/tiny.yaml

test: install
	$(PY) -m pytest -q

tensorboard: install
	$(VENV)/bin/tensorboard --logdir runs

clean:
	rm -rf runs data
