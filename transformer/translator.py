"""Translate text with a trained model: the Python API behind `scripts/translate.py` and `scripts/evaluate.py`.

    from transformer import Translator
    Translator.from_checkpoint("runs/demo").translate(["The black cat sleeps."])

Imports only what inference needs: no corpus readers, no trainer, no progress bars.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass

import torch

from transformer.checkpoint import Checkpoint, read_checkpoint
from transformer.config import DecodingConfig
from transformer.decoding import Hypothesis, beam_search, greedy_decode
from transformer.device import autocast, resolve_device, use_bf16
from transformer.errors import ToolkitError
from transformer.model import Transformer
from transformer.specials import BOS_ID, EOS_ID, pad
from transformer.text import clean_text
from transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)

ATTENTION_KINDS = ("cross", "encoder", "decoder")


@dataclass
class AttentionMap:
    """Attention of one translated sentence: which key pieces each query piece read, in every layer and head."""

    kind: str  # cross (target reads source), encoder (source reads source), decoder (target reads earlier target)
    query_pieces: list[str]
    key_pieces: list[str]
    weights: torch.Tensor  # (layers, heads, queries, keys)


def encode_sources(tokenizer: Tokenizer, sentences: list[str], max_src_len: int) -> list[list[int]]:
    """Pieces + EOS for each sentence; too-long sentences are truncated (with a warning). Every engine uses this."""
    ids = tokenizer.encode([clean_text(s) for s in sentences])
    too_long = sum(len(x) > max_src_len for x in ids)
    if too_long:
        log.warning("%d sentence(s) longer than %d pieces were truncated", too_long, max_src_len)
    return [x[:max_src_len] + [EOS_ID] for x in ids]


def check_search(beam_size: int | None, length_penalty: float | None) -> None:
    """A user's beam size or length penalty (None: the config's) as one line naming the problem."""
    if beam_size is not None and beam_size < 1:
        raise ToolkitError(f"the beam size must be >= 1, got {beam_size}")
    if length_penalty is not None and length_penalty < 0:
        raise ToolkitError(f"the length penalty alpha must be >= 0, got {length_penalty}")


class Translator:
    def __init__(
        self, model: Transformer, tokenizer: Tokenizer, decoding: DecodingConfig, device: torch.device, bf16: bool
    ) -> None:
        self.model, self.tokenizer, self.decoding = model, tokenizer, decoding
        self.device, self.bf16 = device, bf16
        self.max_src_len = model.config.max_positions - 1  # pieces, before the source's EOS

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike | Checkpoint, device: str = "auto", precision: str | None = None
    ) -> Translator:
        """Rebuild model and tokenizer from a checkpoint (a file, a run directory, or one already read) alone."""
        checkpoint = path if isinstance(path, Checkpoint) else read_checkpoint(path)
        dev = resolve_device(device)
        model = checkpoint.build_model().to(dev).eval()
        config = checkpoint.config
        bf16 = use_bf16(precision or config.training.precision, dev)
        return cls(model, checkpoint.tokenizer, config.decoding, dev, bf16)

    def encode_sources(self, sentences: list[str]) -> list[list[int]]:
        return encode_sources(self.tokenizer, sentences, self.max_src_len)

    def with_search(self, beam_size: int | None = None, length_penalty: float | None = None) -> Translator:
        """This translator with another beam size or length penalty (the model is shared, not copied)."""
        check_search(beam_size, length_penalty)
        d = self.decoding
        decoding = dataclasses.replace(
            d,
            beam_size=d.beam_size if beam_size is None else beam_size,
            length_penalty=d.length_penalty if length_penalty is None else length_penalty,
        )
        return Translator(self.model, self.tokenizer, decoding, self.device, self.bf16)

    def translate(self, sentences: list[str], use_cache: bool = True) -> list[str]:
        """One output line per input line, in order; an empty line gives an empty line."""
        hypotheses = self.search(sentences, 1, use_cache)
        return self.tokenizer.decode([hyps[0].ids if hyps else [] for hyps in hypotheses])

    def translate_n_best(self, sentences: list[str], n_best: int) -> list[list[tuple[str, Hypothesis]]]:
        """The `n_best` best translations of each sentence, best first, with their scores (none for an empty line)."""
        hypotheses = [hyps or [Hypothesis([], 0.0, 0.0)] for hyps in self.search(sentences, n_best, scored=True)]
        return [list(zip(self.tokenizer.decode([h.ids for h in hyps]), hyps, strict=True)) for hyps in hypotheses]

    def search(
        self, sentences: list[str], n_best: int = 1, use_cache: bool = True, scored: bool = False
    ) -> list[list[Hypothesis]]:
        """Greedy search for beam 1 (unless scores are wanted), beam search otherwise; batches of similar lengths."""
        d = self.decoding
        beam = max(d.beam_size, n_best)
        ids = self.encode_sources(sentences)
        outputs: list[list[Hypothesis]] = [[] for _ in sentences]
        order = sorted((i for i in range(len(ids)) if len(ids[i]) > 1), key=lambda i: len(ids[i]))
        self.model.eval()
        for start in range(0, len(order), d.batch_size):
            rows = order[start : start + d.batch_size]
            src = pad([ids[i] for i in rows]).to(self.device)  # (batch, src_len)
            with autocast(self.device, self.bf16):
                if beam == 1 and not scored:
                    found = greedy_decode(self.model, src, d.max_len_a, d.max_len_b, use_cache=use_cache)
                    hyps = [[Hypothesis(x, math.nan, math.nan)] for x in found]
                else:
                    hyps = beam_search(self.model, src, beam, d.length_penalty, n_best, d.max_len_a, d.max_len_b)
            for row, hyp in zip(rows, hyps, strict=True):
                outputs[row] = hyp
        return outputs

    def attention(self, sentence: str, kind: str = "cross") -> AttentionMap:
        """Translate one sentence and return the attention weights of `kind` in every layer and head."""
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        return self.attention_maps(sentence)[1][kind]

    @torch.no_grad()
    def attention_maps(self, sentence: str) -> tuple[str, dict[str, AttentionMap]]:
        """Translate one sentence greedily; its translation and the attention maps of every kind, from one pass."""
        src_ids = self.encode_sources([sentence])[0]
        src = torch.tensor([src_ids], device=self.device)  # (1, src_len)
        hyp = greedy_decode(self.model, src, self.decoding.max_len_a, self.decoding.max_len_b)[0]
        tgt_in = torch.tensor([[BOS_ID, *hyp]], device=self.device)  # (1, tgt_len): what the decoder read
        encoded = self.model.encode(src, need_weights=True)
        decoded = self.model.decode(tgt_in, encoded, need_weights=True)
        source, produced = self.tokenizer.pieces(src_ids), [*self.tokenizer.pieces(hyp), "</s>"]
        layers = {
            "cross": (decoded.cross_weights, produced, source),
            "encoder": (encoded.self_weights, source, source),
            "decoder": (decoded.self_weights, produced, ["<s>", *self.tokenizer.pieces(hyp)]),
        }
        maps = {
            kind: AttentionMap(kind, queries, keys, torch.stack([w[0] for w in weights]).float().cpu())
            for kind, (weights, queries, keys) in layers.items()
        }  # weights: (layers, heads, queries, keys)
        return self.tokenizer.decode([hyp])[0], maps
