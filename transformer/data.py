"""Corpora → clean sentence pairs → piece ids → token-budget batches with length bucketing.

Every corpus kind (demo, line files, TSV, JSONL, Hub) is read as a stream of cleaned pairs; from there on the path
is the same for all of them. The training split goes to disk (`corpus_cache.py`): its piece ids are a
memory-mapped `datasets.Dataset`, and a batch plan needs only their lengths, so memory stays flat in corpus size.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from transformer import demo_corpus as demo_corpus_module
from transformer.config import DataConfig
from transformer.demo_corpus import demo_corpus
from transformer.errors import DataError
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, pad
from transformer.text import GZIP_ERRORS, check_gzip, clean_text, gzip_problem, iter_lines
from transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}.{lang}.gz"


@dataclass
class Pairs:
    """Aligned source and target sentences of one split, in memory: dev and test splits, small corpora in tests."""

    src: list[str]
    tgt: list[str]

    def __len__(self) -> int:
        return len(self.src)


# ---------------------------------------------------------------------------------------------------------------
# Reading corpora: every kind becomes a stream of (source, target) pairs, never a list of the whole corpus


def split_name(config: DataConfig, role: str) -> str:
    """The configured split name for a role: train, dev or test."""
    return {"train": config.train_split, "dev": config.dev_split, "test": config.test_split}[role]


def read_pairs(config: DataConfig, role: str) -> Iterator[tuple[str, str]]:
    """The cleaned pairs of one split (role: train, dev or test), one at a time.

    Training drops pairs with an empty side; dev and test keep every line, so that a score lines up with its
    references. What was dropped or repaired is counted and logged when the stream ends.
    """
    name = split_name(config, role)
    kept = empty = repaired = 0
    for raw_src, raw_tgt in _raw_pairs(config, role):
        src, tgt = clean_text(raw_src), clean_text(raw_tgt)
        repaired += "\ufffd" in src or "\ufffd" in tgt
        if role == "train" and not (src and tgt):
            empty += 1
            continue
        kept += 1
        yield src, tgt
    if empty:
        log.info("%s: dropped %d of %d pairs with an empty side", name, empty, empty + kept)
    if repaired:
        log.info("%s: %d pairs had bytes that are not UTF-8 (each replaced by U+FFFD)", name, repaired)
    if role == "train" and not kept:
        raise DataError(f"split {name!r} has no usable sentence pairs")


def read_split(config: DataConfig, role: str) -> Pairs:
    """One split in memory (see `read_pairs`): for dev and test, which are small; training streams instead."""
    src, tgt = [], []
    for s, t in read_pairs(config, role):
        src.append(s)
        tgt.append(t)
    return Pairs(src, tgt)


def source_identity(config: DataConfig, role: str) -> dict[str, object]:
    """What a split's content depends on: its files with their sizes and times, or the generator and its settings.
    The training cache is keyed by it, so a changed file is read again."""
    name = split_name(config, role)
    fields = {"corpus": config.corpus, "split": name, "src_field": config.src_field, "tgt_field": config.tgt_field}
    if config.corpus == "demo":
        grammar = hashlib.sha256(Path(demo_corpus_module.__file__).read_bytes()).hexdigest()
        sizes = (config.demo_train_size, config.demo_dev_size, config.demo_test_size, config.demo_seed)
        return {**fields, "demo": sizes, "grammar": grammar}
    if config.corpus == "hub":
        return {**fields, "hub": [config.hub_name, config.hub_config]}
    if config.corpus in ("multi30k", "files") and config.path is None:
        return {**fields, "url": MULTI30K_URL, "langs": [config.src_lang, config.tgt_lang]}
    paths = _split_files(config, name, download=False)
    return {**fields, "files": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]}


def _raw_pairs(config: DataConfig, role: str) -> Iterator[tuple[str, str]]:
    name = split_name(config, role)
    if config.corpus == "demo":
        pairs = demo_corpus(config.demo_train_size, config.demo_dev_size, config.demo_test_size, config.demo_seed)
        yield from pairs[role]
    elif config.corpus in ("multi30k", "files"):
        yield from _parallel_lines(*_split_files(config, name))
    elif config.corpus in ("tsv", "jsonl"):
        (path,) = _split_files(config, name)
        builder, options = ("csv", {"delimiter": "\t", "quoting": 3}) if config.corpus == "tsv" else ("json", {})
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
        except Exception as e:  # datasets wraps parser errors in many types
            raise DataError(f"{path}: cannot be read as {config.corpus}: {str(e).splitlines()[0]}") from None
        yield from _select_fields(ds, config, str(path))
    else:
        try:
            ds = datasets.load_dataset(config.hub_name, config.hub_config, split=name)
        except Exception as e:
            raise DataError(f"Hub dataset {config.hub_name!r} split {name!r}: {str(e).splitlines()[0]}") from None
        yield from _select_fields(ds, config, f"Hub dataset {config.hub_name!r}")


def _split_files(config: DataConfig, name: str, download: bool = True) -> list[Path]:
    """The files of a split: NAME.SRC(.gz) and NAME.TGT(.gz), or NAME.tsv / NAME.jsonl."""
    if config.corpus in ("tsv", "jsonl"):
        path = Path(config.path or ".") / f"{name}.{config.corpus}"
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        return [path]
    directory = Path(config.path) if config.path or not download else multi30k_download(config, name)
    return [_find_file(directory, name, config.src_lang), _find_file(directory, name, config.tgt_lang)]


def _parallel_lines(src_path: Path, tgt_path: Path) -> Iterator[tuple[str, str]]:
    """Line i of the source file with line i of the target file; files of different lengths are an error."""
    for src, tgt in zip_longest(iter_lines(src_path), iter_lines(tgt_path)):
        if src is None or tgt is None:
            src_count, tgt_count = (sum(1 for _ in iter_lines(path)) for path in (src_path, tgt_path))
            raise DataError(f"{src_count} source lines in {src_path} but {tgt_count} target lines in {tgt_path}")
        yield src, tgt


def cache_root(config: DataConfig) -> Path:
    """data.cache_dir, or the user's cache directory ($XDG_CACHE_HOME, else ~/.cache) / mini-transformer."""
    if config.cache_dir:
        return Path(os.path.expanduser(config.cache_dir))
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "mini-transformer"


