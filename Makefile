# One command each: `make demo` (the main job) and `make test` (the tests). Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data/kjv

.PHONY: install demo data-kjv test tensorboard clean

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

# Tiny ResNet-BK on the embedded King James Bible: 2 CPU ranks, ZeRO-2, a few minutes.
demo: data-kjv
	DS_ACCELERATOR=cpu $(VENV)/bin/deepspeed --num_gpus 2 --module resnetbk.train --config configs/tiny.yaml

test: install
	$(PY) -m pytest -q

tensorboard: install
	$(VENV)/bin/tensorboard --logdir runs

clean:
	rm -rf runs data
