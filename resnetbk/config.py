"""Run configuration: a typed OmegaConf schema, YAML files, and `key=value` overrides.

Only omegaconf is imported here, so that a bad config fails in well under a second, before torch or
DeepSpeed load. Every error is a ConfigError whose message names the offending key or file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .models import registry


class ConfigError(ValueError):
    """A configuration problem; its message is one line naming the key or file."""


@dataclass
class ModelConfig:
    """The model. The BK mixer's keys (bk_*) are read by resnetbk; the faithful preset of the original paper is
    n_heads=1, bk_learned_z=false, bk_selective=false, bk_values=0. The MoE keys (moe_*) are read where the blocks'
    feed-forward is the MoE."""

    arch: str = "resnetbk"  # a registered model family (resnetbk/models/registry.py): "resnetbk", "gpt", ...
    vocab_size: int = 4096  # token embedding rows; at least the tokenizer's vocabulary
    max_seq_len: int = 256  # the longest sequence the model takes (GPT's position table has this many rows)
    d_model: int = 256  # width of the residual stream
    n_layers: int = 4  # decoder blocks
    # resnetbk: independent BK systems per layer; gpt: attention heads (d_model must divide evenly).
    n_heads: int = 4
    ffn_hidden: int = 1024  # hidden width of the GPT MLP and of each MoE expert
    # The feed-forward of every block: "moe" (the sparse MoE) or "mlp" (dense); null: the family's own, moe for
    # resnetbk and mlp for gpt. GPT with moe separates the mixer's effect from MoE sparsity.
    feed_forward: Optional[str] = None
    dropout: float = 0.0  # on the embeddings, the mixers' and feed-forwards' outputs, attention weights
    # Early exit: blocks after which the tied LM head also reads out (one RMSNorm each); training adds one of these
    # exits' loss per forward, in turn. Empty: off.
    exit_layers: List[int] = field(default_factory=list)
    exit_loss_weight: float = 0.5  # weight of the exit's loss in the training loss
    bk_learned_z: bool = True  # z = x + i (softplus(y) + bk_im_z_min) per head, else z = i
    bk_im_z_min: float = 1e-3  # the least Im z: float32 accuracy degrades as Im z -> 0 (docs/design.md)
    bk_selective: bool = False  # input-dependent couplings b_i = softplus(w . x_{i+1}) >= 0, else b_i = 1
    # Value channels per head moved through the resolvent (its response to s = Linear(d, heads x bk_values) of the
    # input, resnetbk/ops/bk_response.py); 0: the diagonal g alone, as in the original paper.
    bk_values: int = 16
    bk_value_gate: bool = False  # the response features times silu(Linear(d, 2 x heads x bk_values)(x))
    moe_experts: int = 4  # experts per MoE layer
    moe_top_k: int = 2  # experts each token is routed to
    moe_balance_coef: float = 0.01  # weight of the load-balancing loss added to the training loss
    # "native": this repo's dropless top-k MoE (exactly causal, any ZeRO stage). "deepspeed": DeepSpeed's MoE
    # layer (GShard gating, capacity, expert parallelism over moe_ep_size ranks), ZeRO stages 0-2 only.
    moe_impl: str = "native"
    moe_ep_size: int = 1  # deepspeed only: ranks that split the experts (must divide moe_experts and the world)
    # deepspeed only: expert capacity = factor x tokens / experts; 0 drops no token (capacity = the largest
    # expert load). With a factor, whether a token overflows depends on the other tokens of the micro-batch,
    # later positions included, so the model is no longer exactly causal.
    moe_capacity_factor: float = 0.0


@dataclass
class TrainConfig:
    """The run. Batch: global = micro_batch x grad_accum x ranks; unset (null) values come from the DeepSpeed JSON
    (train_micro_batch_size_per_gpu, gradient_accumulation_steps), or grad_accum from global_batch."""

    seq_len: int = 128  # tokens per training sequence (at most model.max_seq_len)
    micro_batch: Optional[int] = None  # sequences per rank and micro-step
    grad_accum: Optional[int] = None  # micro-steps per optimizer step
    global_batch: Optional[int] = None  # sequences per optimizer step, all ranks
    activation_checkpoint_interval: int = 0  # recompute every k-th block in backward (DeepSpeed); 0: off
    # Replay each block as a CUDA graph at the training shape (resnetbk/training/cuda_graphs.py); the trainer says
    # when a run cannot (ZeRO-3, activation checkpointing, ...) and keeps the blocks eager.
    cuda_graphs: bool = True
    max_steps: int = 200  # optimizer steps
    seed: int = 1234  # initial weights, data order and dropout, the same on every rank
    log_interval: int = 10  # steps between metrics.jsonl records
    eval_interval: int = 100  # a multiple of log_interval; the last step is always evaluated
    eval_max_batches: int = 0  # 0: the whole validation split
    # 0: save only at the end; -1: never (benchmarks: a 7B model's checkpoint is about 100 GB)
    save_interval: int = 0
    keep_checkpoints: int = 3  # newest complete checkpoints kept in run_dir/checkpoints; 0 keeps all
    # Steps whose gradients are not finite are skipped (DeepSpeed's overflow check; fp16's loss scaler);
    # this many in a row stops the run.
    max_consecutive_skips: int = 20
    collective_timeout_min: int = 10  # a rank that stops answering ends the job after this long, not never


@dataclass
class OptimConfig:
    """AdamW with a linear warmup, then a cosine decay to min_lr_ratio x lr."""

    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decay floor as a fraction of lr
    warmup_steps: int = 20  # linear warmup updates
    weight_decay: float = 0.1  # on matrices only (not norms, biases or z)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW's
    eps: float = 1e-8  # AdamW's


# Difficulty metrics stored beside the shards by `python -m data_prep difficulty` (data_prep/difficulty.py).
DIFFICULTY_METRICS = ("length", "rarity", "ref_loss")
PACING_SCHEDULES = ("fixed_linear", "fixed_root", "fixed_discrete")  # DeepSpeed's curriculum schedules
ACTIVE_SCORES = ("loss", "entropy", "reducible")


@dataclass
class CurriculumConfig:
    """Easiest-first data selection: at step s the batch is drawn from the easiest p(s) percent of the training
    windows by `metric`; p grows from start_percent to 100 on DeepSpeed's pacing `schedule`
    (docs/data_selection.md)."""

    metric: Optional[str] = None  # length, rarity or ref_loss; null: off
    schedule: str = "fixed_linear"  # fixed_linear, fixed_root or fixed_discrete
    start_percent: int = 10  # the pool at step 0, in percent of the training windows
    total_steps: int = 100  # fixed_linear / fixed_root: the step from which every window is in the pool
    root_degree: int = 2  # fixed_root: p grows like (step / total_steps)^(1 / root_degree)
    discrete_percents: List[int] = field(default_factory=list)  # fixed_discrete: the pool of each stage
    # fixed_discrete: the last step of each stage but the final one
    discrete_steps: List[int] = field(default_factory=list)
    # Sequence-length warm-up (DeepSpeed's seqlen curriculum): windows are cut to their first L(s) tokens,
    # L growing from seqlen_start to train.seq_len on the same schedule (fixed_linear / fixed_root). 0: off.
    seqlen_start: int = 0
    seqlen_step: int = 8  # L(s) is a multiple of this (8 suits tensor cores)


@dataclass
class ActiveConfig:
    """Online batch selection: each micro-step draws micro_batch / keep_fraction candidates per rank, scores them
    with the current model (one extra forward, no backward) and trains on the global top keep_fraction."""

    # loss, entropy (predictive entropy) or reducible (loss - ref_loss, RHO-LOSS); null: off
    score: Optional[str] = None
    keep_fraction: float = 0.5  # the share of candidates trained on


@dataclass
class DataConfig:
    """The token shards (`python -m data_prep`) and the tokenizer they were made with."""

    train: Any = MISSING  # a shard directory (from `python -m data_prep`), or a list of them to mix
    train_weights: List[float] = field(default_factory=list)  # one per train directory; empty: by size
    val: str = MISSING  # the validation shard directory
    tokenizer: str = MISSING  # SentencePiece model, for decoding samples
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)


@dataclass
class DeepSpeedConfig:
    """The engine strategy: ds_configs/<profile>/<strategy>.json, or the JSON file named by `config`."""

    profile: str = "auto"  # auto: from the GPUs (cpu without CUDA); or a name in resnetbk/training/profiles.py
    # zero1, zero2, zero3, zero2-offload, zero3-offload, zero3-offload-partial, zero3-nvme; null: the profile's default
    strategy: Optional[str] = None
    config: Optional[str] = None  # a DeepSpeed JSON path; when set, profile and strategy are not used
    nvme_path: Optional[str] = None  # where zero3-nvme swaps (a writable directory on a local NVMe drive)


@dataclass
class SampleConfig:
    """The text generated at the end of a run."""

    prompt: str = "And God said"  # the text the sample continues
    max_new_tokens: int = 48  # 0: no sample
    temperature: float = 0.8  # softmax temperature of the sampling
    top_k: int = 40  # sample among the k most likely tokens; 0: off
    top_p: float = 1.0  # nucleus sampling; 1: off


@dataclass
class RunConfig:
    """Where the run writes, and whether it continues an earlier one."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    run_dir: str = "runs/default"  # checkpoints, metrics, TensorBoard, summary and config of the run
    # "auto": continue from the newest complete checkpoint in run_dir, or start fresh when there is none;
    # "none": start fresh (refused when run_dir already holds a run); or a checkpoint tag directory.
    resume: str = "auto"
    tb_enabled: bool = True  # TensorBoard events in run_dir/tensorboard


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_config(path: Optional[str], overrides: List[str] = ()) -> RunConfig:
    """Schema <- YAML file <- overrides, validated. Returns a typed (OmegaConf-backed) RunConfig."""
    cfg = OmegaConf.structured(RunConfig)
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"{path}: config file not found")
        try:
            file_cfg = OmegaConf.load(path)
        except Exception as e:  # YAML syntax errors come in many types
            raise ConfigError(f"{path}: cannot parse YAML: {_one_line(e)}") from None
        try:
            cfg = OmegaConf.merge(cfg, file_cfg)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{path}: {_key_message(e)}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise ConfigError(f"override '{item}': {_key_message(e)}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]}: required but not set")
    _validate(cfg)
    return cfg


