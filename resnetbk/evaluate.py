"""Validation loss over a packed shard directory, and the unigram baseline it must beat."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .data import IndexedShards, PackedSequences, eval_batches


def eval_sample_count(dataset: PackedSequences, micro_batch: int, world: int, max_batches: int) -> int:
    """How many validation windows an evaluation covers (all of them when max_batches is 0)."""
    return len(dataset) if not max_batches else min(len(dataset), max_batches * micro_batch * world)


@torch.no_grad()
def evaluate(model, dataset: PackedSequences, micro_batch: int, device, max_batches: int = 0) -> float:
    """Mean next-token cross-entropy (nats) over the validation windows, identical on every rank.

    `model` is the DeepSpeed engine or a plain module; every rank runs the same number of forwards.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, number of tokens)
    for indices, n_valid in eval_batches(len(dataset), micro_batch, rank, world, max_batches):
        x, y = dataset.batch(indices)
        logits = model(x.to(device))
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), reduction="none")
        total[0] += losses.view(y.shape)[:n_valid].sum().double()
        total[1] += n_valid * y.shape[1]
    if dist.is_initialized():
        dist.all_reduce(total)
    model.train(was_training)
    return float(total[0] / total[1])


def unigram_loss(train: list[IndexedShards], dataset: PackedSequences, n_samples: int) -> float:
    """Cross-entropy (nats/token) of a unigram model fitted on the training shards (add-one smoothing),
    on exactly the target tokens that evaluate() scores for the first n_samples windows."""
    counts = sum(t.token_counts() for t in train).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    total = 0.0
    for k in range(n_samples):
        total -= log_p[dataset.window(k)[1:]].sum()
    return total / (n_samples * dataset.seq_len)


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))
