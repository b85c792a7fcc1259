import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DS_ACCELERATOR", "cpu")  # these tests run DeepSpeed on CPU unless a GPU test says otherwise

import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Triton kernels then run on CPU tensors through Triton's interpreter; it must be set before
    # triton.jit decorates anything.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from resnetbk.training.engine import free_port  # noqa: E402
from resnetbk.training.workarounds import SHM_ALLREDUCE_BUFFER  # noqa: E402

# The fused Triton kernels against float64 PyTorch: largest error relative to the largest reference value, per dtype
# (tests/test_moe_triton.py, tests/test_norm_triton.py).
KERNEL_TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def close(got, want, dtype):
    """Whether got (any device) is within KERNEL_TOLERANCE[dtype] of the float64 reference want."""
    scale = want.abs().max().clamp(min=1e-12)
    return ((got.double().cpu() - want.cpu()).abs().max() / scale).item() < KERNEL_TOLERANCE[dtype]


def run_cli(args, timeout=900, env=None, cwd=ROOT):
    """Runs a command from the repository root; returns the CompletedProcess (text mode)."""
    full_env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def deepspeed_launcher(ranks: int = 2) -> list:
    """The deepspeed launcher for `ranks` CPU ranks on this host, on a port of its own: make test runs two pytest
    workers, and two launches on DeepSpeed's default port would collide."""
    return [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", str(ranks),
            "--master_port", str(free_port())]


def assert_one_line_error(proc, *fragments):
    """Bad input: non-zero exit, no traceback, exactly one line on stderr containing each fragment."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# Fixtures that launch training runs shared by several tests. Under pytest-xdist (make test runs two workers with
# --dist loadgroup) every test that uses one goes to the same worker, so that each is computed once.
SHARED_RUNS = ("strategy_runs", "reference")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        shared = [name for name in SHARED_RUNS if name in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


def pytest_collection_finish(session):
    """On a worker of --dist loadgroup: fail if the groups did not take. xdist 3.8 groups by appending "@group" to
    node ids, which pytest 9.2 ignores (pytest-dev/pytest-xdist#1386); every worker then computed the shared runs
    again, silently (measured: the 2-rank strategy fixture twice, about 200 s each)."""
    if getattr(session.config.option, "loadgroup", False):
        lost = [item.nodeid for item in session.items
                if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if lost:
            message = (f"error: pytest-xdist did not group {lost[0]} (and {len(lost) - 1} more): install the pytest "
                       f"version pyproject.toml names")
            print(message, file=sys.__stderr__, flush=True)  # what a worker raises reaches the terminal as a crash
            raise pytest.UsageError(message)


@pytest.fixture(scope="session")
def kjv_data(tmp_path_factory):
    """The embedded corpus, prepared once per session with a small vocabulary."""
    out = tmp_path_factory.mktemp("kjv")
    proc = run_cli([sys.executable, "-m", "data_prep", "kjv", "--out", str(out), "--vocab-size", "512"])
    assert proc.returncode == 0, proc.stderr
    return out


# The tiny ResNet-BK of configs/tiny.yaml made smaller still, for runs through the launcher.
TINY = ["model.d_model=64", "model.n_layers=2", "model.n_heads=4", "model.ffn_hidden=128", "model.vocab_size=512",
        "model.max_seq_len=64", "train.seq_len=64", "train.micro_batch=8", "optim.warmup_steps=4",
        "sample.max_new_tokens=8"]
# What the strategy runs below train: 12 steps of 16 sequences, every step logged, validation at the end.
STRATEGY_RUN = ["train.global_batch=16", "train.max_steps=12", "train.log_interval=1", "train.eval_interval=12",
                "sample.max_new_tokens=0"]
STRATEGIES = ["zero0", "zero1", "zero2", "zero3", "zero2-offload", "zero3-offload"]


def data_args(kjv):
    return [f"data.train={kjv}/train", f"data.val={kjv}/val", f"data.tokenizer={kjv}/tokenizer.model"]


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def cpu_strategy_json(directory, strategy, name):
    """ds_configs' CPU strategy, written to directory/<name>.json. ZeRO-3 gets stage3_param_persistence_threshold
    0: tiny weights would otherwise never be partitioned."""
    from resnetbk.training.profiles import strategy_config

    config = strategy_config("cpu", strategy)
    if config["zero_optimization"]["stage"] == 3:
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = directory / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def strategy_runs(kjv_data, tmp_path_factory):
    """The tiny ResNet-BK on 2 CPU ranks, fp32, same seed and data (STRATEGY_RUN), under each CPU strategy and under
    zero2 with activation checkpointing on every block: {name: (run directory, strategy JSON)}. zero2 and zero3 save
    at steps 6 and 12 (tests/test_export.py exports and resumes them); the others never save. One set of launches
    for both test modules: each 2-rank launch spends most of its time starting. Each launch must leave no
    DeepSpeed shared-memory buffer in /dev/shm."""
    tmp = tmp_path_factory.mktemp("strategies")
    runs = {}
    for name, strategy, extra in [*((s, s, []) for s in STRATEGIES),
                                  ("zero2+checkpointing", "zero2", ["train.activation_checkpoint_interval=1"])]:
        config, run_dir = cpu_strategy_json(tmp, strategy, name), tmp / name
        saves = 6 if name in ("zero2", "zero3") else -1
        launcher = deepspeed_launcher()
        proc = run_cli([*launcher, "--module", "resnetbk.train", "--config", "configs/tiny.yaml",
                        *data_args(kjv_data), *TINY, *STRATEGY_RUN, f"deepspeed.config={config}", *extra,
                        f"train.save_interval={saves}", f"run_dir={run_dir}"], env={"DEEPSPEED_TIMEOUT": "5"})
        assert proc.returncode == 0, f"{name}: " + proc.stdout[-3000:] + proc.stderr[-3000:]
        port = launcher[launcher.index("--master_port") + 1]
        left = glob.glob(f"{SHM_ALLREDUCE_BUFFER}_*_{port}_*")  # see train.unlink_shm_allreduce_buffer
        assert not left, f"{name}: the run left DeepSpeed's shared-memory buffers behind: {left}"
        runs[name] = (run_dir, config)
    return runs
