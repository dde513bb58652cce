"""Translate text with a trained model: the Python API behind `scripts/translate.py` and `scripts/evaluate.py`.

from transformer import Translator
Translator.from_checkpoint("runs/demo").translate(["The black cat sleeps."])
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from transformer.checkpoint import read_checkpoint
from transformer.config import DecodingConfig
from transformer.decoding import greedy_decode
from transformer.device import autocast, resolve_device, use_bf16
from transformer.model import Transformer
from transformer.specials import BOS_ID, EOS_ID, pad
from transformer.text import clean_text
from transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class AttentionMap:
    """Cross-attention of one sentence: which source pieces each target piece read."""

    src_pieces: list[str]
    tgt_pieces: list[str]
    weights: torch.Tensor  # (layers, heads, tgt_len, src_len)


class Translator:
    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        decoding: DecodingConfig,
        device: torch.device,
        bf16: bool,
    ) -> None:
        self.model, self.tokenizer, self.decoding = model, tokenizer, decoding
        self.device, self.bf16 = device, bf16
        self.max_src_len = model.config.max_positions - 1  # pieces, before the source's EOS

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto", precision: str | None = None) -> Translator:
        """Rebuild model and tokenizer from a checkpoint (or a run directory) alone."""
        checkpoint = read_checkpoint(path)
        model = checkpoint.build_model()
        dev = resolve_device(device)
        model.to(dev).eval()
        config = checkpoint.config
        return cls(
            model, checkpoint.tokenizer, config.decoding, dev, use_bf16(precision or config.training.precision, dev)
        )

    def encode_sources(self, sentences: list[str]) -> list[list[int]]:
        """Pieces + EOS for each sentence; too-long sentences are truncated (with a warning)."""
        ids = self.tokenizer.encode([clean_text(s) for s in sentences])
        too_long = sum(len(x) > self.max_src_len for x in ids)
        if too_long:
            log.warning("%d sentence(s) longer than %d pieces were truncated", too_long, self.max_src_len)
        return [x[: self.max_src_len] + [EOS_ID] for x in ids]

    def translate(self, sentences: list[str], use_cache: bool = True) -> list[str]:
        """One output line per input line, in order; an empty line gives an empty line."""
        ids = self.encode_sources(sentences)
        outputs: list[list[int]] = [[] for _ in sentences]
        order = sorted((i for i in range(len(ids)) if len(ids[i]) > 1), key=lambda i: len(ids[i]))
        self.model.eval()
        for start in range(0, len(order), self.decoding.batch_size):
            rows = order[start : start + self.decoding.batch_size]
            src = pad([ids[i] for i in rows]).to(self.device)  # (batch, src_len)
            with autocast(self.device, self.bf16):
                hyps = greedy_decode(
                    self.model, src, self.decoding.max_len_a, self.decoding.max_len_b, use_cache=use_cache
                )
            for row, hyp in zip(rows, hyps, strict=True):
                outputs[row] = hyp
        return self.tokenizer.decode(outputs)

    @torch.no_grad()
    def attention(self, sentence: str) -> AttentionMap:
        """Translate one sentence and return the cross-attention weights of every layer and head."""
        src_ids = self.encode_sources([sentence])[0]
        src = torch.tensor([src_ids], device=self.device)  # (1, src_len)
        hyp = greedy_decode(self.model, src, self.decoding.max_len_a, self.decoding.max_len_b)[0]
        tgt_in = torch.tensor([[BOS_ID, *hyp]], device=self.device)  # (1, tgt_len)
        out = self.model.decode(tgt_in, self.model.encode(src), need_weights=True)
        weights = torch.stack([w[0] for w in out.cross_weights]).float().cpu()  # (layers, heads, tgt_len, src_len)
        return AttentionMap(self.tokenizer.pieces(src_ids), [*self.tokenizer.pieces(hyp), "</s>"], weights)
