import math
import os

import pytest
import torch

from resnetbk.training.optim import lr_scheduler_factory, param_groups, warmup_cosine


def test_schedule_shape():
    lrs = [warmup_cosine(s, 4, 20, 0.1) for s in range(20)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # no update at lr 0
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # monotone decay after warmup
    assert warmup_cosine(0, 0, 10, 0.0) == 1.0
    assert warmup_cosine(50, 4, 20, 0.1) == pytest.approx(0.1)  # past the end: stays at the floor


def test_scheduler_drives_the_optimizer_and_groups_split_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    groups = param_groups(model, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    opt = torch.optim.AdamW(groups, lr=2.0)
    sched = lr_scheduler_factory(2, 5, 0.5)(opt)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1.0, 2.0, 2.0, 1.5, 1.0])
    assert math.isclose(seen[3], 2.0 * warmup_cosine(3, 2, 5, 0.5))



def test_deepspeed_muon_stand_in_answers_not_muon_without_compiling(tmp_path):
    """The trainer replaces DeepSpeed's Muon modules (whose import runs torch.compile) before building the engine:
    DeepSpeed's ZeRO check still accepts torch's AdamW, nothing is a Muon instance, Muon's update refuses to run,
    and the real modules are never loaded."""
    import subprocess
    import sys

    script = """
import sys, torch
from resnetbk.training.workarounds import stand_in_for_deepspeed_muon
stand_in_for_deepspeed_muon()
import deepspeed.comm
deepspeed.comm.get_rank = lambda *a, **k: 0  # is_zero_supported_optimizer logs on rank 0 only
from deepspeed.runtime.zero.utils import is_zero_supported_optimizer
from deepspeed.runtime.zero.muon.muon_optimizer import MuonWithAuxAdam
from deepspeed.runtime.zero.muon.original_muon import muon_update
opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
assert is_zero_supported_optimizer(opt) and not isinstance(opt, MuonWithAuxAdam)
try:
    muon_update(None, None, 0.9)
    raise SystemExit("muon_update ran")
except RuntimeError as e:
    assert "not available" in str(e)
for name in ("original_muon", "muon_optimizer"):  # the real modules' import runs torch.compile
    assert getattr(sys.modules["deepspeed.runtime.zero.muon." + name], "__file__", None) is None, name
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          env={**os.environ, "DS_ACCELERATOR": "cpu"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
