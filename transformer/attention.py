"""Scaled dot-product attention, written as the math, and the multi-head module that serves all three uses.

    attention(Q, K, V) = softmax(Q Kᵀ / √d_k, masked) · V

- encoder self-attention:        Q, K, V from the source; source padding mask
- decoder masked self-attention: Q, K, V from the target; causal + target padding mask
- decoder cross-attention:       Q from the target, K and V from the encoder output; source padding mask
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, dropout: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit path. q: (batch, heads, q_len, d_k); k, v: (batch, heads, k_len, d_k); mask True = attend.

    Returns the output (batch, heads, q_len, d_k) and the weights (batch, heads, q_len, k_len).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (batch, heads, q_len, k_len)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # masked keys get exactly zero weight
    weights = scores.softmax(dim=-1)  # each query's weights over the keys sum to 1
    if dropout > 0:
        weights = F.dropout(weights, p=dropout)
    return weights @ v, weights  # (batch, heads, q_len, d_k)


def fused_is_faster(device: torch.device, dtype: torch.dtype, backward: bool) -> bool:
    """Whether `scaled_dot_product_attention` beats the explicit path. Not for a bf16 training step on a CPU: there
    PyTorch's fused kernel took 3.7× as long forward and backward on a Multi30k-shaped batch (Zen 4; see
    docs/benchmarks.md). Without a backward pass (decoding) the explicit path was no faster: the kernel stays."""
    return device.type != "cpu" or dtype != torch.bfloat16 or not backward


class MultiHeadAttention(nn.Module):
    """Projects into `heads` subspaces of size d_model / heads, attends in each, and projects back.

    The module only projects and splits heads; the attention itself is the function above (or its fused twin,
    `scaled_dot_product_attention`, which gives the same result faster but no weights).
    """

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.d_k, self.dropout = heads, d_model // heads, dropout
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)  # keys and values in one matmul
        self.out = nn.Linear(d_model, d_model)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, len, d_model) → keys and values, each (batch, heads, len, d_k)."""
        b, n, _ = x.shape
        kv = self.key_value(x).view(b, n, 2, self.heads, self.d_k)  # (batch, len, 2, heads, d_k)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, len, d_k)
        return k, v

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (batch, q_len, d_model) queries' input; k, v from `keys_values`. Returns (batch, q_len, d_model)."""
        b, n, d_model = x.shape
        q = self.query(x).view(b, n, self.heads, self.d_k).transpose(1, 2)  # (batch, heads, q_len, d_k)
        dropout = self.dropout if self.training else 0.0
        if need_weights or not fused_is_faster(q.device, q.dtype, torch.is_grad_enabled()):  # bf16 under autocast
            out, weights = attention(q, k, v, mask, dropout)
            weights = weights if need_weights else None
        else:
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
        out = out.transpose(1, 2).reshape(b, n, d_model)  # (batch, q_len, heads * d_k)
        return self.out(out), weights
