"""The encoder-decoder Transformer: `encode` once, `decode` many times (with a key/value cache when generating)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transformer.config import ModelConfig
from transformer.dropout import Dropout
from transformer.layers import DecoderCache, DecoderLayer, EncoderLayer, LayerCache, PositionalEncoding
from transformer.loss import projected_loss_sum
from transformer.masks import causal_mask, padding_mask
from transformer.specials import PAD_ID


@dataclass
class EncoderOutput:
    memory: torch.Tensor  # (batch, src_len, d_model)
    src_mask: torch.Tensor  # (batch, 1, 1, src_len) True = real source token
    self_weights: list[torch.Tensor] | None = None  # per layer (batch, heads, src_len, src_len), when asked

    def select(self, indices: torch.Tensor) -> EncoderOutput:
        """Keep the batch rows in `indices` (e.g. the sentences still being decoded)."""
        return EncoderOutput(self.memory.index_select(0, indices), self.src_mask.index_select(0, indices))


@dataclass
class DecoderOutput:
    logits: torch.Tensor  # (batch, tgt_len, vocab)
    self_weights: list[torch.Tensor] | None = None  # per layer (batch, heads, tgt_len, all_tgt_len), when asked
    cross_weights: list[torch.Tensor] | None = None  # per layer (batch, heads, tgt_len, src_len), when asked


class Transformer(nn.Module):
    """Embeddings (scaled by √d_model) + sinusoidal positions → N encoder layers; M decoder layers → logits.

    The vocabulary is joint, so one matrix serves as source embedding, target embedding and output projection.
    """

    def __init__(self, config: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        d, pre_norm = config.d_model, config.norm == "pre"
        self.embedding = nn.Embedding(vocab_size, d, padding_idx=PAD_ID)
        self.positions = PositionalEncoding(d, config.max_positions)
        self.dropout = Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        # Pre-norm leaves the residual stream unnormalized: one final norm on each side puts it back in scale.
        self.encoder_norm = nn.LayerNorm(d) if pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if pre_norm else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embedding" not in name:
                nn.init.xavier_uniform_(p)
        # Scaled by √d on the way in and used as the output projection: unit-variance logits at the start.
        nn.init.normal_(self.embedding.weight, std=self.config.d_model**-0.5)
        with torch.no_grad():
            self.embedding.weight[PAD_ID].zero_()

    def embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(batch, len) ids → (batch, len, d_model)."""
        x = self.embedding(ids) * math.sqrt(self.config.d_model) + self.positions(ids.size(1), offset)
        return self.dropout(x)

    def encode(self, src: torch.Tensor, need_weights: bool = False) -> EncoderOutput:
        """src: (batch, src_len) ids, PAD_ID-padded."""
        src_mask = padding_mask(src)  # (batch, 1, 1, src_len)
        x = self.embed(src)
        weights = [] if need_weights else None
        for layer in self.encoder_layers:
            x, w = layer(x, src_mask, need_weights)
            if weights is not None:
                weights.append(w)
        return EncoderOutput(self.encoder_norm(x), src_mask, weights)

    def decode(
        self, tgt: torch.Tensor, encoded: EncoderOutput, cache: DecoderCache | None = None, need_weights: bool = False
    ) -> DecoderOutput:
        """tgt: (batch, tgt_len) the target positions not yet in `cache` (all of them without a cache).

        With a cache, each call adds its positions' keys and values, so generating computes each position once.
        """
        states, self_weights, cross_weights = self.decoder_states(tgt, encoded, cache, need_weights)
        logits = F.linear(states, self.embedding.weight)  # (batch, tgt_len, vocab)
        return DecoderOutput(logits, self_weights, cross_weights)

    def decoder_states(
        self, tgt: torch.Tensor, encoded: EncoderOutput, cache: DecoderCache | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """The decoder's final states (batch, tgt_len, d_model), before the output projection."""
        offset = cache.length if cache is not None else 0
        if cache is not None and not cache.layers:
            cache.layers = [LayerCache() for _ in self.decoder_layers]
        total = offset + tgt.size(1)
        # The one place where the causal mask is made: position t sees positions ≤ t only.
        self_mask = causal_mask(tgt.size(1), total, tgt.device)  # (1, 1, tgt_len, total)
        if cache is None:  # generation (with a cache) only ever feeds real tokens; teacher forcing has padding
            self_mask = self_mask & padding_mask(tgt)  # (batch, 1, tgt_len, tgt_len)
        x = self.embed(tgt, offset)
        self_weights, cross_weights = ([], []) if need_weights else (None, None)
        for i, layer in enumerate(self.decoder_layers):
            layer_cache = cache.layers[i] if cache is not None else None
            x, sw, cw = layer(x, encoded.memory, self_mask, encoded.src_mask, layer_cache, need_weights)
            if need_weights:
                self_weights.append(sw)
                cross_weights.append(cw)
        if cache is not None:
            cache.length = total
        return self.decoder_norm(x), self_weights, cross_weights

    def forward(
        self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """Teacher forcing, what training computes: (batch, src_len) sources, (batch, tgt_len) BOS + target in,
        (batch, tgt_len) target + EOS out → the label-smoothed loss summed over the real target tokens."""
        states, _, _ = self.decoder_states(tgt_in, self.encode(src))  # (batch, tgt_len, d_model)
        return projected_loss_sum(states, self.embedding.weight, tgt_out, label_smoothing)
