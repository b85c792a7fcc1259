"""CUDA graphs for the decoder blocks, through torch.cuda.make_graphed_callables.

On one GPU at N = 1024 the training step was host-bound: the GPU sat idle while Python launched kernels, and
a ResNet-BK block launches about three times as many as a GPT block (docs/performance.md). A graphed block
replays its forward as one CUDA graph and its backward as another, so its host cost no longer grows with the
number of kernels it runs. The embedding, LM head, loss and DeepSpeed's gradient hooks stay eager.

A graph replays fixed kernels on fixed addresses, so graphed blocks need:
- one input shape: the training micro-batch x sequence length given at capture; any other shape (a curriculum
  window, a micro-batch halved after running out of memory, evaluation) runs the block's ordinary forward;
- parameters that stay where they are: true for ZeRO-1/2, whose flat buffers the optimizer updates in place
  (capture after deepspeed.initialize), not for ZeRO-3, which gathers and frees them around every block;
- no host synchronisation inside a block (graph_blocks_unsupported lists what has one).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..models.registry import uses_moe


def graph_blocks_unsupported(model_cfg, *, on_cuda: bool, zero_stage: int, checkpointing: bool,
                             dtype: torch.dtype, capability: tuple = (0, 0)) -> Optional[str]:
    """Why the blocks of this run cannot be graphed, or None when they can."""
    if not on_cuda:
        return "no CUDA device"
    if zero_stage == 3:
        return "ZeRO-3 gathers and frees each block's parameters around it"
    if checkpointing:
        return "activation checkpointing recomputes blocks in backward"
    if model_cfg.dropout > 0:
        return "model.dropout > 0 (graphed random masks are untested here)"
    if uses_moe(model_cfg):
        if model_cfg.moe_impl != "native":
            return "DeepSpeed's MoE layer reads expert capacities back to the host"
        if dtype != torch.bfloat16 or capability < (8, 0):
            return ("the MoE's per-expert path (used unless bf16 on compute capability >= 8.0) reads group sizes "
                    "to the host")
    return None


def graph_blocks(model, micro_batch: int, seq_len: int) -> Callable[[], None]:
    """Capture every block of `model` (a CausalLM on a GPU) for training inputs of shape
    (micro_batch, seq_len, d_model). Call after deepspeed.initialize: the graphs read the parameters at the
    addresses they have then. Returns a function that puts the eager blocks back and lets the graphs go."""
    blocks = tuple(model.blocks)
    first = next(model.parameters())
    shape = torch.Size((micro_batch, seq_len, model.cfg.d_model))
    # Each block is captured as a function of its input and of leaf tensors sharing its parameters' memory, and
    # called with the parameters themselves. Capturing the gradients of the parameters directly failed under
    # DeepSpeed (torch 2.11): autograd made the default stream wait on the capture stream, which CUDA forbids.
    functions, samples, params = [], [], []
    for block in blocks:
        names, weights = zip(*block.named_parameters())
        aliases = tuple(w.detach().requires_grad_(w.requires_grad) for w in weights)
        functions.append(lambda x, *ws, block=block, names=names:
                         torch.func.functional_call(block, dict(zip(names, ws)), (x,)))
        # Zeros: a valid input (RMSNorm maps it to zeros) that leaves the random number generators alone.
        samples.append((torch.zeros(shape, dtype=first.dtype, device=first.device, requires_grad=True), *aliases))
        params.append(weights)
    # The graphed forward skips the Python body, so the statistics the trainer logs are computed on every
    # step (a few reductions) rather than only when record_stats is set.
    model.record_stats(True)
    graphed = torch.cuda.make_graphed_callables(tuple(functions), tuple(samples))
    model.record_stats(False)
    hooks = []
    for block, graphed_block, weights in zip(blocks, graphed, params):
        block.forward = _graphed_forward(block, shape, graphed_block, weights, block.forward)
        for w in weights:
            # A graphed backward returns its parameter gradients in the graph's own buffers, and autograd keeps
            # such a tensor as param.grad; the next replay would overwrite an accumulated gradient in place
            # (pytorch/pytorch#181723). A copy costs one pass over the block's gradients.
            hooks.append(w.register_hook(torch.clone))

    def release() -> None:
        for block in blocks:
            del block.forward  # the instance attribute set above: the class's forward again
        for hook in hooks:
            hook.remove()

    return release


def _graphed_forward(block, shape: torch.Size, graphed_block, weights, eager_forward):
    """The graphs in training mode at the captured shape; the block's own forward otherwise (evaluation,
    generation, a curriculum window, a halved micro-batch)."""
    def forward(x):
        if block.training and x.shape == shape:
            return graphed_block(x, *weights)
        return eager_forward(x)
    return forward
