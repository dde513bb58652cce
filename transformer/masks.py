"""Masks have one home and one convention: boolean, True = this query may attend to this key.

That is the convention of `torch.nn.functional.scaled_dot_product_attention`, so masks pass to it unchanged.
Padding masks are built once per batch; the causal mask is added in one place, inside the decoder.
"""

from __future__ import annotations

import torch

from transformer.specials import PAD_ID


def padding_mask(ids: torch.Tensor) -> torch.Tensor:
    """(batch, len) ids → (batch, 1, 1, len): keys that are real tokens, broadcast over heads and queries."""
    return (ids != PAD_ID)[:, None, None, :]


def causal_mask(query_len: int, key_len: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, 1, query_len, key_len): query i (the last `query_len` of `key_len` positions) sees keys up to itself.

    With a cache the queries are the newest positions, so query i sits at absolute position key_len - query_len + i.
    A position never sees a later one: that would be reading the answer.
    """
    offset = key_len - query_len
    q = torch.arange(query_len, device=device)[:, None] + offset
    k = torch.arange(key_len, device=device)[None, :]
    return (k <= q)[None, None]
