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


def run_cli(args, timeout=900, env=None, cwd=ROOT):
    """Runs a command from the repository root; returns the CompletedProcess (text mode)."""
    full_env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *fragments):
    """Bad input: non-zero exit, no traceback, exactly one line on stderr containing each fragment."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def kjv_data(tmp_path_factory):
    """The embedded corpus, prepared once per session with a small vocabulary."""
    out = tmp_path_factory.mktemp("kjv")
    proc = run_cli([sys.executable, "-m", "data_prep", "kjv", "--out", str(out), "--vocab-size", "512"])
    assert proc.returncode == 0, proc.stderr
    return out
