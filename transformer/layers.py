"""The parts of the Transformer, in the paper's order: positions, feed-forward, the encoder layer, the decoder layer.

Each layer has one named method a sublayer (self-attention, cross-attention, feed-forward) and a `forward` that
writes the residual connections out: pre-norm (`x + sublayer(norm(x))`, stable to train) or post-norm
(`norm(x + sublayer(x))`, the original paper), as `torch.nn.TransformerDecoderLayer` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from transformer.attention import MultiHeadAttention
from transformer.config import ModelConfig
from transformer.dropout import Dropout


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

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.ReLU(),
            Dropout(config.dropout),
            nn.Linear(config.d_ff, config.d_model),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (batch, len, d_model)


@dataclass
class LayerCache:
    """Keys and values one decoder layer has already computed, each (batch, heads, len, d_k)."""

    self_k: torch.Tensor | None = None  # (batch, heads, capacity, d_k): the first `length` positions are filled
    self_v: torch.Tensor | None = None
    length: int = 0
    cross_k: torch.Tensor | None = None  # computed once from the encoder output
    cross_v: torch.Tensor | None = None

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions' keys and values after the cached ones; return all of them.

        Why a buffer with room to spare: concatenating every step copies the whole prefix each time; doubling the
        capacity when full copies each position about once."""
        start, end = self.length, self.length + k.size(2)
        if self.self_k is None or end > self.self_k.size(2):
            shape = (k.size(0), k.size(1), max(2 * end, 16), k.size(3))  # (batch, heads, capacity, d_k)
            grown_k, grown_v = k.new_empty(shape), v.new_empty(shape)
            if self.self_k is not None:
                grown_k[:, :, :start], grown_v[:, :, :start] = self.self_k[:, :, :start], self.self_v[:, :, :start]
            self.self_k, self.self_v = grown_k, grown_v
        self.self_k[:, :, start:end], self.self_v[:, :, start:end] = k, v
        self.length = end
        return self.self_k[:, :, :end], self.self_v[:, :, :end]  # each (batch, heads, all_tgt_len, d_k)

    def reorder(self, indices: torch.Tensor, cross: bool) -> None:
        """Keep (and reorder) the batch rows in `indices`; `cross=False` leaves the cross-attention rows as they are."""
        names = ("self_k", "self_v", "cross_k", "cross_v") if cross else ("self_k", "self_v")
        for name in names:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, indices))


@dataclass
class DecoderCache:
    """The decoder's key/value cache: one LayerCache a layer, plus how many target positions it holds."""

    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0

    def reorder(self, indices: torch.Tensor, cross: bool = True) -> None:
        """Keep (and reorder) the batch rows in `indices`: drops finished sentences, or follows beams. The beams of
        one sentence share their cross-attention keys and values: `cross=False` leaves those where they are."""
        for layer in self.layers:
            layer.reorder(indices, cross)


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the feed-forward network."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.self_attention = MultiHeadAttention(config.d_model, config.heads, config.attention_dropout)
        self.feed_forward = FeedForward(config)
        self.self_attention_norm = nn.LayerNorm(config.d_model)
        self.feed_forward_norm = nn.LayerNorm(config.d_model)
        self.dropout = Dropout(config.dropout)  # on each sublayer's output, before the residual sum

    def forward(
        self, x: torch.Tensor, src_mask: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (batch, src_len, d_model); src_mask: (batch, 1, 1, src_len). Returns x, and the weights when asked."""
        if self.pre_norm:
            attended, weights = self.self_attend(self.self_attention_norm(x), src_mask, need_weights)
            x = x + self.dropout(attended)
            x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        else:
            attended, weights = self.self_attend(x, src_mask, need_weights)
            x = self.self_attention_norm(x + self.dropout(attended))
            x = self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))
        return x, weights

    def self_attend(
        self, x: torch.Tensor, src_mask: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every source position reads every real source position."""
        k, v = self.self_attention.keys_values(x)  # each (batch, heads, src_len, d_k)
        return self.self_attention(x, k, v, src_mask, need_weights)


class DecoderLayer(nn.Module):
    """Masked self-attention over the target so far, cross-attention to the source, then the feed-forward network."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.self_attention = MultiHeadAttention(config.d_model, config.heads, config.attention_dropout)
        self.cross_attention = MultiHeadAttention(config.d_model, config.heads, config.attention_dropout)
        self.feed_forward = FeedForward(config)
        self.self_attention_norm = nn.LayerNorm(config.d_model)
        self.cross_attention_norm = nn.LayerNorm(config.d_model)
        self.feed_forward_norm = nn.LayerNorm(config.d_model)
        self.dropout = Dropout(config.dropout)  # on each sublayer's output, before the residual sum

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor,
        src_mask: torch.Tensor,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x: (batch, tgt_len, d_model) new target positions; memory: (batch, src_len, d_model) encoder output.

        self_mask: (batch or 1, 1, tgt_len, all_tgt_len) causal + padding; src_mask: (batch, 1, 1, src_len).
        Returns x and, when asked, the self- and cross-attention weights.
        """
        if self.pre_norm:
            attended, self_weights = self.self_attend(self.self_attention_norm(x), self_mask, cache, need_weights)
            x = x + self.dropout(attended)
            attended, cross_weights = self.cross_attend(
                self.cross_attention_norm(x), memory, src_mask, cache, need_weights
            )
            x = x + self.dropout(attended)
            x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        else:
            attended, self_weights = self.self_attend(x, self_mask, cache, need_weights)
            x = self.self_attention_norm(x + self.dropout(attended))
            attended, cross_weights = self.cross_attend(x, memory, src_mask, cache, need_weights)
            x = self.cross_attention_norm(x + self.dropout(attended))
            x = self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))
        return x, self_weights, cross_weights

    def self_attend(
        self, x: torch.Tensor, self_mask: torch.Tensor, cache: LayerCache | None, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each new target position reads itself and the positions before it (the mask hides the later ones)."""
        k, v = self.self_attention.keys_values(x)  # each (batch, heads, new_len, d_k)
        if cache is not None:  # earlier positions come from earlier steps, the new ones join them
            k, v = cache.extend(k, v)  # each (batch, heads, all_tgt_len, d_k)
        return self.self_attention(x, k, v, self_mask, need_weights)

    def cross_attend(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: LayerCache | None,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder's queries read the encoder's keys and values (computed once a sentence when caching)."""
        if cache is not None and cache.cross_k is not None:
            k, v = cache.cross_k, cache.cross_v
        else:
            k, v = self.cross_attention.keys_values(memory)  # each (batch, heads, src_len, d_k)
            if cache is not None:
                cache.cross_k, cache.cross_v = k, v
        return self.cross_attention(x, k, v, src_mask, need_weights)