def multi30k_download(config: DataConfig, name: str) -> Path:
    """Fetch the raw Multi30k files of one split once into the cache directory; return that directory.

    A file enters the cache only whole (checked, then renamed into place); one found broken there (copied in, or
    left by an older version) is fetched again rather than read as a shorter corpus.
    """
    directory = cache_root(config) / "multi30k"
    directory.mkdir(parents=True, exist_ok=True)
    for lang in (config.src_lang, config.tgt_lang):
        target = directory / f"{name}.{lang}.gz"
        if target.exists():
            try:
                check_gzip(target)
                continue
            except DataError as e:
                log.warning("%s; downloading it again", e)
        url = MULTI30K_URL.format(name=name, lang=lang)
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"cannot download {url} ({e}); set data.path to a directory holding the files") from None
        try:
            gzip.decompress(payload)  # a connection cut short can still end without an error
        except GZIP_ERRORS as e:
            raise DataError(f"cannot download {url}: {gzip_problem(e, payload)}; try again") from None
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            partial.write_bytes(payload)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return directory


def _find_file(directory: Path, name: str, lang: str) -> Path:
    for candidate in (directory / f"{name}.{lang}.gz", directory / f"{name}.{lang}"):
        if candidate.is_file():
            return candidate
    raise DataError(f"data file not found: {directory / f'{name}.{lang}'}(.gz)")


