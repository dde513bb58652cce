"""Greedy search. The search is not the model: it drives the model through `encode` and `decode` only."""

from __future__ import annotations

import torch

from transformer.layers import DecoderCache
from transformer.model import Transformer
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, until_eos


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src: torch.Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    use_cache: bool = True,
    min_len: int = 0,
) -> list[list[int]]:
    """Translate a batch of sources (batch, src_len) into piece ids, without BOS or EOS.

    Each sentence stops at its end-of-sentence token or at a*src_len+b pieces. Finished sentences leave the batch,
    so the remaining steps cost only what is still being decoded. With `use_cache`, self-attention keys and values
    grow by one position a step and cross-attention keys and values are computed once; without it, the whole
    prefix is recomputed every step (kept for tests and the benchmark). EOS is not allowed before `min_len` pieces.
    """
    batch = src.size(0)
    src_lens = (src != PAD_ID).sum(1)
    limits = (src_lens.float() * max_len_a + max_len_b).long().clamp(max=model.config.max_positions - 1)
    encoded = model.encode(src)
    steps = int(limits.max())
    tokens = torch.full((batch, steps), EOS_ID, dtype=torch.long, device=src.device)  # (batch, steps)
    alive = torch.arange(batch, device=src.device)  # original row of each sentence still being decoded
    cache = DecoderCache() if use_cache else None
    prefix = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=src.device)  # (alive, step + 1)
    for step in range(steps):
        step_input = prefix[:, -1:] if cache is not None else prefix
        logits = model.decode(step_input, encoded, cache).logits[:, -1]  # (alive, vocab)
        if step < min_len:
            logits[:, EOS_ID] = float("-inf")
        next_ids = logits.argmax(-1)  # (alive,)
        tokens[alive, step] = next_ids
        done = (next_ids == EOS_ID) | (limits[alive] <= step + 1)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            alive, next_ids, prefix = alive[keep], next_ids[keep], prefix[keep]
            encoded = encoded.select(keep)
            if cache is not None:
                cache.reorder(keep)
        prefix = torch.cat([prefix, next_ids[:, None]], dim=1)
    return [until_eos(row) for row in tokens.tolist()]
