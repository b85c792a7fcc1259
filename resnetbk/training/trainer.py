"""The training loop on a DeepSpeed engine: steps with gradient accumulation, skipped and non-finite steps, an
out-of-memory retry at start-up, CUDA-graphed blocks, evaluation, checkpoints, logs and the final report."""

from __future__ import annotations

import datetime
import math
import os
import time

from ..config import to_yaml, train_dirs
from ..models import registry
from .errors import TrainingError


class Trainer:
    def __init__(self, cfg, strategy):
        import deepspeed
        import torch
        import torch.distributed as dist
        from deepspeed.accelerator import get_accelerator

        from ..data import IndexedShards, MixedSequences, PackedSequences
        from .ds_config import build_ds_config
        from .engine import build_engine, single_process_env
        from .metrics import MetricsLogger
        from .throughput import peak_tflops
        from .workarounds import quiet_deprecated_collectives, unlink_shm_allreduce_buffer

        self.cfg, self.torch, self.dist = cfg, torch, dist
        quiet_deprecated_collectives()
        single_process_env()
        accel = get_accelerator()
        self.on_cuda = accel.device_name() == "cuda"
        if not self.on_cuda:
            # Each rank gets its share of the cores instead of every rank spawning one thread per core.
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", "1")))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
        deepspeed.init_distributed(timeout=datetime.timedelta(minutes=cfg.train.collective_timeout_min))
        if not self.on_cuda:
            unlink_shm_allreduce_buffer(dist)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.device = (torch.device(accel.device_name(), int(os.environ.get("LOCAL_RANK", "0"))) if self.on_cuda
                       else torch.device("cpu"))
        if self.on_cuda:
            accel.set_device(self.device.index)

        self.train_docs = [IndexedShards(d) for d in train_dirs(cfg)]
        sources = [PackedSequences(docs, cfg.train.seq_len) for docs in self.train_docs]
        self.train_data = sources[0] if len(sources) == 1 else MixedSequences(
            sources, list(cfg.data.train_weights) or [len(s) for s in sources])
        self.val_data = PackedSequences(IndexedShards(cfg.data.val), cfg.train.seq_len)
        metric = cfg.data.curriculum.metric
        self.train_difficulty = self.train_data.window_difficulty(metric) if metric else None
        self.train_ref_loss = (self.train_data.window_difficulty("ref_loss") if cfg.data.active.score == "reducible"
                               else None)

        self.peak_tflops = peak_tflops(torch.cuda.get_device_name(self.device)) if self.on_cuda else None
        self.strategy = strategy
        ds_config = build_ds_config(cfg, strategy, self.on_cuda, self.world)
        self.resume = self._prepare_resume(ds_config)
        self.engine = build_engine(cfg, ds_config)
        self.n_params = sum(getattr(p, "ds_numel", p.numel()) for p in self.engine.module.parameters())
        self.global_batch = cfg.train.global_batch
        self.release_graphs = None  # set while the blocks run as CUDA graphs
        self.stat_keys = {}  # metrics.jsonl key -> TensorBoard name of the monitored statistics
        if self.is_main:
            os.makedirs(cfg.run_dir, exist_ok=True)
            with open(os.path.join(cfg.run_dir, "config.yaml"), "w") as f:
                f.write(to_yaml(cfg))
        self.metrics = MetricsLogger(cfg.run_dir, getattr(self.engine, "monitor", None), self.is_main)

    def _prepare_resume(self, ds_config: dict):
        """The checkpoint to load (None: fresh start). A checkpoint written by another number of data-parallel
        ranks is converted once to DeepSpeed's universal format (rank 0) and loaded from there."""
        from . import checkpoint

        resume = checkpoint.resolve_resume(self.cfg.resume, self.cfg.run_dir)
        if resume is None or resume.saved_world in (0, self.world):
            return resume
        out = checkpoint.universal_dir(self.cfg.run_dir, resume.tag)
        if self.is_main:
            print(f"resume: {resume.tag} was saved by {resume.saved_world} rank(s), this run has {self.world}: "
                  f"converting it to DeepSpeed's universal checkpoint in {out}", flush=True)
            tag_dir = os.path.join(resume.load_dir, resume.tag)
            if not os.path.isfile(os.path.join(tag_dir, "mp_rank_00_model_states.pt")):  # written by ZeRO-3
                print("note: from a ZeRO-3 checkpoint DeepSpeed 0.19.8's universal load restores the weights exactly "
                      "but not the optimizer state (the loss curve drifts slightly; docs/design.md)", flush=True)
            checkpoint.convert_to_universal(tag_dir, out)
        self.dist.barrier()
        ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}
        return checkpoint.Resume(os.path.dirname(out), resume.tag, self.world)

    def print(self, *args):
        if self.is_main:
            print(*args, flush=True)

    def run(self) -> int:
        from ..evaluate import bits_per_byte, eval_sample_count, evaluate, perplexity, unigram_loss
        from ..models.counts import training_flops_per_token
        from . import checkpoint

        cfg, t, torch = self.cfg, self.cfg.train, self.torch
        # flops: everything the model computed (training and active-learning scoring); scoring_sec: wall time of scoring
        state = {"step": 0, "tokens": 0, "consumed_samples": 0, "skipped_steps": 0, "flops": 0.0, "scoring_flops": 0.0,
                 "scoring_sec": 0.0}
        if self.resume is not None:
            client = checkpoint.load(self.engine, self.resume.load_dir, self.resume.tag)
            state.update({k: client[k] for k in state if k in client})
            same_rng = checkpoint.restore_rng(client.get("rng"), self.rank, self.world)
            self.print(f"resumed from {os.path.join(self.resume.load_dir, self.resume.tag)} at step {state['step']}"
                       + ("" if same_rng else " (RNG states not restored: saved by another number of ranks)"))
        if self.is_main:
            checkpoint.remove_stale_temporaries(cfg.run_dir)
            self.metrics.truncate(state["step"])  # records past the checkpoint are about to be recomputed
        self._capture_graphs()
        sampler = self._make_sampler(state["consumed_samples"])
        # "sampling": the checkpoint's key for the data selection it was trained with.
        if self.resume is not None and client.get("sampling", sampler.describe()) != sampler.describe():
            self.print(f"note: the checkpoint was trained with data selection '{client['sampling']}'; continuing with "
                       f"'{sampler.describe()}'")
        state["sampling"] = sampler.describe()
        spec = registry.get(cfg.model.arch)
        ffn = registry.feed_forward(cfg.model)
        kind = spec.label + ("" if ffn == spec.feed_forward else f" ({ffn.upper()} feed-forward)")
        self.print(f"{kind}: {self.n_params / 1e6:.2f}M parameters | {self.world} rank(s) on {self.device.type} | "
                   f"global batch {self.global_batch} x {t.seq_len} tokens | {len(self.train_data):,} training "
                   f"sequences | steps {state['step']}..{t.max_steps}")
        self.print(f"deepspeed: {self.strategy.path} ({self.strategy.reason}) | micro-batch {t.micro_batch} x "
                   f"accumulation {t.grad_accum} x {self.world} rank(s) | data selection: {sampler.describe()}")

        # Sums of loss, lm loss, balance loss, exit loss and a count of micro-steps over the applied steps of a log
        # interval, kept on the training device (NCCL reduces only device tensors; no host sync per micro-step).
        interval = torch.zeros(5, dtype=torch.float64, device=self.device)
        last_time, last_tokens, last_flops, start_time = time.time(), state["tokens"], state["flops"], time.time()
        start_step = state["step"]
        val_loss, consecutive_skips = None, 0
        while state["step"] < t.max_steps:
            # The rate this step's update uses (the scheduler steps after each update).
            lr = self.engine.optimizer.param_groups[0]["lr"]
            next_step = state["step"] + 1
            self.engine.module.record_stats(next_step % t.log_interval == 0 or next_step == t.max_steps)
            before = dict(state)
            try:
                step_sums = self._optimizer_step(sampler, next_step, state)
            except torch.OutOfMemoryError:
                if state["step"] != start_step:
                    raise  # memory use is flat after the first step: this is not a batch-size problem
                state.update(before)  # the retry scores its candidates again: count that once
                sampler = self._shrink_micro_batch(state["consumed_samples"])
                continue
            except Exception as e:  # DeepSpeed's fp16 loss scaler gives up with a bare Exception
                if "loss scale already at minimum" not in str(e):
                    raise
                raise TrainingError(
                    f"fp16: gradients still overflow at the minimum loss scale (step {next_step}, "
                    f"{state['skipped_steps']} steps skipped so far); resume from the newest checkpoint in "
                    f"{checkpoint.checkpoint_root(cfg.run_dir)} with bf16 if the GPU has it, "
                    f"or a lower optim.lr") from None
            state["step"] += 1
            window = sampler.window_len(next_step)
            state["tokens"] += self.global_batch * window
            state["flops"] += self.global_batch * window * training_flops_per_token(cfg.model, window)
            state["consumed_samples"] = sampler.consumed
            step, last = state["step"], state["step"] == t.max_steps
            if self.engine.was_step_applied():
                interval += step_sums
                consecutive_skips = 0
            else:  # DeepSpeed found non-finite gradients (or fp16 overflow) and left the weights alone
                state["skipped_steps"] += 1
                consecutive_skips += 1
                self.print(f"step {step}: non-finite gradients, update skipped ({consecutive_skips} in a row, "
                           f"{state['skipped_steps']} in all)")
                if consecutive_skips >= t.max_consecutive_skips:
                    raise TrainingError(
                        f"{consecutive_skips} steps in a row had non-finite gradients (train.max_consecutive_skips); "
                        f"stopped at step {step}. The newest checkpoint is in "
                        f"{checkpoint.checkpoint_root(cfg.run_dir)}: resume from it with a lower optim.lr, or bf16 "
                        f"instead of fp16")

            if step % t.log_interval == 0 or last:
                self.dist.all_reduce(interval)
                loss, lm_loss, balance, exit_loss, n = interval.tolist()
                interval.zero_()
                if n and not math.isfinite(loss):
                    raise TrainingError(f"non-finite training loss at step {step} on updates DeepSpeed applied "
                                        f"(ZeRO stage 0 does not skip them): the weights are no longer usable; resume "
                                        f"from the newest checkpoint with ZeRO stage >= 1 or a lower optim.lr")
                now = time.time()
                tok_per_s = (state["tokens"] - last_tokens) / (now - last_time)
                flops_per_s = (state["flops"] - last_flops) / (now - last_time)
                last_time, last_tokens, last_flops = now, state["tokens"], state["flops"]
                mean = (lambda v: v / n) if n else (lambda v: None)  # every step of the interval was skipped
                record = {"step": step, "loss": mean(loss), "lm_loss": mean(lm_loss), "lr": lr,
                          "tokens": state["tokens"], "epoch": round(sampler.epoch, 4),
                          "skipped_steps": state["skipped_steps"],
                          "micro_batch": t.micro_batch, "seq_len": window, "flops": state["flops"],
                          "tokens_per_sec": tok_per_s, "elapsed_sec": now - start_time, **self._throughput(flops_per_s)}
                if cfg.data.active.score is not None:
                    record.update(scoring_flops=state["scoring_flops"], scoring_sec=state["scoring_sec"])
                record.update(sampler.pop_stats())
                if registry.uses_moe(cfg.model):
                    record["moe_balance_loss"] = mean(balance)
                if cfg.model.exit_layers:
                    record["exit_loss"] = mean(exit_loss)
                grad_norm = self.engine.get_global_grad_norm()
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                stats = self.engine.module.stats()  # the monitored layers' statistics (layers.common.Monitored)
                record.update({f"{prefix}_{name}": value for (prefix, name), value in stats.items()})
                self.stat_keys = {f"{prefix}_{name}": f"{prefix}/{name}" for prefix, name in stats}
                if self.engine.fp16_enabled():
                    opt = self.engine.optimizer
                    record["loss_scale"] = float(getattr(opt, "loss_scale", None) or opt.cur_scale)
                if step % t.eval_interval == 0 or last:
                    val_loss = evaluate(self.engine, self.val_data, t.micro_batch, self.device, t.eval_max_batches)
                    record.update(val_loss=val_loss, val_ppl=perplexity(val_loss))
                    n_eval = eval_sample_count(self.val_data, t.micro_batch, self.world, t.eval_max_batches)
                    val_bpb = bits_per_byte(val_loss, self.val_data, n_eval)
                    if val_bpb is not None:  # None: validation shards without byte counts
                        record["val_bpb"] = val_bpb
                self._log(record, start_step, t.max_steps)
                last_time = time.time()  # tokens/s counts training time: evaluation and logging are left out

            if t.save_interval > 0 and step % t.save_interval == 0 and not last:
                saving = time.time()
                checkpoint.save(self.engine, cfg.run_dir, step, state, t.keep_checkpoints)
                last_time += time.time() - saving  # and so are checkpoints
        ckpt = checkpoint.save(self.engine, cfg.run_dir, state["step"], state, t.keep_checkpoints) \
            if t.save_interval >= 0 else None
        if val_loss is None:  # resumed at the end: nothing trained, evaluate what was loaded
            val_loss = evaluate(self.engine, self.val_data, t.micro_batch, self.device, t.eval_max_batches)
        text = self._sample()
        if self.is_main:
            n_eval = eval_sample_count(self.val_data, t.micro_batch, self.world, t.eval_max_batches)
            uni = unigram_loss(self.train_docs, self.val_data, n_eval)
            bpb = {name: bits_per_byte(loss, self.val_data, n_eval)
                   for name, loss in (("val", val_loss), ("unigram", uni))}
            self._report(val_loss, uni, bpb, n_eval * t.seq_len, text, ckpt, state)
        return 0

    def _optimizer_step(self, sampler, step: int, state: dict):
        """Optimizer step `step`: grad_accum micro-steps through the engine. Returns the summed (loss, lm loss,
        balance loss, exit loss, micro-steps) on the device."""
        from ..models.counts import forward_flops_per_token

        torch = self.torch
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        one = torch.ones((), dtype=torch.float64, device=self.device)
        window = sampler.window_len(step)
        score_fn = None
        if self.cfg.data.active.score is not None:
            def score_fn(indices):
                started = time.time()
                scores = self._score(indices, window)
                state["scoring_sec"] += time.time() - started
                flops = len(indices) * self.world * window * forward_flops_per_token(self.cfg.model, window)
                state["scoring_flops"] += flops
                state["flops"] += flops
                return scores
        for micro in range(self.cfg.train.grad_accum):
            # Sequence-length warm-up cuts windows to their first tokens.
            rows = self._to_device(self.train_data.rows(sampler.next_indices(step, score_fn))[:, :window + 1])
            # The early exit this micro-step trains, from the step count, so that a resumed run continues the turn.
            self.engine.module.exit_turn = (step - 1) * self.cfg.train.grad_accum + micro
            out = self.engine(rows[:, :-1], rows[:, 1:])
            self.engine.backward(out.loss)
            self.engine.step()
            sums += torch.stack([out.loss.detach().double(), out.lm_loss.detach().double(),
                                 out.balance_loss.detach().double(), out.exit_loss.detach().double(), one])
        return sums

    def _to_device(self, tokens):
        """tokens on the training device; on CUDA through pinned memory, without waiting. From pageable memory
        the copy first waits for the GPU to drain the work queued before it. On two H200s that left the GPU idle
        41 ms of a 147 ms step of `small` (20 ms with this) and weak scaling at 82% (92%; docs/performance.md)."""
        if not self.on_cuda:
            return tokens
        return tokens.pin_memory().to(self.device, non_blocking=True)

    def _score(self, indices, window: int):
        """Active-learning scores of candidate windows under the current weights (eval mode, no gradients), in
        chunks of the micro-batch; every rank runs the same number of forwards (ZeRO-3 gathers weights)."""
        import torch.nn.functional as F

        torch, kind = self.torch, self.cfg.data.active.score
        rows = self._to_device(self.train_data.rows(indices)[:, :window + 1])
        x, y = rows[:, :-1], rows[:, 1:]
        out = []
        self.engine.eval()
        with torch.no_grad():
            for lo in range(0, len(x), self.cfg.train.micro_batch):
                logits = self.engine(x[lo:lo + self.cfg.train.micro_batch]).float()
                if kind == "entropy":
                    logp = F.log_softmax(logits, dim=-1)
                    out.append(-(logp.exp() * logp).sum(-1).mean(1))
                else:  # loss and reducible (the reference loss is subtracted by the sampler)
                    target = y[lo:lo + self.cfg.train.micro_batch]
                    out.append(F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(1))
        self.engine.train()
        return torch.cat(out).double().cpu().numpy()

    def _make_sampler(self, consumed: int):
        from ..data_selection import WindowSampler

        t = self.cfg.train
        return WindowSampler(self.train_data, self.cfg.data, t.seq_len, t.seed, self.rank, self.world, t.micro_batch,
                             consumed, self.train_difficulty, self.train_ref_loss, self._all_gather)

    def _all_gather(self, array):
        """Every rank's copy of a float64 array of the same shape (over the training device's backend)."""
        torch = self.torch
        local = torch.from_numpy(array).to(self.device)
        parts = [torch.empty_like(local) for _ in range(self.world)]
        self.dist.all_gather(parts, local)
        return [p.cpu().numpy() for p in parts]

    def _shrink_micro_batch(self, consumed: int):
        """Out of memory in the first step: drop the CUDA graphs if there are any (their pool holds memory that
        eager blocks may not need), else halve the micro-batch and double accumulation (global batch unchanged);
        then retry the step from the same samples."""
        t = self.cfg.train
        old = t.micro_batch
        if self.release_graphs is not None:
            self.release_graphs()
            self.release_graphs = None
            retry = f"out of memory at micro-batch {old} with CUDA graphs: retrying with eager blocks"
        elif old == 1:
            raise TrainingError("out of memory at micro-batch 1: use a strategy that offloads more "
                                "(deepspeed.strategy=zero3-offload), activation checkpointing "
                                "(train.activation_checkpoint_interval=1) or a shorter train.seq_len")
        else:
            t.micro_batch = old // 2 if old % 2 == 0 else 1
            t.grad_accum = t.grad_accum * old // t.micro_batch
            retry = (f"out of memory at micro-batch {old}: retrying with micro-batch {t.micro_batch} x accumulation "
                     f"{t.grad_accum} (global batch {self.global_batch} unchanged)")
        self.engine.zero_grad()
        self.engine.micro_steps = 0  # the failed step's micro-steps never reached an optimizer update
        self.engine.set_train_micro_batch_size(t.micro_batch)
        self.engine.set_train_batch_size(self.global_batch)
        self._free_memory()
        self.print(retry)
        return self._make_sampler(consumed)

    def _free_memory(self) -> None:
        """Returns what an out-of-memory attempt left behind (its tensors, the allocator's cached blocks)."""
        import gc

        gc.collect()
        if self.on_cuda:
            self.torch.cuda.empty_cache()

    def _capture_graphs(self) -> None:
        """The blocks as CUDA graphs at the training shape (training/cuda_graphs.py), where the run allows it. Tried
        once, before the first step: a run that then runs out of memory continues with eager blocks."""
        from . import cuda_graphs

        t, torch = self.cfg.train, self.torch
        if not t.cuda_graphs:
            return
        module = self.engine.module
        why = cuda_graphs.graph_blocks_unsupported(
            self.cfg.model, on_cuda=self.on_cuda, zero_stage=self.engine.zero_optimization_stage(),
            checkpointing=t.activation_checkpoint_interval > 0, dtype=next(module.parameters()).dtype,
            capability=torch.cuda.get_device_capability(self.device) if self.on_cuda else (0, 0))
        if why is None:
            try:
                self.release_graphs = cuda_graphs.graph_blocks(module, t.micro_batch, t.seq_len)
            except torch.OutOfMemoryError:  # capturing needs a warm-up pass's memory beside the graphs' pool
                why = f"out of memory while capturing micro-batch {t.micro_batch}"
                self._free_memory()
        if why is None:
            self.print(f"cuda graphs: {len(module.blocks)} blocks at micro-batch {t.micro_batch} x {t.seq_len}")
        elif self.on_cuda:  # on CPU there is nothing to say about a GPU feature
            self.print(f"cuda graphs: off ({why}; train.cuda_graphs=false silences this)")

    def _throughput(self, flops_per_s: float) -> dict:
        """Model TFLOP/s per GPU (models/counts.py), MFU against the data-sheet peak, peak memory."""
        import psutil

        tflops = flops_per_s / self.world / 1e12
        out = {"tflops_per_gpu": tflops, "host_rss_gib": psutil.Process().memory_info().rss / 2**30}
        if self.peak_tflops:
            out["mfu"] = tflops / self.peak_tflops
        if self.on_cuda:
            out["max_allocated_gib"] = self.torch.cuda.max_memory_allocated(self.device) / 2**30
            # Reserved counts what the allocator holds, CUDA graph pools included: a graph's activations are
            # "free" blocks of its pool between replays, so allocated alone understates a graphed run.
            out["max_reserved_gib"] = self.torch.cuda.max_memory_reserved(self.device) / 2**30
        return out

    def _log(self, r: dict, start_step: int, max_steps: int) -> None:
        from .metrics import tensorboard_scalars

        scalars = tensorboard_scalars(r, self.world, self.stat_keys, self.engine.module.expert_load())
        self.metrics.log(r, scalars)
        done = r["step"] - start_step
        eta = r["elapsed_sec"] / max(done, 1) * (max_steps - r["step"])
        loss = "skipped" if r["loss"] is None else f"{r['loss']:.4f}"
        line = (f"step {r['step']:>6}/{max_steps} | loss {loss} | lr {r['lr']:.2e} | "
                f"{r['tokens_per_sec']:,.0f} tok/s | {r['tflops_per_gpu']:.1f} TFLOP/s/GPU | ETA {eta / 60:.1f} min")
        if "max_allocated_gib" in r:
            line += f" | GPU mem {r['max_allocated_gib']:.1f} GiB (reserved {r['max_reserved_gib']:.1f})"
        if "val_loss" in r:
            line += f" | val {r['val_loss']:.4f} (ppl {r['val_ppl']:.1f}" + (
                f", {r['val_bpb']:.3f} bpb)" if "val_bpb" in r else ")")
        self.print(line)

    def _sample(self) -> str:
        """Every rank samples with the same seed (required under ZeRO-3); rank 0 decodes."""
        import sentencepiece as spm

        from ..generate import sample

        s, torch = self.cfg.sample, self.torch
        if s.max_new_tokens == 0:
            return ""
        sp = spm.SentencePieceProcessor(model_file=self.cfg.data.tokenizer)
        prompt = torch.tensor([sp.encode(s.prompt)], dtype=torch.long, device=self.device)
        gen = torch.Generator().manual_seed(self.cfg.train.seed)
        # Under ZeRO-3 the window is recomputed through the engine's forward, around which its hooks gather weights.
        out = sample(self.engine, prompt, s.max_new_tokens, self.cfg.model.max_seq_len, s.temperature, s.top_k, gen,
                     s.top_p, use_cache=self.engine.zero_optimization_stage() != 3)
        return sp.decode(out[0].tolist())

    def _report(self, val_loss, uni_loss, bpb, n_tokens, text, ckpt, state) -> None:
        """bpb: {"val": bits per byte, "unigram": the baseline's}, each None without byte counts."""
        import json

        from ..evaluate import perplexity

        summary = {"step": state["step"], "tokens": state["tokens"], "val_loss": val_loss,
                   "val_ppl": perplexity(val_loss)}
        if bpb["val"] is not None:
            summary["val_bpb"] = bpb["val"]
        summary.update(unigram_val_loss=uni_loss, unigram_val_ppl=perplexity(uni_loss))
        if bpb["unigram"] is not None:
            summary["unigram_val_bpb"] = bpb["unigram"]
        summary.update(val_tokens=n_tokens, checkpoint=ckpt, sample=text)
        with open(os.path.join(self.cfg.run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        run = self.cfg.run_dir
        tb = os.path.join(run, "tensorboard") if self.cfg.tb_enabled else "(disabled)"
        print("\n".join([
            "",
            f"validation ({n_tokens:,} held-out tokens): loss {val_loss:.4f}, perplexity {perplexity(val_loss):.1f}"
            + (f", {bpb['val']:.3f} bits per byte" if bpb["val"] is not None else ""),
            f"unigram baseline on the same tokens:  loss {uni_loss:.4f}, perplexity {perplexity(uni_loss):.1f}"
            + (f", {bpb['unigram']:.3f} bits per byte" if bpb["unigram"] is not None else ""),
            f"sample: {text}",
            "",
            f"run directory   {run}",
            f"  metrics       {os.path.join(run, 'metrics.jsonl')}",
            f"  summary       {os.path.join(run, 'summary.json')}",
            f"  tensorboard   {tb}",
            f"  checkpoint    {ckpt or 'none (train.save_interval=-1)'}",
        ]), flush=True)


# Data-selection statistics (resnetbk/data_selection.py) and the window length, logged to TensorBoard as data/<name>.
DATA_SELECTION_SCALARS = ("seq_len", "curriculum_percent", "curriculum_threshold", "pool_size", "kept_fraction",
                    "score_kept", "score_dropped", "scoring_flops")
