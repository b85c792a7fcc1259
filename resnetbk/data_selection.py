"""Which training windows a micro-step trains on: uniform, curriculum (easiest first on DeepSpeed's pacing
schedules, plus sequence-length warm-up) and active learning (score a candidate pool with the current model,
train on the global top fraction).

Every choice is a function of (seed, samples consumed, optimizer step, model weights): the candidate pool
comes from the uniform sampler's epoch permutation or, under a curriculum, from a generator seeded with
(seed, samples consumed); the pacing reads the optimizer step; the selection reads scores of the current
weights. A checkpoint therefore holds the whole sampling state in its `consumed_samples` and `step`, and a
resumed run draws the same pools and keeps the same windows as one that never stopped.

Why not DeepSpeed's own DeepSpeedDataSampler: it reads Megatron-style index files made by its offline
DataAnalyzer (one metric value per sample of a fixed torch Dataset), writes difficulty clusters to disk from
rank 0 while training, and keeps a numpy RNG state of its own. Our samples are windows cut from memory-mapped
token streams at the run's seq_len, so the per-window values are derived here from per-document metrics
(data_prep/difficulty.py). The pacing itself is DeepSpeed's CurriculumScheduler, called, not copied.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional

import numpy as np

from .data import ResumableSampler

_CURRICULUM_STREAM = 0xC0  # keeps the curriculum's generator apart from the permutation's (seed, epoch) streams


class Pacing:
    """A difficulty at each optimizer step, from min_difficulty to max_difficulty on a DeepSpeed schedule."""

    def __init__(self, curriculum, min_difficulty: int, max_difficulty: int, difficulty_step: int, discrete=None):
        from deepspeed.runtime.data_pipeline.curriculum_scheduler import CurriculumScheduler
        from deepspeed.utils import logger

        if curriculum.schedule == "fixed_discrete":
            schedule = {"difficulty": list(discrete), "max_step": list(curriculum.discrete_steps)}
        else:
            schedule = {"total_curriculum_step": curriculum.total_steps, "difficulty_step": difficulty_step,
                        "root_degree": curriculum.root_degree}
        level = logger.level  # it warns about difficulty_step % 8, which concerns sequence lengths only
        logger.setLevel(logging.ERROR)
        try:
            self.scheduler = CurriculumScheduler({"min_difficulty": min_difficulty, "max_difficulty": max_difficulty,
                                                  "schedule_type": curriculum.schedule, "schedule_config": schedule})
        finally:
            logger.setLevel(level)

    def __call__(self, step: int) -> int:
        # get_difficulty is a pure function of the step (update_difficulty keeps state): exact on resume.
        return int(self.scheduler.get_difficulty(step))


class WindowSampler:
    """This rank's training windows, micro-step by micro-step.

    dataset: PackedSequences or MixedSequences; data_cfg: the run's DataConfig; difficulty: per-window values
    of data.curriculum.metric; ref_loss: per-window reference losses (data.active.score=reducible).
    `gather(array) -> list of every rank's array` joins the candidate scores of all ranks.
    """

    def __init__(self, dataset, data_cfg, seq_len: int, seed: int, rank: int, world: int, micro_batch: int,
                 consumed: int = 0, difficulty: Optional[np.ndarray] = None, ref_loss: Optional[np.ndarray] = None,
                 gather: Optional[Callable] = None):
        c, a = data_cfg.curriculum, data_cfg.active
        self.n, self.seq_len, self.seed, self.rank, self.world = len(dataset), seq_len, seed, rank, world
        self.micro_batch, self.consumed = micro_batch, consumed
        self.metric, self.score_kind, self.ref_loss, self.gather = c.metric, a.score, ref_loss, gather
        self.pool = micro_batch if a.score is None else math.ceil(micro_batch / a.keep_fraction)
        self.order = self.pacing = self.seqlen_pacing = None
        if c.metric is not None:
            self.order = np.argsort(difficulty, kind="stable")  # easiest first; ties by window index
            self.sorted_values = difficulty[self.order]
            self.pacing = Pacing(c, c.start_percent, 100, 1, c.discrete_percents)
        else:
            self.uniform = ResumableSampler(self.n, self.pool, rank, world, seed, consumed)
        if c.seqlen_start:
            self.seqlen_pacing = Pacing(c, c.seqlen_start, seq_len, c.seqlen_step)
        self._stats: dict = {}

    @property
    def epoch(self) -> float:
        return self.consumed / self.n

    def window_len(self, step: int) -> int:
        """Tokens per window at optimizer step `step` (1-based): seq_len unless warming up."""
        return self.seq_len if self.seqlen_pacing is None else self.seqlen_pacing(step)

    def next_indices(self, step: int, score_fn: Optional[Callable] = None) -> np.ndarray:
        """This rank's micro_batch window indices for a micro-step of optimizer step `step`; with active learning
        score_fn(indices) -> this rank's candidate scores (higher trains first)."""
        candidates = self._candidates(step)
        if self.score_kind is None:
            return candidates
        scores = np.asarray(score_fn(candidates), dtype=np.float64)
        if self.score_kind == "reducible":
            scores = scores - self.ref_loss[candidates]
        mine = np.stack([candidates.astype(np.float64), scores])  # window indices are exact in float64
        every = self.gather(mine) if self.world > 1 else [mine]
        pool_idx = np.concatenate([e[0] for e in every]).astype(np.int64)
        pool_scores = np.nan_to_num(np.concatenate([e[1] for e in every]), nan=-np.inf)
        keep = self.micro_batch * self.world
        # Global top-k, highest score first; ties go to the earlier pool position, the same on every rank.
        top = np.sort(np.lexsort((np.arange(len(pool_scores)), -pool_scores))[:keep])
        dropped = np.ones(len(pool_scores), dtype=bool)
        dropped[top] = False
        self._add_stat("pool_size", len(pool_scores))
        self._add_stat("kept_fraction", keep / len(pool_scores))
        self._add_stat("score_kept", float(pool_scores[top].mean()))
        if dropped.any():
            self._add_stat("score_dropped", float(pool_scores[dropped].mean()))
        return pool_idx[top[self.rank * self.micro_batch:(self.rank + 1) * self.micro_batch]]

    def _candidates(self, step: int) -> np.ndarray:
        if self.order is None:
            out = self.uniform.next_indices()
            self.consumed = self.uniform.consumed
            return out
        percent = self.pacing(step)
        pool_size = max(1, math.ceil(percent / 100 * self.n))
        total = self.pool * self.world
        rng = np.random.default_rng([self.seed, _CURRICULUM_STREAM, self.consumed])
        picks = rng.choice(pool_size, size=total, replace=pool_size < total)
        self.consumed += total
        self._add_stat("curriculum_percent", percent)
        self._add_stat("curriculum_threshold", float(self.sorted_values[pool_size - 1]))
        return self.order[picks[self.rank * self.pool:(self.rank + 1) * self.pool]]

    def _add_stat(self, name: str, value: float) -> None:
        total, count = self._stats.get(name, (0.0, 0))
        self._stats[name] = (total + value, count + 1)

    def pop_stats(self) -> dict:
        """Means of the sampling statistics since the last call (curriculum pool and threshold, candidate pool
        size, kept fraction, mean score of kept and dropped candidates)."""
        out = {name: total / count for name, (total, count) in self._stats.items()}
        self._stats = {}
        return out

    def describe(self) -> str:
        parts = []
        if self.pacing is not None:
            parts.append(f"curriculum by {self.metric} from the easiest {self.pacing(0)}% of the windows")
        if self.seqlen_pacing is not None:
            parts.append(f"sequence length from {self.seqlen_pacing(0)}")
        if self.score_kind is not None:
            parts.append(f"active learning ({self.score_kind}): top {self.micro_batch} of {self.pool} "
                         f"candidates per rank")
        return ", ".join(parts) or "uniform"
