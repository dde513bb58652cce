"""Typed configuration: YAML → dataclasses, validated once, here, at the edge.

Every later module trusts the config it is given. A user mistake (unknown key, wrong type, impossible value,
missing file) becomes one `ConfigError` line that names the key and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transformer.errors import ConfigError

CORPORA = ("demo", "multi30k", "files", "tsv", "jsonl", "hub")


@dataclass
class DataConfig:
    corpus: str = "demo"  # one of CORPORA
    path: str | None = None  # directory with the split files (multi30k: downloaded to cache_dir when None)
    cache_dir: str = "~/.cache/mini-transformer"  # where downloads go
    src_lang: str = "en"
    tgt_lang: str = "fr"
    train_split: str = "train"
    dev_split: str = "val"
    test_split: str = "test"
    src_field: str = "en"  # column (tsv/jsonl/hub); dotted for nested fields, e.g. translation.en
    tgt_field: str = "fr"
    hub_name: str | None = None  # Hub dataset name (corpus: hub)
    hub_config: str | None = None
    max_len: int = 100  # pieces; longer training pairs are dropped (and counted)
    demo_train_size: int = 12000  # demo corpus sizes
    demo_dev_size: int = 300
    demo_test_size: int = 300
    demo_seed: int = 1234


@dataclass
class TokenizerConfig:
    vocab_size: int = 8000
    model_type: str = "unigram"  # unigram | bpe
    character_coverage: float = 1.0


@dataclass
class ModelConfig:
    d_model: int = 256
    heads: int = 4
    d_ff: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1  # on embeddings, sublayer outputs and the feed-forward hidden layer
    attention_dropout: float = 0.0  # on attention weights; > 0 forces the slower unfused attention kernel on CPU
    norm: str = "pre"  # pre | post
    max_positions: int = 512


@dataclass
class TrainingConfig:
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads; 0 = torch default
    precision: str = "auto"  # fp32 | bf16 | auto (bf16 where the CPU or GPU supports it)
    batch_tokens: int = 4096  # per batch: sentences × the longest pair's source+target pieces
    accumulate: int = 1  # batches per optimizer step
    lr: float = 1e-3  # peak learning rate, reached at the end of warm-up
    warmup_steps: int = 1000
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # 0 disables clipping
    max_steps: int = 0  # 0 = unlimited
    max_epochs: int = 0  # 0 = unlimited
    max_minutes: float = 0.0  # wall-clock limit; 0 = unlimited
    eval_every: int = 500  # steps between validations
    eval_sentences: int = 0  # dev sentences scored with BLEU at each validation; 0 = all
    patience: int = 0  # validations without a better dev BLEU before stopping; 0 = never stop early
    log_every: int = 50
    compile: bool = False  # torch.compile the model


@dataclass
class DecodingConfig:
    max_len_a: float = 1.5  # output length limit = a * source_len + b
    max_len_b: int = 10
    batch_size: int = 64  # sentences per decoding batch


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Read a YAML file, apply `section.key=value` overrides, and validate everything."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}: YAML syntax error{line}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty")
    config = config_from_dict(raw, source=str(path))
    if overrides:
        config = apply_overrides(config, overrides)
    resolve_paths(config)
    return config


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """Build and validate a Config from plain data (YAML or a checkpoint)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections {sorted(SECTIONS)}, got {type(raw).__name__}")
    sections = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {name!r}{_suggest(name, SECTIONS)}")
        sections[name] = _build_section(name, value or {}, source)
    config = Config(**sections)
    validate(config, source)
    return config


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings (values parsed as YAML) and validate again."""
    data = config.to_dict()
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. training.max_steps=100")
        if section not in data:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}{_suggest(section, SECTIONS)}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        data[section][name] = parsed
    return config_from_dict(data, source="--set")


def resolve_paths(config: Config) -> None:
    """Make the data directory absolute (relative paths are from the working directory) and check it exists."""
    data = config.data
    if data.path is not None:
        data.path = str(Path(os.path.expanduser(data.path)).resolve())
        if not Path(data.path).is_dir():
            raise ConfigError(f"data.path: directory not found: {data.path}")
    if data.corpus in ("files", "tsv", "jsonl") and data.path is None:
        raise ConfigError(f"data.path: corpus {data.corpus!r} needs a directory with the split files")


def validate(config: Config, source: str = "config") -> None:
    """Check values that types alone cannot: ranges, choices and cross-field constraints."""
    d, t, m, tr, dec = config.data, config.tokenizer, config.model, config.training, config.decoding

    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key}: {message}")

    need(d.corpus in CORPORA, "data.corpus", f"got {d.corpus!r}; choose one of {', '.join(CORPORA)}")
    need(d.corpus != "hub" or bool(d.hub_name), "data.hub_name", "corpus 'hub' needs a dataset name")
    need(d.max_len >= 2, "data.max_len", f"must be at least 2, got {d.max_len}")
    for key in ("demo_train_size", "demo_dev_size", "demo_test_size"):
        need(getattr(d, key) >= 1, f"data.{key}", f"must be at least 1, got {getattr(d, key)}")
    need(d.src_lang != d.tgt_lang, "data.tgt_lang", "source and target languages must differ")
    need(t.vocab_size >= 16, "tokenizer.vocab_size", f"must be at least 16, got {t.vocab_size}")
    need(
        t.model_type in ("unigram", "bpe"),
        "tokenizer.model_type",
        f"got {t.model_type!r}; choose unigram or bpe",
    )
    need(0 < t.character_coverage <= 1, "tokenizer.character_coverage", "must be in (0, 1]")
    for key in ("d_model", "heads", "d_ff", "encoder_layers", "decoder_layers", "max_positions"):
        need(getattr(m, key) >= 1, f"model.{key}", f"must be a positive integer, got {getattr(m, key)}")
    need(m.d_model % m.heads == 0, "model.d_model", f"{m.d_model} is not divisible by model.heads={m.heads}")
    need(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    need(
        0 <= m.attention_dropout < 1,
        "model.attention_dropout",
        f"must be in [0, 1), got {m.attention_dropout}",
    )
    need(m.norm in ("pre", "post"), "model.norm", f"got {m.norm!r}; choose pre or post")
    need(
        m.max_positions >= d.max_len + 2,
        "model.max_positions",
        f"must be at least data.max_len + 2 = {d.max_len + 2}",
    )
    need(
        tr.device in ("auto", "cpu", "cuda"),
        "training.device",
        f"got {tr.device!r}; choose auto, cpu or cuda",
    )
    need(
        tr.precision in ("fp32", "bf16", "auto"),
        "training.precision",
        f"got {tr.precision!r}; choose fp32, bf16 or auto",
    )
    need(tr.threads >= 0, "training.threads", f"must be >= 0, got {tr.threads}")
    need(
        tr.batch_tokens >= 2 * d.max_len,
        "training.batch_tokens",
        f"must hold one longest pair: >= {2 * d.max_len}",
    )
    need(tr.accumulate >= 1, "training.accumulate", f"must be >= 1, got {tr.accumulate}")
    need(tr.lr > 0, "training.lr", f"must be positive, got {tr.lr}")
    need(tr.warmup_steps >= 0, "training.warmup_steps", f"must be >= 0, got {tr.warmup_steps}")
    need(
        len(tr.betas) == 2 and all(0 <= b < 1 for b in tr.betas),
        "training.betas",
        "must be two numbers in [0, 1)",
    )
    need(tr.weight_decay >= 0, "training.weight_decay", f"must be >= 0, got {tr.weight_decay}")
    need(
        0 <= tr.label_smoothing < 1,
        "training.label_smoothing",
        f"must be in [0, 1), got {tr.label_smoothing}",
    )
    need(tr.clip_norm >= 0, "training.clip_norm", f"must be >= 0, got {tr.clip_norm}")
    for key in ("max_steps", "max_epochs", "eval_sentences", "patience"):
        need(getattr(tr, key) >= 0, f"training.{key}", f"must be >= 0, got {getattr(tr, key)}")
    need(tr.max_minutes >= 0, "training.max_minutes", f"must be >= 0, got {tr.max_minutes}")
    need(tr.eval_every >= 1, "training.eval_every", f"must be >= 1, got {tr.eval_every}")
    need(tr.log_every >= 1, "training.log_every", f"must be >= 1, got {tr.log_every}")
    need(dec.max_len_a >= 0, "decoding.max_len_a", f"must be >= 0, got {dec.max_len_a}")
    need(
        dec.max_len_b >= 1,
        "decoding.max_len_b",
        f"must be >= 1 (the length limit must allow one piece), got {dec.max_len_b}",
    )
    need(dec.batch_size >= 1, "decoding.batch_size", f"must be >= 1, got {dec.batch_size}")


def _build_section(name: str, values: Any, source: str) -> Any:
    cls = SECTIONS[name]
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section {name!r} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if not isinstance(key, str) or key not in hints:
            raise ConfigError(f"{source}: unknown key {name}.{key}{_suggest(str(key), hints)}")
        kwargs[key] = _check_type(f"{name}.{key}", value, hints[key], source)
    return cls(**kwargs)


def _check_type(key: str, value: Any, hint: Any, source: str) -> Any:
    """Return the value if it has the declared type (ints are accepted for floats), else raise."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, str):
            value = _yaml11_float(value)  # PyYAML reads 1e-3 (no dot, no sign) as a string
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise ConfigError(f"{source}: {key}: must be a finite number, got {value}")
            return float(value)
        if kind is str and isinstance(value, str):
            return value
        if typing.get_origin(kind) is list and isinstance(value, list):
            (item,) = typing.get_args(kind)
            return [_check_type(key, v, item, source) for v in value]
    names = " or ".join(getattr(k, "__name__", str(k)).replace("NoneType", "null") for k in allowed)
    raise ConfigError(f"{source}: {key}: expected {names}, got {value!r}")


def _yaml11_float(text: str) -> float | str:
    try:
        return float(text) if any(c.isdigit() for c in text) else text
    except ValueError:
        return text


def _suggest(name: str, valid: Any) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (valid: {', '.join(sorted(valid))})"
