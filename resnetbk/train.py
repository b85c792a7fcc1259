"""Training entry point: python -m resnetbk.train --config FILE [key=value ...]

Runs alone (one process) or under a launcher (`deepspeed --num_gpus N -m resnetbk.train ...`, torchrun).
The config is checked before torch or DeepSpeed load: a bad key stops in a second with one line.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import ConfigError, load_config, train_dirs
from .data import DataError, read_manifest
from .training.errors import TrainingError


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m resnetbk.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML run config (see configs/)")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config, data and DeepSpeed strategy for WORLD_SIZE ranks (default 1), "
                             "print the resolved DeepSpeed config, and exit; the launch scripts run this before "
                             "starting ranks")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=50")
    return parser.parse_args(argv)


def check_inputs(cfg, world_size: int):
    """Everything that can be checked before the heavy imports: the DeepSpeed strategy against the hardware
    and the run config (batch sizes filled in), the data, the tokenizer. Returns the Strategy."""
    from data_prep.tokenizer import file_sha256

    from .training.checkpoint import checkpoint_root, published_tags, resolve_resume
    from .training.ds_config import resolve_batch, resolve_strategy
    from .training.profiles import detect_gpus

    strategy = resolve_strategy(cfg, detect_gpus())
    resolve_batch(cfg, strategy, world_size)
    resume = resolve_resume(cfg.resume, cfg.run_dir)  # a bad checkpoint path fails here, before any work
    if resume is None and published_tags(checkpoint_root(cfg.run_dir)):
        raise ConfigError(f"run_dir: {cfg.run_dir} already holds a run with checkpoints; use resume=auto to "
                          f"continue it, or choose another run_dir")
    checksums = set()
    for directory in train_dirs(cfg) + [cfg.data.val]:
        manifest = read_manifest(directory)
        checksums.add(manifest["tokenizer_sha256"])
        if manifest["vocab_size"] > cfg.model.vocab_size:
            raise ConfigError(f"model.vocab_size: {cfg.model.vocab_size} is smaller than the vocabulary of "
                              f"{directory} ({manifest['vocab_size']})")
    if len(checksums) > 1:
        raise ConfigError("data.train: the training and validation directories were made with different tokenizers")
    _check_difficulty_metrics(cfg)
    if not os.path.isfile(cfg.data.tokenizer):
        raise ConfigError(f"data.tokenizer: {cfg.data.tokenizer}: file not found")
    if file_sha256(cfg.data.tokenizer) not in checksums:
        raise ConfigError(f"data.tokenizer: {cfg.data.tokenizer} is not the tokenizer the shards were made with")
    return strategy


def _check_difficulty_metrics(cfg) -> None:
    """The metrics the samplers read must be stored beside every training directory."""
    from .data import IndexedShards

    needed = []
    if cfg.data.curriculum.metric is not None:
        needed.append(("data.curriculum.metric", cfg.data.curriculum.metric))
    if cfg.data.active.score == "reducible":
        needed.append(("data.active.score", "ref_loss"))
    for key, metric in needed:
        for directory in train_dirs(cfg):
            try:
                IndexedShards(directory).difficulty(metric)
            except DataError as e:
                raise ConfigError(f"{key}: {e}") from None


def _fail(e: Exception) -> int:
    # Under a launcher every rank finds the same problem: one line from rank 0 is enough.
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {e}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
        strategy = check_inputs(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        if not args.dry_run:
            from .training.workarounds import check_op_build_locks

            check_op_build_locks()
    except (ConfigError, DataError, TrainingError) as e:
        return _fail(e)
    if args.dry_run:
        import json

        from .training.ds_config import build_ds_config
        from .training.profiles import detect_gpus

        world = int(os.environ.get("WORLD_SIZE", "1"))
        print(f"deepspeed: {strategy.path} ({strategy.reason}) | global batch {cfg.train.global_batch} = micro-batch "
              f"{cfg.train.micro_batch} x accumulation {cfg.train.grad_accum} x {world} rank(s)")
        print(json.dumps(build_ds_config(cfg, strategy, on_cuda=bool(detect_gpus()), world_size=world), indent=2))
        return 0
    from .training.trainer import Trainer
    from .training.workarounds import fix_cuda_arch_list

    fix_cuda_arch_list()
    try:
        return Trainer(cfg, strategy).run()
    except (ConfigError, DataError, TrainingError) as e:  # found after start-up, e.g. an unusable checkpoint
        return _fail(e)


if __name__ == "__main__":
    sys.exit(main())
