"""Runs resnetbk.train with faults injected into the model's training forward (test helper, not product code).

    python tests/fault_injection.py --config ... key=value ...

Environment:
    FAULT_NAN_CALLS   comma-separated training-forward call numbers (1-based) whose loss is made NaN, or "N-" for
                      every call from N on
    FAULT_OOM_ABOVE   raise torch.OutOfMemoryError from a training forward whose batch is larger than this
    FAULT_GRAPHS      "oom": the trainer's CUDA-graph capture succeeds without capturing anything (so it runs on
                      CPU), and every training forward raises torch.OutOfMemoryError while those graphs are held
"""

import os
import sys

import torch

from resnetbk.models import decoder as model_module
from resnetbk.train import main
from resnetbk.training import cuda_graphs

original_forward = model_module.CausalLM.forward
calls = 0
graphs_held = False


def fake_graph_blocks(model, micro_batch, seq_len):
    global graphs_held
    graphs_held = True

    def release():
        global graphs_held
        graphs_held = False

    return release


def nan_call(n: int) -> bool:
    spec = os.environ.get("FAULT_NAN_CALLS", "")
    for part in filter(None, spec.split(",")):
        if part.endswith("-") and n >= int(part[:-1]):
            return True
        if part.isdigit() and n == int(part):
            return True
    return False


def faulty_forward(self, idx, targets=None):
    global calls
    if targets is None or not self.training:
        return original_forward(self, idx, targets)
    limit = os.environ.get("FAULT_OOM_ABOVE")
    if limit is not None and idx.shape[0] > int(limit):
        raise torch.OutOfMemoryError(f"injected: batch {idx.shape[0]} > {limit}")
    if graphs_held:
        raise torch.OutOfMemoryError("injected: CUDA graphs held")
    calls += 1
    out = original_forward(self, idx, targets)
    if nan_call(calls):
        out = out._replace(loss=out.loss * float("nan"))
    return out


model_module.CausalLM.forward = faulty_forward
if os.environ.get("FAULT_GRAPHS") == "oom":
    cuda_graphs.graph_blocks_unsupported = lambda *args, **kwargs: None
    cuda_graphs.graph_blocks = fake_graph_blocks
sys.exit(main(sys.argv[1:]))
