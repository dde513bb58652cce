"""The training split on disk, the middle step of corpora → corpus_cache → data: its cleaned text streamed into an
Arrow file, the tokenizer trained on a sample of it, its piece ids encoded by `datasets.map` (in several processes
when it is large) into Arrow files that training reads memory-mapped. Each is made once, keyed by what it depends on:

    corpora/<split>-<key>/text.arrow               the corpus: its files with their sizes and times (`source_identity`)
    corpora/<split>-<key>/tokenizer-<key>.model    + the tokenizer config, sample size included
    corpora/<split>-<key>/ids-<key>/               + the tokenizer's own bytes

data.max_len only filters the cached ids by their lengths at each start, so changing it costs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from transformer.config import Config, DataConfig
from transformer.corpora import cache_root, read_pairs, source_identity, split_name
from transformer.data import Encoded, encode_batch
from transformer.files import atomic_file
from transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when reading, cleaning or encoding changes what a cached file holds
WRITE_BATCH = 50_000  # pairs per Arrow record batch while the corpus streams in
PARALLEL_FROM = 100_000  # pairs from which encoding uses every core (below that, starting processes costs more)
SCHEMA = pa.schema([("src", pa.string()), ("tgt", pa.string())])


def cached_text(config: DataConfig, role: str = "train") -> datasets.Dataset:
    """The cleaned pairs of a split (see `read_pairs`) as a memory-mapped Arrow table, read from the corpus once."""
    identity = {"version": CACHE_VERSION, "role": role, **source_identity(config, role)}
    path = cache_root(config) / "corpora" / f"{split_name(config, role)}-{_digest(identity)}" / "text.arrow"
    if path.is_file():
        text = datasets.Dataset.from_file(str(path))
        log.info("%s: %d pairs of text from the cache %s", split_name(config, role), len(text), path.parent)
        return text
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(desc="reading", unit=" pairs", unit_scale=True, disable=None, file=sys.stderr, leave=False)
    try:
        with bar, atomic_file(path) as file, pa.ipc.new_stream(file, SCHEMA) as writer:
            pairs = read_pairs(config, role)
            while chunk := list(islice(pairs, WRITE_BATCH)):
                src, tgt = zip(*chunk, strict=True)
                writer.write_batch(pa.record_batch([pa.array(src, pa.string()), pa.array(tgt, pa.string())], SCHEMA))
                bar.update(len(chunk))
    except BaseException:  # a corpus that fails to read (a truncated gzip file, a line count that differs)
        with contextlib.suppress(OSError):  # leaves no cache entry behind, not even an empty one
            path.parent.rmdir()
        raise
    text = datasets.Dataset.from_file(str(path))
    log.info("%s: read %d pairs in %.1f s into %s", split_name(config, role), len(text), _since(started), path)
    return text


def cached_tokenizer(config: Config, text: datasets.Dataset) -> Tokenizer:
    """The joint tokenizer trained on the training text (on a sample of it when it is large), trained once."""
    home = _home(text)
    key = _digest({"text": home.name, **dataclasses.asdict(config.tokenizer)})
    path = home / f"tokenizer-{key}.model"
    if path.is_file():
        log.info("tokenizer: from the cache %s", path)
        return Tokenizer(path.read_bytes())
    started, sentences, sample = time.perf_counter(), 2 * len(text), config.tokenizer.sample_sentences
    drawn = f"all {sentences}" if sentences <= sample else f"a random {sample} of the {sentences}"
    log.info("training the tokenizer on %s sentences", drawn)
    tokenizer = Tokenizer.train(_sentences(text, sample), config.tokenizer)
    with atomic_file(path) as file:
        file.write(tokenizer.model_bytes)
    log.info("tokenizer: trained in %.1f s, saved to %s", _since(started), path)
    return tokenizer


def cached_ids(config: DataConfig, text: datasets.Dataset, tokenizer: Tokenizer) -> Encoded:
    """The piece ids of the training text, memory-mapped, encoded once per tokenizer; data.max_len applied."""
    directory = _home(text) / f"ids-{hashlib.sha256(tokenizer.model_bytes).hexdigest()[:16]}"
    done = directory / "done.json"  # written last: the ids are complete
    if done.is_file():
        files = json.loads(done.read_text())["files"]
        ids = datasets.concatenate_datasets([datasets.Dataset.from_file(str(directory / f)) for f in files])
        log.info("%s: %d pairs of piece ids from the cache %s", config.train_split, len(ids), directory)
        return Encoded.of(ids, config.max_len)
    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = cores if len(text) >= PARALLEL_FROM else 1
    dtype = "uint16" if tokenizer.vocab_size <= 2**16 else "int32"
    ids = text.map(
        encode_batch,
        fn_kwargs={"tokenizer": tokenizer},
        batched=True,
        batch_size=10_000,
        num_proc=workers if workers > 1 else None,
        features=datasets.Features({side: datasets.Sequence(datasets.Value(dtype)) for side in ("src", "tgt")}),
        remove_columns=["src", "tgt"],  # replaced by the ids of the same names
        cache_file_name=str(directory / "ids.arrow"),
        new_fingerprint=directory.name,
        desc="encoding",
    )
    files = [Path(f["filename"]).name for f in ids.cache_files]
    with atomic_file(done) as file:
        file.write(json.dumps({"files": files, "pairs": len(ids)}).encode())
    log.info("%s: encoded %d pairs in %.1f s into %s", config.train_split, len(ids), _since(started), directory)
    return Encoded.of(ids, config.max_len)


def _home(text: datasets.Dataset) -> Path:
    """The cache directory of a corpus's text (from `cached_text`): its tokenizers and ids are kept beside it."""
    return Path(text.cache_files[0]["filename"]).parent


def _sentences(text: datasets.Dataset, sample: int) -> Iterator[str]:
    """All source sentences, then all target sentences, streamed from the Arrow table; from a larger corpus, both
    sides of `sample // 2` pairs drawn with a fixed seed. Drawn here, not by SentencePiece's own reservoir: that one
    draws a different sample in every process, so the same corpus would give another tokenizer on each cold start."""
    if 2 * len(text) > sample:
        rows = np.sort(np.random.default_rng(1).choice(len(text), size=sample // 2, replace=False))
        text = text.select(rows)
    for side in ("src", "tgt"):
        for chunk in text.with_format("arrow").iter(batch_size=WRITE_BATCH):
            yield from chunk.column(side).to_pylist()


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _since(started: float) -> float:
    return time.perf_counter() - started
