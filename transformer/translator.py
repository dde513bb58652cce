"""Translate text with a trained model: the Python API behind `mini-transformer translate`, `evaluate` and `serve`.

    from transformer import Translator
    Translator.from_checkpoint("runs/demo").translate(["The black cat sleeps."])

Imports only what inference needs: no corpus readers, no trainer, no progress bars.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from dataclasses import dataclass

import torch

from transformer.checkpoint import Checkpoint, read_checkpoint
from transformer.config import DecodingConfig
from transformer.decoding import Hypothesis, Sampling, Search, beam_search, greedy_decode
from transformer.device import autocast, choose_bf16, resolve_device
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


SEARCH_RULES = {  # each search setting a user may give: its name in a message, its rule, the rule's test
    "beam_size": ("the beam size", ">= 1", lambda v: v >= 1),
    "length_penalty": ("the length penalty alpha", ">= 0", lambda v: v >= 0),
    "temperature": ("the temperature", ">= 0 (0: no sampling)", lambda v: 0 <= v < math.inf),
    "top_k": ("top-k", ">= 0 (0: every piece)", lambda v: v >= 0),
    "top_p": ("top-p", "in (0, 1]", lambda v: 0 < v <= 1),
    "seed": ("the seed", ">= 0", lambda v: v >= 0),
}


def check_search(**settings: float | None) -> None:
    """A user's search settings (`Translator.with_search`'s arguments; None: the config's), a bad one as one line."""
    for key, value in settings.items():
        name, rule, ok = SEARCH_RULES[key]
        if value is not None and not ok(value):
            raise ToolkitError(f"{name} must be {rule}, got {value}")


def batch_seed(seed: int, batch: list[list[int]]) -> int:
    """The seed of one batch's sampling, from the user's seed and the batch's sources: the same seed and sentences
    draw the same (in any call, any chunk of a stream), and batches of other sentences draw otherwise."""
    digest = hashlib.blake2b(repr((seed, batch)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class Translator:
    def __init__(
        self, model: Transformer, tokenizer: Tokenizer, decoding: DecodingConfig, device: torch.device, bf16: bool
    ) -> None:
        self.model, self.tokenizer, self.decoding = model, tokenizer, decoding
        self.device, self.bf16 = device, bf16
        self.max_src_len = model.config.max_positions - 1  # pieces, before the source's EOS
        if 2 * decoding.beam_size > (vocab := model.embedding.num_embeddings):  # a step keeps 2 × beam candidates
            raise ToolkitError(
                f"the beam size must be at most {vocab // 2} (half the vocabulary), got {decoding.beam_size}"
            )

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike | Checkpoint, device: str = "auto", precision: str | None = None
    ) -> Translator:
        """Rebuild model and tokenizer from a checkpoint (a file, a run directory, or one already read) alone."""
        checkpoint = path if isinstance(path, Checkpoint) else read_checkpoint(path)
        dev = resolve_device(device)
        model = checkpoint.build_model().to(dev).eval()
        bf16, _ = choose_bf16(precision or checkpoint.config.training.precision, dev)
        return cls(model, checkpoint.tokenizer, checkpoint.config.decoding, dev, bf16)

    def encode_sources(self, sentences: list[str]) -> list[list[int]]:
        return encode_sources(self.tokenizer, sentences, self.max_src_len)

    def with_search(
        self,
        beam_size: int | None = None,
        length_penalty: float | None = None,
        *,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> Translator:
        """This translator with other search settings, None keeping its own (the model is shared, not copied). A
        temperature > 0 samples (`decoding.Sampling`), with beam size 1; top-k, top-p and the seed shape sampling only.
        A setting out of range, or one that does not go with the others, is a one-line ToolkitError."""
        asked = {"beam_size": beam_size, "length_penalty": length_penalty, "temperature": temperature}
        asked |= {"top_k": top_k, "top_p": top_p, "seed": seed}
        check_search(**asked)
        decoding = dataclasses.replace(self.decoding, **{key: v for key, v in asked.items() if v is not None})
        if decoding.temperature > 0 and decoding.beam_size > 1:
            raise ToolkitError(f"sampling takes beam size 1 (one draw a sentence), not {decoding.beam_size}")
        if decoding.temperature == 0 and (top_k, top_p, seed) != (None, None, None):
            raise ToolkitError("top-k, top-p and the seed shape sampling: give a temperature > 0 as well")
        return Translator(self.model, self.tokenizer, decoding, self.device, self.bf16)

    def translate(self, sentences: list[str]) -> list[str]:
        """One output line per input line, in order; an empty line gives an empty line."""
        return self.tokenizer.decode([hyps[0].ids if hyps else [] for hyps in self.search(sentences)])

    def translate_n_best(self, sentences: list[str], n_best: int) -> list[list[tuple[str, Hypothesis]]]:
        """The `n_best` best translations of each sentence, best first, with their scores (none for an empty line)."""
        hypotheses = [hyps or [Hypothesis([], 0.0, 0.0)] for hyps in self.search(sentences, n_best)]
        return [list(zip(self.tokenizer.decode([h.ids for h in hyps]), hyps, strict=True)) for hyps in hypotheses]

    def search(self, sentences: list[str], n_best: int | None = None) -> list[list[Hypothesis]]:
        """Greedy search for beam 1 without `n_best`, beam search (scored) otherwise, sampling at a temperature > 0;
        batches of similar lengths. Each batch samples from its own seed (`batch_seed`): the same sentences, seed and
        batch size give the same translations."""
        dec, search, sampling = self.decoding, Search.of(self.decoding), Sampling.of(self.decoding)
        beam = max(dec.beam_size, n_best or 1)
        if sampling is not None and (beam > 1 or n_best is not None):
            raise ToolkitError("sampling draws one translation a sentence, without a score: no n-best list")
        ids = self.encode_sources(sentences)
        outputs: list[list[Hypothesis]] = [[] for _ in sentences]
        order = sorted((i for i in range(len(ids)) if len(ids[i]) > 1), key=lambda i: len(ids[i]))
        self.model.eval()
        for start in range(0, len(order), dec.batch_size):
            rows = order[start : start + dec.batch_size]
            batch = [ids[i] for i in rows]
            src = pad(batch).to(self.device)  # (batch, src_len)
            if sampling is not None:
                sampling = dataclasses.replace(sampling, seed=batch_seed(dec.seed, batch))
            with autocast(self.device, self.bf16):
                if beam == 1 and n_best is None:
                    found = greedy_decode(self.model, src, search, sampling)
                    hyps = [[Hypothesis(x, math.nan, math.nan)] for x in found]
                else:
                    hyps = beam_search(self.model, src, beam, dec.length_penalty, n_best or 1, search)
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
        hyp = greedy_decode(self.model, src, Search.of(self.decoding))[0]
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