def _key_message(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    msg = getattr(e, "msg", None) or _one_line(e)
    msg = msg.splitlines()[0]
    if "not in struct" in msg or ("Key '" in msg and "not" in msg):
        return f"unknown key '{key}'"
    return f"{key}: {msg}" if key else msg


def _check(cond: bool, key: str, why: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {why}")


def _validate(cfg: RunConfig) -> None:
    m, t, o = cfg.model, cfg.train, cfg.optim
    validate_model(m)
    for key in ("seq_len", "max_steps", "log_interval", "eval_interval"):
        _check(getattr(t, key) >= 1, f"train.{key}", "must be >= 1")
    for key in ("micro_batch", "grad_accum", "global_batch"):
        _check(getattr(t, key) is None or getattr(t, key) >= 1, f"train.{key}", "must be >= 1 (or null)")
    _check(t.activation_checkpoint_interval >= 0, "train.activation_checkpoint_interval", "must be >= 0 (0: off)")
    _check(t.eval_max_batches >= 0, "train.eval_max_batches", "must be >= 0")
    _check(t.save_interval >= -1, "train.save_interval", "must be >= 0, or -1 (never save)")
    _check(t.keep_checkpoints >= 0, "train.keep_checkpoints", "must be >= 0 (0 keeps all)")
    _check(t.max_consecutive_skips >= 1, "train.max_consecutive_skips", "must be >= 1")
    _check(t.collective_timeout_min >= 1, "train.collective_timeout_min", "must be >= 1")
    _check(t.seq_len <= m.max_seq_len, "train.seq_len", f"{t.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
    _check(t.eval_interval % t.log_interval == 0, "train.eval_interval",
           f"must be a multiple of train.log_interval ({t.log_interval}) so each evaluation lands on a logged step")
    _check(o.lr > 0, "optim.lr", "must be > 0")
    _check(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
    _check(0 <= o.warmup_steps < t.max_steps, "optim.warmup_steps", f"must be in [0, train.max_steps={t.max_steps})")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "must be two numbers in [0, 1)")
    _check(not os.path.exists(cfg.run_dir) or os.path.isdir(cfg.run_dir), "run_dir",
           f"{cfg.run_dir} exists and is not a directory")
    _check(cfg.resume == "auto" or cfg.resume == "none" or os.path.isdir(cfg.resume), "resume",
           f"must be 'auto', 'none' or an existing checkpoint directory, got '{cfg.resume}'")
    train = train_dirs(cfg)
    _check(len(train) >= 1 and all(isinstance(d, str) and d for d in train), "data.train",
           "must be a shard directory or a list of them")
    _check(not cfg.data.train_weights or len(cfg.data.train_weights) == len(train), "data.train_weights",
           f"needs one weight per data.train directory ({len(train)})")
    _check(all(w > 0 for w in cfg.data.train_weights), "data.train_weights", "weights must be > 0")
    _validate_data_selection(cfg)
    _check(cfg.sample.temperature > 0, "sample.temperature", "must be > 0")
    _check(cfg.sample.top_k >= 0, "sample.top_k", "must be >= 0 (0 disables top-k)")
    _check(0 < cfg.sample.top_p <= 1, "sample.top_p", "must be in (0, 1] (1 disables top-p)")
    _check(cfg.sample.max_new_tokens >= 0, "sample.max_new_tokens", "must be >= 0")
    _check(bool(cfg.sample.prompt) or cfg.sample.max_new_tokens == 0, "sample.prompt",
           "empty: the sample continues a prompt (or set sample.max_new_tokens=0)")


def _validate_data_selection(cfg: RunConfig) -> None:
    c, a, seq_len = cfg.data.curriculum, cfg.data.active, cfg.train.seq_len
    _check(c.metric is None or c.metric in DIFFICULTY_METRICS, "data.curriculum.metric",
           f"unknown metric '{c.metric}' ({', '.join(DIFFICULTY_METRICS)}, or null for none)")
    _check(c.schedule in PACING_SCHEDULES, "data.curriculum.schedule",
           f"unknown schedule '{c.schedule}' ({', '.join(PACING_SCHEDULES)})")
    _check(1 <= c.start_percent <= 100, "data.curriculum.start_percent", "must be in [1, 100]")
    _check(c.total_steps >= 1, "data.curriculum.total_steps", "must be >= 1")
    _check(c.root_degree >= 1, "data.curriculum.root_degree", "must be >= 1")
    if c.schedule == "fixed_discrete" and c.metric is not None:
        _check(len(c.discrete_percents) >= 1 and all(1 <= p <= 100 for p in c.discrete_percents),
               "data.curriculum.discrete_percents", "fixed_discrete needs a list of percents in [1, 100]")
        _check(len(c.discrete_steps) == len(c.discrete_percents) - 1, "data.curriculum.discrete_steps",
               f"needs one step fewer than data.curriculum.discrete_percents ({len(c.discrete_percents) - 1})")
        _check(list(c.discrete_steps) == sorted(set(c.discrete_steps)) and all(s >= 1 for s in c.discrete_steps),
               "data.curriculum.discrete_steps", "must be increasing steps >= 1")
    _check(c.seqlen_step >= 1, "data.curriculum.seqlen_step", "must be >= 1")
    _check(0 <= c.seqlen_start <= seq_len, "data.curriculum.seqlen_start",
           f"must be in [0, train.seq_len={seq_len}] (0: off)")
    _check(not c.seqlen_start or c.schedule != "fixed_discrete", "data.curriculum.seqlen_start",
           "the sequence-length warm-up follows fixed_linear or fixed_root, not fixed_discrete")
    _check(a.score is None or a.score in ACTIVE_SCORES, "data.active.score",
           f"unknown score '{a.score}' ({', '.join(ACTIVE_SCORES)}, or null for none)")
    _check(0 < a.keep_fraction <= 1, "data.active.keep_fraction", f"must be in (0, 1], got {a.keep_fraction}")


def train_dirs(cfg: RunConfig) -> List[str]:
    """data.train as a list of directories (a single string is one directory)."""
    train = cfg.data.train
    return [train] if isinstance(train, str) else list(train)


def validate_model(m: ModelConfig) -> None:
    """Checks that the model config describes a buildable model (also used by build_model): the keys every family
    reads, the MoE's when the blocks use it, then the family's own (its spec in resnetbk/models/registry.py)."""
    families = registry.names()
    _check(m.arch in families, "model.arch", f"unknown model family '{m.arch}' ({', '.join(families)})")
    for key in ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "ffn_hidden"):
        _check(getattr(m, key) >= 1, f"model.{key}", "must be >= 1")
    _check(0 <= m.dropout < 1, "model.dropout", "must be in [0, 1)")
    _check(all(1 <= k < m.n_layers for k in m.exit_layers) and len(set(m.exit_layers)) == len(m.exit_layers),
           "model.exit_layers", f"must be distinct block counts in [1, model.n_layers - 1 = {m.n_layers - 1}]")
    _check(m.exit_loss_weight >= 0, "model.exit_loss_weight", "must be >= 0")
    _check(m.feed_forward in (None, "moe", "mlp"), "model.feed_forward",
           f"must be 'moe', 'mlp' or null (the family's own), got '{m.feed_forward}'")
    if registry.uses_moe(m):
        _check(m.moe_experts >= 1, "model.moe_experts", "must be >= 1")
        _check(1 <= m.moe_top_k <= m.moe_experts, "model.moe_top_k",
               f"must be in [1, model.moe_experts={m.moe_experts}]")
        _check(m.moe_balance_coef >= 0, "model.moe_balance_coef", "must be >= 0")
        _check(m.moe_impl in ("native", "deepspeed"), "model.moe_impl",
               f"must be 'native' or 'deepspeed', got '{m.moe_impl}'")
        _check(m.moe_capacity_factor >= 0, "model.moe_capacity_factor", "must be >= 0 (0: no token dropped)")
        _check(m.moe_ep_size >= 1 and m.moe_experts % m.moe_ep_size == 0, "model.moe_ep_size",
               f"must divide model.moe_experts={m.moe_experts}")
        if m.moe_impl == "native":
            _check(m.moe_ep_size == 1, "model.moe_ep_size", "expert parallelism needs model.moe_impl=deepspeed")
            _check(m.moe_capacity_factor == 0, "model.moe_capacity_factor",
                   "is read only with model.moe_impl=deepspeed")
        else:
            _check(m.moe_top_k in (1, 2), "model.moe_top_k", "DeepSpeed's MoE gate supports top-1 and top-2 only")
    problem = registry.first_problem(m)
    if problem is not None:
        raise ConfigError(f"{problem[0]}: {problem[1]}")


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(cfg)
