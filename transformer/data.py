"""Clean sentence pairs → piece ids → token-budget batches with length bucketing: the last step of corpora →
corpus_cache → data. The training split arrives as memory-mapped piece ids (`corpus_cache`), and a batch plan needs
only their lengths, so memory stays flat in corpus size."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from transformer.corpora import Pairs
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, pad
from transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def encode_batch(pairs: dict[str, list[str]], tokenizer: Tokenizer) -> dict[str, list[list[int]]]:
    """Piece ids of a batch of pairs, each side ending with EOS: what `datasets.map` runs over a corpus."""
    return {side: [ids + [EOS_ID] for ids in tokenizer.encode(pairs[side])] for side in ("src", "tgt")}


@dataclass
class Encoded:
    """Piece ids of aligned pairs and their lengths, which is all a batch plan needs. The decoder reads BOS + the
    target without its EOS (see `collate`)."""

    ids: datasets.Dataset  # columns src and tgt, each ending with EOS; for the training split memory-mapped from disk
    src_lens: np.ndarray  # (pairs,) pieces + EOS: what the encoder reads
    tgt_lens: np.ndarray  # (pairs,) pieces + EOS: what the decoder predicts

    @classmethod
    def of(cls, ids: datasets.Dataset, max_len: int | None = None) -> Encoded:
        """Wrap encoded pairs; with `max_len`, leave out pairs where either side is longer (and report how many)."""
        src_lens, tgt_lens = (pc.list_value_length(ids.data.column(side)).to_numpy() for side in ("src", "tgt"))
        if max_len is not None:
            keep = (src_lens <= max_len) & (tgt_lens <= max_len)
            if not keep.all():
                dropped = len(keep) - int(keep.sum())
                log.info("length filter: dropped %d of %d pairs longer than %d pieces", dropped, len(keep), max_len)
                rows = np.flatnonzero(keep)
                ids, src_lens, tgt_lens = ids.select(rows), src_lens[rows], tgt_lens[rows]
        return cls(ids, src_lens.astype(np.int64), tgt_lens.astype(np.int64))

    def __len__(self) -> int:
        return len(self.src_lens)

    def mixed_with(self, other: Encoded, share: float, seed: int) -> Encoded:
        """These pairs and a seeded sample of `other`'s, drawn so that `share` of the result comes from `other` (or
        all of `other` when it has fewer): the same seed draws the same sample, so a resume sees the same data."""
        wanted = min(round(share / (1 - share) * len(self)), len(other))
        rows = np.sort(np.random.default_rng(seed).choice(len(other), size=wanted, replace=False))
        ids = datasets.concatenate_datasets([self.ids, other.ids.select(rows)])
        src_lens = np.concatenate([self.src_lens, other.src_lens[rows]])
        return Encoded(ids, src_lens, np.concatenate([self.tgt_lens, other.tgt_lens[rows]]))

    def rows(self, indices: np.ndarray | list[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Source and target ids of these pairs, gathered from the (memory-mapped) table."""
        rows = self.ids[np.asarray(indices).tolist()]
        return rows["src"], rows["tgt"]


def encode_pairs(pairs: Pairs, tokenizer: Tokenizer, max_len: int | None = None) -> Encoded:
    """Encode pairs held in memory (dev, tests); the training split is encoded on disk by `corpus_cache`."""
    ids = encode_batch({"src": pairs.src, "tgt": pairs.tgt}, tokenizer)
    return Encoded.of(datasets.Dataset.from_dict(ids), max_len)


@dataclass
class Batch:
    src: torch.Tensor  # (batch, src_len) piece ids, PAD_ID after the end
    tgt_in: torch.Tensor  # (batch, tgt_len) BOS + target: what the decoder reads
    tgt_out: torch.Tensor  # (batch, tgt_len) target + EOS: what it must predict
    src_tokens: int  # real (non-pad) tokens
    tgt_tokens: int

    def to(self, device: torch.device) -> Batch:
        return replace(self, src=self.src.to(device), tgt_in=self.tgt_in.to(device), tgt_out=self.tgt_out.to(device))


def collate(data: Encoded, indices: np.ndarray | list[int]) -> Batch:
    src_ids, tgt_ids = data.rows(indices)
    src, tgt_in, tgt_out = pad(src_ids), pad([[BOS_ID] + ids[:-1] for ids in tgt_ids]), pad(tgt_ids)
    return Batch(src, tgt_in, tgt_out, int((src != PAD_ID).sum()), int((tgt_out != PAD_ID).sum()))


def batch_plan(data: Encoded, batch_tokens: int, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """Group pairs of similar length into batches (arrays of pair indices, planned from the length arrays alone):
    sentences × the longest pair's source+target pieces ≤ `batch_tokens`. The padded size, sentences × (longest source
    + longest target), can be a little larger when those come from different pairs. Ties in length are broken at random
    and the batches shuffled, both from (seed, epoch): the same epoch gives the same plan, so resuming is exact.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    n = len(data)
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    order = order[np.lexsort((data.tgt_lens[order], data.src_lens[order]))]  # stable: ties keep the random order
    ends: list[int] = []
    count = longest = 0
    for position, length in enumerate((data.src_lens[order] + data.tgt_lens[order]).tolist()):
        if count and max(longest, length) * (count + 1) > batch_tokens:
            ends.append(position)
            count = longest = 0
        count += 1
        longest = max(longest, length)
    batches = np.split(order, ends)
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def padding_fraction(data: Encoded, batches: list[np.ndarray]) -> float:
    """Share of the token slots in these batches that are padding."""
    slots = real = 0
    for b in batches:
        s, t = data.src_lens[b], data.tgt_lens[b]
        slots += len(b) * int(s.max() + t.max())
        real += int(s.sum() + t.sum())
    return 1 - real / max(slots, 1)
