"""Bad input stops before any work: one line naming the key or file, non-zero exit, no traceback."""

import json
import sys
from types import SimpleNamespace

import pytest

from resnetbk.config import ConfigError, load_config

from conftest import assert_one_line_error, data_args, deepspeed_launcher, run_cli


def train(*args):
    return run_cli([sys.executable, "-m", "resnetbk.train", *args], timeout=120)


def train_here(capfd, *args):
    """resnetbk.train's entry point in this process, with what it wrote to stderr: the same checks as `train` without
    a new interpreter per case, which spent two seconds importing torch (test_missing_config_file and the launcher test
    keep the real command line covered)."""
    from resnetbk.train import main

    capfd.readouterr()
    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    return SimpleNamespace(returncode=code, stderr=capfd.readouterr().err)


@pytest.mark.parametrize("override,fragment", [
    ("model.d_modle=3", "model.d_modle"),
    ("train.max_steps=many", "train.max_steps"),
    ("model.arch=lstm", "model.arch"),
    ("train.seq_len=4096", "train.seq_len"),
    ("model.moe_top_k=9", "model.moe_top_k"),
    ("resume=/no/such/checkpoint", "resume"),
    ("run_dir=configs/tiny.yaml", "run_dir"),
    ("train.eval_interval=15", "train.eval_interval"),
    ("data.train=/no/such/dir", "/no/such/dir/manifest.json"),
    ("deepspeed.config=/no/such.json", "/no/such.json"),
    ("model.vocab_size=100", "model.vocab_size"),
    ("nonsense", "key=value"),
    ("data.train_weights=[1,2]", "data.train_weights"),
    ("data.tokenizer=configs/tiny.yaml", "not the tokenizer the shards were made with"),
    ("deepspeed.profile=h100", "no CUDA GPU"),
    ("deepspeed.strategy=zero3-nvme", "deepspeed.strategy"),
    ("deepspeed.strategy=zero3-offload-partial", "profile 'cpu' has no strategy 'zero3-offload-partial'"),
    ("train.save_interval=-2", "train.save_interval"),
    ("deepspeed.config=ds_configs/t4/zero2.json", "fp16 needs a CUDA GPU"),
    ("train.global_batch=24", "train.global_batch"),
    ("model.moe_ep_size=2", "model.moe_ep_size"),
    ("data.active.keep_fraction=0", "data.active.keep_fraction"),
    ("data.active.keep_fraction=1.5", "data.active.keep_fraction"),
    ("data.active.score=margin", "data.active.score"),
    ("data.curriculum.metric=perplexity", "data.curriculum.metric"),
    ("data.curriculum.seqlen_start=999", "data.curriculum.seqlen_start"),
    ("data.curriculum.start_percent=0", "data.curriculum.start_percent"),
    ("data.curriculum.metric=ref_loss", "data.curriculum.metric"),  # not written beside these shards
    ("data.active.score=reducible", "data.active.score"),  # needs ref_loss, which is not there either
])
def test_bad_overrides(capfd, kjv_data, override, fragment):
    data = data_args(kjv_data)
    assert_one_line_error(train_here(capfd, "--config", "configs/tiny.yaml", *data, override), fragment)


def test_under_the_launcher_only_rank_0_reports(kjv_data):
    data = data_args(kjv_data)
    proc = run_cli([*deepspeed_launcher(), "--module", "resnetbk.train", "--config", "configs/tiny.yaml", *data,
                    "train.global_batch=48"], timeout=300)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert errors == ["error: train.global_batch: 48 is not a multiple of micro-batch x ranks = 16 x 2"], \
        proc.stdout[-2000:] + proc.stderr[-2000:]


def test_dry_run_prints_the_resolved_deepspeed_config(kjv_data):
    data = data_args(kjv_data)
    proc = run_cli([sys.executable, "-m", "resnetbk.train", "--dry-run", "--config", "configs/tiny.yaml", *data,
                    "train.micro_batch=4", "train.global_batch=32"], env={"WORLD_SIZE": "2"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, rest = proc.stdout.split("\n", 1)
    assert "ds_configs/cpu/zero2.json" in first and "micro-batch 4 x accumulation 4 x 2" in first
    ds = json.loads(rest)
    assert ds["train_batch_size"] == 32 and ds["zero_optimization"]["stage"] == 2


def test_missing_config_file():
    assert_one_line_error(train("--config", "configs/nope.yaml"), "configs/nope.yaml")


@pytest.mark.parametrize("content,fragment", [
    ({"zero_optimisation": {"stage": 2}, "gradient_clipping": 1.0}, "zero_optimisation"),
    ({"optimizer": {"type": "Adam"}, "gradient_clipping": 1.0}, "optim"),
    ({"zero_optimization": {"stage": 2}}, "gradient_clipping"),
])
def test_bad_deepspeed_json(capfd, tmp_path, kjv_data, content, fragment):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(content))
    data = data_args(kjv_data)
    assert_one_line_error(train_here(capfd, "--config", "configs/tiny.yaml", *data, f"deepspeed.config={path}"),
                          str(path), fragment)


def test_shipped_configs_load():
    for name in ("configs/tiny.yaml", "configs/tiny-gpt.yaml"):
        cfg = load_config(name)
        assert cfg.train.seq_len <= cfg.model.max_seq_len


def test_load_config_types_and_overrides():
    cfg = load_config("configs/tiny.yaml", ["train.max_steps=7", "model.arch=gpt", "optim.warmup_steps=2"])
    assert cfg.train.max_steps == 7 and cfg.model.arch == "gpt"
    with pytest.raises(ConfigError, match="optim.warmup_steps"):
        load_config("configs/tiny.yaml", ["train.max_steps=7"])


def test_cuda_arch_list_suffix_is_removed(monkeypatch):
    import os

    from resnetbk.training.workarounds import fix_cuda_arch_list

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0a")
    fix_cuda_arch_list()
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0 9.0"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0+PTX")
    fix_cuda_arch_list()
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "9.0+PTX"


def test_a_stale_op_build_lock_is_reported_not_waited_on(capfd, monkeypatch, tmp_path, kjv_data):
    import os
    import time

    lock = tmp_path / "py311_cpu" / "cpu_adam" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    data = data_args(kjv_data)
    from resnetbk.training.workarounds import check_op_build_locks

    check_op_build_locks()  # a build running now holds a young lock: wait on it, as torch does
    hours_ago = time.time() - 3 * 3600
    os.utime(lock, (hours_ago, hours_ago))
    assert_one_line_error(train_here(capfd, "--config", "configs/tiny.yaml", *data, f"run_dir={tmp_path}/run"),
                          str(lock), "180 min ago")
