"""Corpora → clean sentence pairs → piece ids → token-budget batches with length bucketing.

Every corpus kind is read into a Hugging Face `datasets.Dataset` with two columns, `src` and `tgt`; from there on
the path is the same for all of them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch

from transformer.config import DataConfig
from transformer.demo_corpus import demo_corpus
from transformer.errors import DataError
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, pad
from transformer.text import clean_text, read_lines
from transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}.{lang}.gz"


@dataclass
class Pairs:
    """Aligned source and target sentences of one split."""

    src: list[str]
    tgt: list[str]

    def __len__(self) -> int:
        return len(self.src)


# ---------------------------------------------------------------------------------------------------------------
# Reading corpora


def split_name(config: DataConfig, role: str) -> str:
    """The configured split name for a role: train, dev or test."""
    return {"train": config.train_split, "dev": config.dev_split, "test": config.test_split}[role]


def load_dataset(config: DataConfig, role: str) -> datasets.Dataset:
    """Read one split (role: train, dev or test) into a Dataset with `src` and `tgt` columns."""
    name = split_name(config, role)
    if config.corpus == "demo":
        pairs = demo_corpus(config.demo_train_size, config.demo_dev_size, config.demo_test_size, config.demo_seed)
        src, tgt = zip(*pairs[role], strict=True)
        return datasets.Dataset.from_dict({"src": list(src), "tgt": list(tgt)})
    if config.corpus in ("multi30k", "files"):
        directory = Path(config.path) if config.path else multi30k_download(config, name)
        src = read_lines(_find_file(directory, name, config.src_lang))
        tgt = read_lines(_find_file(directory, name, config.tgt_lang))
        if len(src) != len(tgt):
            raise DataError(
                f"split {name!r}: {len(src)} source lines in {_find_file(directory, name, config.src_lang)} but "
                f"{len(tgt)} target lines in {_find_file(directory, name, config.tgt_lang)}"
            )
        return datasets.Dataset.from_dict({"src": src, "tgt": tgt})
    if config.corpus in ("tsv", "jsonl"):
        path = Path(config.path or ".") / f"{name}.{config.corpus}"
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        builder, options = ("csv", {"delimiter": "\t", "quoting": 3}) if config.corpus == "tsv" else ("json", {})
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
        except Exception as e:  # datasets wraps parser errors in many types
            raise DataError(f"{path}: cannot be read as {config.corpus}: {str(e).splitlines()[0]}") from None
        return _select_fields(ds, config, str(path))
    try:  # hub
        ds = datasets.load_dataset(config.hub_name, config.hub_config, split=name)
    except Exception as e:
        raise DataError(f"Hub dataset {config.hub_name!r} split {name!r}: {str(e).splitlines()[0]}") from None
    return _select_fields(ds, config, f"Hub dataset {config.hub_name!r}")


def read_split(config: DataConfig, role: str) -> Pairs:
    """Read and clean one split. Training drops pairs with an empty side; dev and test keep every line."""
    ds = load_dataset(config, role)
    src = [clean_text(s) for s in ds["src"]]
    tgt = [clean_text(t) for t in ds["tgt"]]
    if role == "train":
        keep = [i for i in range(len(src)) if src[i] and tgt[i]]
        if len(keep) < len(src):
            log.info("train: dropped %d of %d pairs with an empty side", len(src) - len(keep), len(src))
        src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
        if not src:
            raise DataError(f"split {split_name(config, role)!r} has no usable sentence pairs")
    return Pairs(src, tgt)


def multi30k_download(config: DataConfig, name: str) -> Path:
    """Fetch the raw Multi30k files of one split once into the cache directory; return that directory."""
    directory = Path(os.path.expanduser(config.cache_dir)) / "multi30k"
    directory.mkdir(parents=True, exist_ok=True)
    for lang in (config.src_lang, config.tgt_lang):
        target = directory / f"{name}.{lang}.gz"
        if target.exists():
            continue
        url = MULTI30K_URL.format(name=name, lang=lang)
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except OSError as e:
            raise DataError(f"cannot download {url} ({e}); set data.path to a directory holding the files") from None
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as tmp:
            tmp.write(payload)
        os.replace(tmp.name, target)
    return directory


def _find_file(directory: Path, name: str, lang: str) -> Path:
    for candidate in (directory / f"{name}.{lang}.gz", directory / f"{name}.{lang}"):
        if candidate.is_file():
            return candidate
    raise DataError(f"data file not found: {directory / f'{name}.{lang}'}(.gz)")


def _select_fields(ds: datasets.Dataset, config: DataConfig, where: str) -> datasets.Dataset:
    def field(row: dict, dotted: str) -> str:
        value = row
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise DataError(f"{where}: no field {dotted!r}; columns are {', '.join(ds.column_names)}")
            value = value[part]
        return "" if value is None else str(value)

    src = [field(row, config.src_field) for row in ds]
    tgt = [field(row, config.tgt_field) for row in ds]
    return datasets.Dataset.from_dict({"src": src, "tgt": tgt})


# ---------------------------------------------------------------------------------------------------------------
# Encoding and batching


@dataclass
class Encoded:
    """Piece ids of aligned pairs, each side ending with EOS: `len()` of either side is what the model reads or
    predicts. The decoder reads BOS + the target without its EOS (see `collate`)."""

    src: list[list[int]]
    tgt: list[list[int]]


def encode_pairs(pairs: Pairs, tokenizer: Tokenizer, max_len: int | None = None) -> Encoded:
    """Encode; with `max_len`, drop pairs where either side is longer (and report how many)."""
    src = [ids + [EOS_ID] for ids in tokenizer.encode(pairs.src)]
    tgt = [ids + [EOS_ID] for ids in tokenizer.encode(pairs.tgt)]
    if max_len is not None:
        keep = [i for i in range(len(src)) if len(src[i]) <= max_len and len(tgt[i]) <= max_len]
        if len(keep) < len(src):
            log.info(
                "length filter: dropped %d of %d pairs longer than %d pieces", len(src) - len(keep), len(src), max_len
            )
        src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    return Encoded(src, tgt)


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


def collate(data: Encoded, indices: list[int]) -> Batch:
    src = pad([data.src[i] for i in indices])
    tgt_in = pad([[BOS_ID] + data.tgt[i][:-1] for i in indices])  # BOS + target: what the decoder reads
    tgt_out = pad([data.tgt[i] for i in indices])  # target + EOS: what it must predict
    return Batch(src, tgt_in, tgt_out, int((src != PAD_ID).sum()), int((tgt_out != PAD_ID).sum()))


def batch_plan(data: Encoded, batch_tokens: int, seed: int, epoch: int, shuffle: bool = True) -> list[list[int]]:
    """Group pairs of similar length into batches: sentences × the longest pair's source+target pieces ≤ `batch_tokens`.

    That bounds the batch as if each pair were padded to the longest pair; the real padded size, sentences × (longest
    source + longest target), can be a little larger when those two lengths come from different pairs. Sorting by
    length keeps padding small; ties are broken at random and the batch order is shuffled, both from
    (seed, epoch), so that the same epoch always gives the same plan: that is what makes resuming exact.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(data.src), generator=generator).tolist() if shuffle else list(range(len(data.src)))
    order.sort(key=lambda i: (len(data.src[i]), len(data.tgt[i])))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = len(data.src[i]) + len(data.tgt[i])
        if current and max(longest, length) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def padding_fraction(data: Encoded, batches: list[list[int]]) -> float:
    """Share of the token slots in these batches that are padding."""
    slots = real = 0
    for b in batches:
        s = [len(data.src[i]) for i in b]
        t = [len(data.tgt[i]) for i in b]
        slots += len(b) * (max(s) + max(t))
        real += sum(s) + sum(t)
    return 1 - real / max(slots, 1)
