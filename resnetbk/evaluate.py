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


@torch.no_grad()
def loss_by_position(model, dataset: PackedSequences, micro_batch: int, device, max_batches: int = 0) -> np.ndarray:
    """Mean next-token cross-entropy (nats) at each position 0..seq_len-1 of the windows (one process)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(dataset.seq_len, dtype=torch.float64, device=device)
    count = 0
    for indices, n_valid in eval_batches(len(dataset), micro_batch, 0, 1, max_batches):
        x, y = dataset.batch(indices)
        logits = model(x.to(device))
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), reduction="none")
        total += losses.view(y.shape)[:n_valid].sum(0).double()
        count += n_valid
    model.train(was_training)
    return (total / max(count, 1)).cpu().numpy()


@torch.no_grad()
def evaluate_with_exits(model, dataset: PackedSequences, threshold: float, device, max_windows: int = 0) -> dict:
    """Teacher-forced incremental decoding with early exits (models/decoder.py: decode's exit_threshold), one window
    at a time so that each token decides for itself: the mean loss of the logits each step used and the blocks it ran
    in full, per token. The first token of each window is prefilled at full depth."""
    model.eval()
    n = len(dataset) if not max_windows else min(len(dataset), max_windows)
    total, count, layers, steps = 0.0, 0, 0, 0
    for k in range(n):
        x, y = dataset.batch(np.array([k]))
        x, y = x.to(device), y.to(device)
        logits, state = model.prefill(x[:, :1])
        step_logits = [logits]
        for i in range(1, x.shape[1]):
            logits, state = model.decode(x[:, i:i + 1], state, exit_threshold=threshold)
            step_logits.append(logits)
        logits = torch.cat(step_logits, dim=1)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
        layers += state.layers + len(model.blocks)  # the prefilled first token ran every block
        steps += state.steps + 1
    return {"loss": total / count, "ppl": perplexity(total / count), "layers_per_token": layers / steps,
            "windows": n, "tokens": count}


def length_buckets(train_len: int, multiples: list) -> list:
    """Position buckets [0, S), [S, 2S), [2S, 4S), ... for the training length S, up to the largest multiple."""
    edges = [0] + [m * train_len for m in sorted(set(multiples))]
    return list(zip(edges[:-1], edges[1:]))


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
    from .models import registry

    parser = argparse.ArgumentParser(prog="python -m resnetbk.evaluate",
                                     description="Perplexity of an exported model (python -m resnetbk.export) "
                                                 "on a shard directory.")
    parser.add_argument("export_dir")
    parser.add_argument("--data", required=True,
                        help="shard directory made with the same tokenizer (python -m data_prep)")
    parser.add_argument("--seq-len", type=int, help="window length, or the training length that --lengths multiplies "
                                                     "(default: the model's max_seq_len)")
    parser.add_argument("--lengths", help="multiples of --seq-len, e.g. 1,2,4,8: the loss per position bucket "
                                          "([0, S), [S, 2S), [2S, 4S), ...) in windows of each length")
    parser.add_argument("--exit-threshold", type=float,
                        help="evaluate with early exits at this confidence (a model trained with model.exit_layers; "
                             "windows one at a time)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-batches", type=int, default=0, help="0: every window of the directory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        for name, ok in (("--batch-size", args.batch_size >= 1), ("--max-batches", args.max_batches >= 0),
                         ("--seq-len", args.seq_len is None or args.seq_len >= 1)):
            if not ok:
                raise ConfigError(f"{name}: out of range (see --help)")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: no CUDA GPU here (use --device cpu)")
        try:
            multiples = sorted({int(m) for m in args.lengths.split(",")}) if args.lengths else []
        except ValueError:
            raise ConfigError(f"--lengths: '{args.lengths}' is not a list of whole numbers such as 1,2,4,8") from None
        if any(m < 1 for m in multiples):
            raise ConfigError("--lengths: multiples must be >= 1")
        model, cfg, tokenizer = load_exported(args.export_dir, args.device)
        if file_sha256(tokenizer) != read_manifest(args.data)["tokenizer_sha256"]:
            raise ConfigError(f"--data: {args.data} was made with another tokenizer than {args.export_dir}")
        table = registry.get(cfg.arch).position_table  # a learned position table caps the length
        seq_len = args.seq_len or cfg.max_seq_len
        if table and seq_len > cfg.max_seq_len:
            raise ConfigError(f"--seq-len: at most {cfg.max_seq_len} (the model's position table)")
        if args.exit_threshold is not None and not cfg.exit_layers:
            raise ConfigError(f"--exit-threshold: {args.export_dir} has no early exits (model.exit_layers is empty)")
        shards = IndexedShards(args.data)
        if args.exit_threshold is not None:
            data = PackedSequences(shards, seq_len)
            result = evaluate_with_exits(model, data, args.exit_threshold, args.device,
                                         args.max_batches * args.batch_size)
            result["exit_threshold"] = args.exit_threshold
        elif multiples:
            result = by_length(model, cfg, shards, seq_len, multiples, table, args)
        else:
            data = PackedSequences(shards, seq_len)
            loss = evaluate(model, data, args.batch_size, args.device, args.max_batches)
            n_samples = eval_sample_count(data, args.batch_size, 1, args.max_batches)
            result = {"tokens": n_samples * seq_len, "loss": loss, "ppl": perplexity(loss)}
            bpb = bits_per_byte(loss, data, n_samples)
            if bpb is not None:
                result["bpb"] = bpb
    except (ConfigError, DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"export": args.export_dir, "data": args.data, **result}))
    return 0


def by_length(model, cfg, shards, train_len: int, multiples: list, table: bool, args) -> dict:
    """Loss per position bucket in windows of each multiple of the training length; prints a table."""
    from .data import DataError

    buckets = length_buckets(train_len, multiples)
    out = {"train_len": train_len, "buckets": [f"{lo}-{hi - 1}" for lo, hi in buckets], "lengths": {}}
    print(f"{'window':>8} {'windows':>8} | " + " ".join(f"{f'{lo}-{hi - 1}':>12}" for lo, hi in buckets))
    for m in multiples:
        length = m * train_len
        if table and length > cfg.max_seq_len:
            out["lengths"][length] = {"skipped": f"the position table ends at model.max_seq_len={cfg.max_seq_len}"}
            print(f"{length:>8} {'-':>8} | not evaluated: the position table ends at {cfg.max_seq_len}")
            continue
        try:
            data = PackedSequences(shards, length)
        except DataError as e:
            out["lengths"][length] = {"skipped": str(e)}
            print(f"{length:>8} {'-':>8} | not evaluated: {e}")
            continue
        per_position = loss_by_position(model, data, args.batch_size, args.device, args.max_batches)
        losses = {f"{lo}-{hi - 1}": float(per_position[lo:hi].mean()) for lo, hi in buckets if hi <= length}
        n = eval_sample_count(data, args.batch_size, 1, args.max_batches)
        out["lengths"][length] = {"windows": n, "loss_by_bucket": losses}
        print(f"{length:>8} {n:>8} | " + " ".join(f"{losses[k]:>12.4f}" if k in losses else f"{'':>12}"
                                                  for k in out["buckets"]))
    return out


if __name__ == "__main__":
    sys.exit(main())
