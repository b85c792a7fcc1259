"""Autoregressive sampling with temperature, top-k and top-p.

Also a command: python -m resnetbk.generate EXPORT_DIR --prompt TEXT (samples from an exported model).
"""

from __future__ import annotations

import argparse
import sys

import torch


@torch.no_grad()
def sample(model, prompt: torch.Tensor, max_new_tokens: int, max_seq_len: int, temperature: float = 1.0,
           top_k: int = 0, generator: torch.Generator | None = None, top_p: float = 1.0) -> torch.Tensor:
    """prompt (B, P) -> (B, P + max_new_tokens). Recomputes the window each token (simple, not fast).

    top_k keeps the k likeliest tokens (0: all); top_p keeps the smallest set whose probability reaches p.
    Under ZeRO-3 every rank must call this with the same arguments and generator seed: each forward
    gathers partitioned weights collectively.
    """
    was_training = model.training
    model.eval()
    tokens = prompt
    for _ in range(max_new_tokens):
        logits = model(tokens[:, -max_seq_len:])[:, -1].float() / temperature
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1).cpu()
        if top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # Drop a token when the tokens ranked above it already reach top_p (the first always stays).
            drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
            probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
        nxt = torch.multinomial(probs, 1, generator=generator).to(tokens.device)
        tokens = torch.cat([tokens, nxt], dim=1)
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
    args = parser.parse_args(argv)
    try:
        for name, ok in (("--temperature", args.temperature > 0), ("--top-k", args.top_k >= 0),
                         ("--top-p", 0 < args.top_p <= 1), ("--max-new-tokens", args.max_new_tokens >= 0),
                         ("--num-samples", args.num_samples >= 1)):
            if not ok:
                raise ConfigError(f"{name}: out of range (see --help)")
        model, cfg, tokenizer = load_exported(args.export_dir, args.device)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    prompt = torch.tensor([sp.encode(args.prompt)] * args.num_samples, dtype=torch.long, device=args.device)
    gen = torch.Generator().manual_seed(args.seed)
    out = sample(model, prompt, args.max_new_tokens, cfg.max_seq_len, args.temperature, args.top_k, gen, args.top_p)
    for row in out.tolist():
        print(sp.decode(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