def _select_fields(ds: datasets.Dataset, config: DataConfig, where: str) -> Iterator[tuple[str, str]]:
    """The configured source and target fields (dotted for nested ones, e.g. translation.en) of each row."""
    for dotted in (config.src_field, config.tgt_field):
        if dotted.split(".")[0] not in ds.column_names:
            raise DataError(f"{where}: no field {dotted!r}; columns are {', '.join(ds.column_names)}")

    def field(value: object, dotted: str) -> str:
        for part in dotted.split(".")[1:]:
            if not isinstance(value, dict) or part not in value:
                raise DataError(f"{where}: no field {dotted!r}; columns are {', '.join(ds.column_names)}")
            value = value[part]
        return "" if value is None else str(value)

    src_column, tgt_column = config.src_field.split(".")[0], config.tgt_field.split(".")[0]
    for rows in ds.iter(batch_size=10_000):  # Arrow batches: a Hub corpus stays memory-mapped on disk
        for src, tgt in zip(rows[src_column], rows[tgt_column], strict=True):
            yield field(src, config.src_field), field(tgt, config.tgt_field)


# ---------------------------------------------------------------------------------------------------------------
# Encoding and batching


def encode_batch(pairs: dict[str, list[str]], tokenizer: Tokenizer) -> dict[str, list[list[int]]]:
    """Piece ids of a batch of pairs, each side ending with EOS: what `datasets.map` runs over a corpus."""
    return {side: [ids + [EOS_ID] for ids in tokenizer.encode(pairs[side])] for side in ("src", "tgt")}


@dataclass
class Encoded:
    """Piece ids of aligned pairs: `ids` has columns src and tgt, each ending with EOS (for the training split a
    memory-mapped Arrow table on disk), and their lengths as arrays, which is all a batch plan needs. The decoder
    reads BOS + the target without its EOS (see `collate`)."""

    ids: datasets.Dataset
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

    def rows(self, indices: np.ndarray | list[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Source and target ids of these pairs, gathered from the (memory-mapped) table."""
        rows = self.ids[np.asarray(indices).tolist()]
        return rows["src"], rows["tgt"]


def encode_pairs(pairs: Pairs, tokenizer: Tokenizer, max_len: int | None = None) -> Encoded:
    """Encode pairs held in memory (dev, tests); the training split is encoded on disk by `corpus_cache`."""
    return Encoded.of(
        datasets.Dataset.from_dict(encode_batch({"src": pairs.src, "tgt": pairs.tgt}, tokenizer)), max_len
    )


@dataclass
class Batch:
    src: torch.Tensor  # (batch, src_len) piece ids, PAD_ID after the end
    tgt_in: torch.Tensor  # (batch, tgt_len) BOS + target: what the decoder reads
    tgt_out: torch.Tensor  # (batch, tgt_len) target + EOS: what it must predict
    src_tokens: int  # real (non-pad) tokens
    tgt_tokens: int

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.src_tokens, self.tgt_tokens
        )


def collate(data: Encoded, indices: np.ndarray | list[int]) -> Batch:
    src_ids, tgt_ids = data.rows(indices)
    src = pad(src_ids)
    tgt_in = pad([[BOS_ID] + ids[:-1] for ids in tgt_ids])  # BOS + target: what the decoder reads
    tgt_out = pad(tgt_ids)  # target + EOS: what it must predict
    return Batch(src, tgt_in, tgt_out, int((src != PAD_ID).sum()), int((tgt_out != PAD_ID).sum()))


def batch_plan(data: Encoded, batch_tokens: int, seed: int, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """Group pairs of similar length into batches: sentences × the longest pair's source+target pieces ≤ `batch_tokens`.

    That bounds the batch as if each pair were padded to the longest pair; the real padded size, sentences × (longest
    source + longest target), can be a little larger when those two lengths come from different pairs. Sorting by
    length keeps padding small; ties are broken at random and the batch order is shuffled, both from
    (seed, epoch), so that the same epoch always gives the same plan: that is what makes resuming exact. The plan is
    built from the length arrays alone, a batch being an array of pair indices.
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
