"""Autoregressive sampling with temperature, top-k and top-p, decoding incrementally.

Also a command: python -m resnetbk.generate EXPORT_DIR --prompt TEXT (samples from an exported model).
"""

from __future__ import annotations

import argparse
import sys

import torch


def draw(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator) -> torch.Tensor:
    """One token per row from logits (B, vocab): top_k keeps the k likeliest tokens (0: all), top_p the smallest set
    whose probability reaches p (1: all). Drawn on the CPU, so that a seeded generator gives the same tokens on any
    device."""
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1).cpu()
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Drop a token when the tokens ranked above it already reach top_p (the first always stays).
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def sample(model, prompt: torch.Tensor, max_new_tokens: int, max_seq_len: int, temperature: float = 1.0,
           top_k: int = 0, generator: torch.Generator | None = None, top_p: float = 1.0,
           use_cache: bool = True) -> torch.Tensor:
    """prompt (B, P) -> (B, P + max_new_tokens), each new token drawn by `draw`.

    use_cache: the model's incremental decoding (models/decoder.py: prefill, then one decode step per token): for
    ResNet-BK a few numbers per head and layer whatever the context, so prompts and samples may be as long as memory
    allows; attention keeps a KV cache. A family with a position table can see max_seq_len tokens: past that, each
    token recomputes the last max_seq_len. Without use_cache every token recomputes that window through
    model.forward, which is what ZeRO-3 needs (its hooks gather the weights around each module's forward; the
    decoding methods use the tied head's weight outside it). Under ZeRO-3 every rank must call this with the same
    arguments and generator seed.
    """
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(f"the prompt must hold at least one token per row, got shape {tuple(prompt.shape)}")
    core = getattr(model, "module", model)  # a DeepSpeed engine holds the CausalLM as .module
    windowed = core.pos_embed is not None  # a position table: at most max_seq_len tokens in view
    was_training = model.training
    model.eval()
    tokens, state, logits = prompt, None, None
    if use_cache and (not windowed or prompt.shape[1] <= max_seq_len):
        logits, state = core.prefill(prompt)
        logits = logits[:, -1]
    for step in range(max_new_tokens):
        if state is None:
            logits = model(tokens[:, -max_seq_len:] if windowed else tokens)[:, -1]
        nxt = draw(logits, temperature, top_k, top_p, generator).to(tokens.device)
        tokens = torch.cat([tokens, nxt], dim=1)
        if state is not None and step + 1 < max_new_tokens:
            if windowed and state.position >= max_seq_len:
                state = None  # the position table ends here: recompute windows from now on
            else:
                logits, state = core.decode(nxt, state)
                logits = logits[:, -1]
    model.train(was_training)
    return tokens


def main(argv=None) -> int:
    import sentencepiece as spm

    from .config import ConfigError
    from .exported import load_exported

    parser = argparse.ArgumentParser(prog="python -m resnetbk.generate",
                                     description="Sample text from an exported model (python -m resnetbk.export).")
    parser.add_argument("export_dir")
    parser.add_argument("--prompt", default="And God said")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0, help="0: no top-k filter")
    parser.add_argument("--top-p", type=float, default=0.95, help="1: no nucleus filter")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute the window for every token instead of decoding incrementally")
    args = parser.parse_args(argv)
    try:
        for name, ok in (("--temperature", args.temperature > 0), ("--top-k", args.top_k >= 0),
                         ("--top-p", 0 < args.top_p <= 1), ("--max-new-tokens", args.max_new_tokens >= 0),
                         ("--num-samples", args.num_samples >= 1)):
            if not ok:
                raise ConfigError(f"{name}: out of range (see --help)")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {args.device}: no CUDA GPU here (use --device cpu)")
        if not args.prompt:
            raise ConfigError("--prompt: empty; generation continues a prompt of at least one token")
        model, cfg, tokenizer = load_exported(args.export_dir, args.device)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    prompt = torch.tensor([sp.encode(args.prompt)] * args.num_samples, dtype=torch.long, device=args.device)
    gen = torch.Generator().manual_seed(args.seed)
    out = sample(model, prompt, args.max_new_tokens, cfg.max_seq_len, args.temperature, args.top_k, gen, args.top_p,
                 use_cache=not args.recompute)
    for row in out.tolist():
        print(sp.decode(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
