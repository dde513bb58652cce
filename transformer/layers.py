"""The parts of the Transformer: positions, feed-forward, the encoder and decoder layers, and the decoding cache."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from transformer.attention import MultiHeadAttention


class Dropout(nn.Module):
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p).

    Same as nn.Dropout, with a cheaper mask. A CPU's random generator is serial, and nn.Dropout draws a float per
    element; here each 64-bit draw yields the 16-bit random numbers of four elements (p is rounded to a multiple
    of 1/65536). Profiled over 10 Multi30k training steps on 2 cores: drawing the masks' random numbers took
    2.08 s with torch.rand and 0.47 s this way.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * dropout_mask(x.shape, self.p, x.dtype, x.device)


def dropout_mask(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor of `shape` holding 0 with probability p (rounded to 1/65536) and 1 / (1 - p) elsewhere."""
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)  # all 64 bits
    r = bits.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    dropped = round(p * 65536)  # how many of the 65,536 values mean "drop"
    return (r >= dropped - 32768).to(dtype) * (65536 / (65536 - dropped))


class PositionalEncoding(nn.Module):
    """Fixed sinusoids: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same)."""

    def __init__(self, d_model: int, max_positions: int) -> None:
        super().__init__()
        position = torch.arange(max_positions)[:, None]  # (max_positions, 1)
        frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))  # (d_model / 2,)
        table = torch.zeros(max_positions, d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer("table", table, persistent=False)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """(length, d_model) encodings of positions offset … offset + length - 1."""
        if offset + length > self.table.size(0):
            raise ValueError(
                f"sequence of {offset + length} positions exceeds model.max_positions={self.table.size(0)}"
            )
        return self.table[offset : offset + length]


class FeedForward(nn.Module):
    """Position-wise: the same two-layer MLP applied to every position on its own."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (batch, len, d_model)


class Sublayer(nn.Module):
    """Residual connection around a sublayer, with the norm before it (pre-norm) or after the sum (post-norm)."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm, self.dropout, self.pre_norm = nn.LayerNorm(d_model), Dropout(dropout), pre_norm

    def forward(self, x: torch.Tensor, sublayer) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`sublayer` maps its input to (output, attention weights or None)."""
        if self.pre_norm:
            out, weights = sublayer(self.norm(x))
            return x + self.dropout(out), weights
        out, weights = sublayer(x)
        return self.norm(x + self.dropout(out)), weights


@dataclass
class LayerCache:
    """Keys and values one decoder layer has already computed, each (batch, heads, len, d_k)."""

    self_k: torch.Tensor | None = None  # grows by one position a step
    self_v: torch.Tensor | None = None
    cross_k: torch.Tensor | None = None  # computed once from the encoder output
    cross_v: torch.Tensor | None = None


@dataclass
class DecoderCache:
    """The decoder's key/value cache: one LayerCache a layer, plus how many target positions it holds."""

    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0

    def reorder(self, indices: torch.Tensor) -> None:
        """Keep (and reorder) the batch rows in `indices`: drops finished sentences, or follows beams."""
        for layer in self.layers:
            for name in ("self_k", "self_v", "cross_k", "cross_v"):
                value = getattr(layer, name)
                if value is not None:
                    setattr(layer, name, value.index_select(0, indices))


class EncoderLayer(nn.Module):
    def __init__(
        self, d_model: int, heads: int, d_ff: int, dropout: float, attention_dropout: float, pre_norm: bool
    ) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(d_model, heads, attention_dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.attention_block = Sublayer(d_model, dropout, pre_norm)
        self.feed_forward_block = Sublayer(d_model, dropout, pre_norm)

    def forward(
        self, x: torch.Tensor, src_mask: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (batch, src_len, d_model); src_mask: (batch, 1, 1, src_len)."""

        def self_attend(h: torch.Tensor):
            k, v = self.self_attention.keys_values(h)
            return self.self_attention(h, k, v, src_mask, need_weights)

        x, weights = self.attention_block(x, self_attend)
        x, _ = self.feed_forward_block(x, lambda h: (self.feed_forward(h), None))
        return x, weights


class DecoderLayer(nn.Module):
    def __init__(
        self, d_model: int, heads: int, d_ff: int, dropout: float, attention_dropout: float, pre_norm: bool
    ) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(d_model, heads, attention_dropout)
        self.cross_attention = MultiHeadAttention(d_model, heads, attention_dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.self_attention_block = Sublayer(d_model, dropout, pre_norm)
        self.cross_attention_block = Sublayer(d_model, dropout, pre_norm)
        self.feed_forward_block = Sublayer(d_model, dropout, pre_norm)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None,
        src_mask: torch.Tensor,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x: (batch, tgt_len, d_model) new target positions; memory: (batch, src_len, d_model) encoder output.

        self_mask: (batch or 1, 1, tgt_len, all_tgt_len) causal + padding; src_mask: (batch, 1, 1, src_len).
        """

        def self_attend(h: torch.Tensor):
            k, v = self.self_attention.keys_values(h)  # (batch, heads, tgt_len, d_k)
            if cache is not None:
                if cache.self_k is not None:  # earlier positions were computed in earlier steps
                    k = torch.cat([cache.self_k, k], dim=2)  # (batch, heads, all_tgt_len, d_k)
                    v = torch.cat([cache.self_v, v], dim=2)
                cache.self_k, cache.self_v = k, v
            return self.self_attention(h, k, v, self_mask, need_weights)

        def cross_attend(h: torch.Tensor):
            if cache is not None and cache.cross_k is not None:
                k, v = cache.cross_k, cache.cross_v
            else:
                k, v = self.cross_attention.keys_values(memory)  # (batch, heads, src_len, d_k)
                if cache is not None:
                    cache.cross_k, cache.cross_v = k, v
            return self.cross_attention(h, k, v, src_mask, need_weights)

        x, self_weights = self.self_attention_block(x, self_attend)
        x, cross_weights = self.cross_attention_block(x, cross_attend)
        x, _ = self.feed_forward_block(x, lambda h: (self.feed_forward(h), None))
        return x, self_weights, cross_weights
