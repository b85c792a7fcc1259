"""Autoregressive sampling with temperature and top-k."""

from __future__ import annotations

import torch


@torch.no_grad()
def sample(model, prompt: torch.Tensor, max_new_tokens: int, max_seq_len: int, temperature: float = 1.0,
           top_k: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """prompt (B, P) -> (B, P + max_new_tokens). Recomputes the window each token (simple, not fast).

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
        nxt = torch.multinomial(probs, 1, generator=generator).to(tokens.device)
        tokens = torch.cat([tokens, nxt], dim=1)
    model.train(was_training)
    return tokens
