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

    self_k: torch.Tensor | None = None  # grows by one position a step
    self_v: torch.Tensor | None = None
    cross_k: torch.Tensor | None = None  # computed once from the encoder output
    cross_v: torch.Tensor | None = None


@dataclass
class DecoderCache:
    """The decoder's key/value cache: one LayerCache a layer, plus how many target positions it holds."""

    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0

    def reorder(self, indices: torch.Tensor, cross: bool = True) -> None:
        """Keep (and reorder) the batch rows in `indices`: drops finished sentences, or follows beams. The beams of
        one sentence share their cross-attention keys and values: `cross=False` leaves those where they are."""
        names = ("self_k", "self_v", "cross_k", "cross_v") if cross else ("self_k", "self_v")
        for layer in self.layers:
            for name in names:
                value = getattr(layer, name)
                if value is not None:
                    setattr(layer, name, value.index_select(0, indices))


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
        if cache is not None:  # the cache update: earlier positions come from earlier steps, the new ones join them
            if cache.self_k is not None:
                k = torch.cat([cache.self_k, k], dim=2)  # (batch, heads, all_tgt_len, d_k)
                v = torch.cat([cache.self_v, v], dim=2)
            cache.self_k, cache.self_v = k, v
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
