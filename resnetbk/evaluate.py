"""Validation loss over a packed shard directory, its bits per byte, and the unigram baseline it must beat.

Also a command: python -m resnetbk.evaluate EXPORT_DIR --data SHARD_DIR (perplexity and bits per byte of an
exported model).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Optional

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


def bits_per_byte(loss: float, dataset: PackedSequences, n_samples: int) -> Optional[float]:
    """Bits per UTF-8 byte of the validation text, comparable across tokenizers and corpora:

        bpb = loss x T / (ln 2 x B)

    loss: the mean next-token cross-entropy in nats over the T = n_samples x seq_len target tokens that
    evaluate() scored (the first n_samples windows, eval_sample_count); B: the UTF-8 bytes of text behind
    those targets, each shard's bytes per token times its evaluated targets (PackedSequences.target_bytes).
    EOS targets count in T and have no bytes of their own: ending a document is charged to its text.
    None when the shards carry no byte counts (written before data_prep recorded them)."""
    n_bytes = dataset.target_bytes(n_samples)
    if not n_bytes:
        return None
    return loss * n_samples * dataset.seq_len / (math.log(2) * n_bytes)


def main(argv=None) -> int:
    from data_prep.tokenizer import file_sha256

    from .config import ConfigError
    from .data import DataError, read_manifest
    from .exported import load_exported

    parser = argparse.ArgumentParser(prog="python -m resnetbk.evaluate",
                                     description="Perplexity of an exported model (python -m resnetbk.export) "
                                                 "on a shard directory.")
    parser.add_argument("export_dir")
    parser.add_argument("--data", required=True,
                        help="shard directory made with the same tokenizer (python -m data_prep)")
    parser.add_argument("--seq-len", type=int, help="window length (default: the model's max_seq_len)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batches", type=int, default=0, help="0: every window of the directory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        model, cfg, tokenizer = load_exported(args.export_dir, args.device)
        if file_sha256(tokenizer) != read_manifest(args.data)["tokenizer_sha256"]:
            raise ConfigError(f"--data: {args.data} was made with another tokenizer than {args.export_dir}")
        seq_len = args.seq_len or cfg.max_seq_len
        if not 1 <= seq_len <= cfg.max_seq_len:
            raise ConfigError(f"--seq-len: must be in [1, {cfg.max_seq_len}] (the model's max_seq_len)")
        data = PackedSequences(IndexedShards(args.data), seq_len)
        loss = evaluate(model, data, args.batch_size, args.device, args.max_batches)
    except (ConfigError, DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_samples = eval_sample_count(data, args.batch_size, 1, args.max_batches)
    result = {"export": args.export_dir, "data": args.data, "tokens": n_samples * seq_len, "loss": loss,
              "ppl": perplexity(loss)}
    bpb = bits_per_byte(loss, data, n_samples)
    if bpb is not None:
        result["bpb"] = bpb
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
