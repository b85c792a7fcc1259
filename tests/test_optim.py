import math

import pytest
import torch

from resnetbk.optim import lr_scheduler_factory, param_groups, warmup_cosine


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

