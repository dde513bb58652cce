"""Corpora → clean sentence pairs, the first step of corpora → corpus_cache → data. Every corpus kind (demo, line
files, TSV, JSONL, Hub) is read as a stream of cleaned pairs, never a list of the whole corpus; Multi30k is fetched
once into the cache directory."""

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

from transformer import demo_corpus as demo
from transformer.config import DataConfig
from transformer.errors import DataError
from transformer.files import atomic_file
from transformer.text import GZIP_ERRORS, check_gzip, clean_text, gzip_problem, iter_lines

log = logging.getLogger(__name__)

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}.{lang}.gz"


@dataclass
class Pairs:
    """Aligned source and target sentences of one split, in memory: dev and test splits, small corpora in tests."""

    src: list[str]
    tgt: list[str]

    def __len__(self) -> int:
        return len(self.src)


def split_name(config: DataConfig, role: str) -> str:
    """The configured split name for a role: train, dev or test."""
    return {"train": config.train_split, "dev": config.dev_split, "test": config.test_split}[role]


def read_pairs(config: DataConfig, role: str) -> Iterator[tuple[str, str]]:
    """The cleaned pairs of one split (role: train, dev or test), one at a time. Training drops pairs with an empty
    side; dev and test keep every line, so that a score lines up with its references."""
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
    pairs = list(read_pairs(config, role))
    if not pairs:  # nothing to validate or score on: said here, not as a failure deep in encoding or scoring
        raise DataError(f"data.{role}_split: {split_name(config, role)!r} of the {config.corpus} corpus has no pairs")
    return Pairs([src for src, _ in pairs], [tgt for _, tgt in pairs])


def source_identity(config: DataConfig, role: str) -> dict[str, object]:
    """What a split's content depends on: its files with their sizes and times, or the generator and its settings.
    The training cache is keyed by it, so a changed file is read again."""
    name = split_name(config, role)
    fields = {"corpus": config.corpus, "split": name, "src_field": config.src_field, "tgt_field": config.tgt_field}
    if config.corpus == "demo":
        grammar = hashlib.sha256(Path(demo.__file__).read_bytes()).hexdigest()
        sizes = (config.demo_train_size, config.demo_dev_size, config.demo_test_size, config.demo_seed)
        return {**fields, "demo": sizes, "grammar": grammar}
    if config.corpus == "hub":
        return {**fields, "hub": [config.hub_name, config.hub_config]}
    if config.corpus in ("multi30k", "files") and config.path is None:
        return {**fields, "url": MULTI30K_URL, "langs": [config.src_lang, config.tgt_lang]}
    paths = _split_files(config, name)
    return {**fields, "files": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]}


def _raw_pairs(config: DataConfig, role: str) -> Iterator[tuple[str, str]]:
    name = split_name(config, role)
    if config.corpus == "demo":
        pairs = demo.demo_corpus(config.demo_train_size, config.demo_dev_size, config.demo_test_size, config.demo_seed)
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


def _split_files(config: DataConfig, name: str) -> list[Path]:
    """The files of a split: NAME.SRC(.gz) and NAME.TGT(.gz), or NAME.tsv / NAME.jsonl."""
    if config.corpus in ("tsv", "jsonl"):
        path = Path(config.path or ".") / f"{name}.{config.corpus}"
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        return [path]
    directory = Path(config.path) if config.path else multi30k_download(config, name)
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
    """Fetch the raw Multi30k files of one split once into the cache directory; return that directory. A file enters
    the cache only whole; one found broken there (copied in, or left by an older version) is fetched again."""
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
        with atomic_file(target) as file:
            file.write(payload)
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
