"""Typed configuration: YAML → dataclasses, validated once, here, at the edge.

Every later module trusts the config it is given. A user mistake (unknown key, wrong type, impossible value,
missing file) becomes one `ConfigError` line that names the key and what would be valid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import reprlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transformer.errors import ConfigError

# The keys that take one of a few values: validate() checks them, docs/config.md lists them.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.corpus": ("demo", "multi30k", "files", "tsv", "jsonl", "hub"),
    "tokenizer.model_type": ("unigram", "bpe"),
    "model.norm": ("pre", "post"),
    "training.device": ("auto", "cpu", "cuda"),
    "training.precision": ("fp32", "bf16", "auto"),
    "training.schedule": ("inverse_sqrt", "linear", "cosine", "rex"),
}

# Each key's comment (the lines just above it and the one after it) is its entry in docs/config.md, which
# `python scripts/config_reference.py` writes from this file; a test checks that the two agree.


@dataclass
class DataConfig:
    """Where the sentence pairs come from, and which training pairs are kept."""

    # demo: the embedded generated corpus (offline); multi30k: its files in path, downloaded once into cache_dir
    # when path is null; files: NAME.SRC / NAME.TGT (optionally .gz) in path; tsv / jsonl: NAME.tsv / NAME.jsonl
    # in path, with named columns; hub: a Hugging Face Hub dataset
    corpus: str = "demo"
    path: str | None = None  # directory with the split files; a relative path is from where you run
    # where Multi30k is downloaded (when path is null) and the training split is cached: its text, tokenizer and
    # piece ids; null = $XDG_CACHE_HOME/mini-transformer, else ~/.cache/mini-transformer
    cache_dir: str | None = None
    src_lang: str = "en"  # source language: the suffix of the source files (NAME.en, NAME.en.gz)
    tgt_lang: str = "fr"  # target language: the suffix of the target files; must differ from src_lang
    train_split: str = "train"  # name of the training split: a file stem, or a Hub split
    dev_split: str = "val"  # name of the dev split (validation, early stopping, best.pt)
    test_split: str = "test"  # name of the test split (evaluate --split test)
    src_field: str = "en"  # source column for tsv / jsonl / hub; dotted for nested fields, e.g. translation.en
    tgt_field: str = "fr"  # target column for tsv / jsonl / hub, as src_field
    hub_name: str | None = None  # Hub dataset name (needed by corpus: hub)
    hub_config: str | None = None  # Hub dataset configuration, if the dataset has several
    max_len: int = 100  # training pairs with a side longer than this many pieces are dropped (and counted)
    # with train --init-from: this share of the training pairs is drawn (seeded) from the trained model's own training
    # corpus, so that adapting to new data does not forget the old; 0 = the new data only
    init_mix: float = 0.0
    demo_train_size: int = 12000  # demo corpus: distinct training pairs
    demo_dev_size: int = 300  # demo corpus: distinct dev pairs
    demo_test_size: int = 300  # demo corpus: distinct test pairs
    demo_seed: int = 1234  # demo corpus: the generator's seed (same seed, same corpus)


@dataclass
class TokenizerConfig:
    """The joint SentencePiece model of both languages, trained on the training split."""

    vocab_size: int = 8000  # joint vocabulary size (a small corpus may give fewer pieces)
    model_type: str = "unigram"  # SentencePiece's algorithm
    character_coverage: float = 1.0  # share of the characters the vocabulary must cover, in (0, 1]
    # trains on a random sample of this many sentences: both sides of half as many pairs, drawn with a fixed seed;
    # a smaller corpus is used whole
    sample_sentences: int = 300_000


@dataclass
class ModelConfig:
    """The shape of the encoder-decoder Transformer (its embeddings are tied: source, target and output)."""

    d_model: int = 256  # width of every layer
    heads: int = 4  # attention heads; must divide d_model
    d_ff: int = 1024  # feed-forward hidden size
    encoder_layers: int = 3  # encoder depth
    decoder_layers: int = 3  # decoder depth
    dropout: float = 0.1  # on embeddings, sublayer outputs and the feed-forward hidden layer; in [0, 1)
    attention_dropout: float = 0.0  # on attention weights; > 0 forces the slower unfused attention kernel on CPU
    norm: str = "pre"  # pre: layer norm before each sublayer (stable); post: after it (the original paper)
    # length of the positional table; longer sources are truncated; at least data.max_len + 2
    max_positions: int = 512


@dataclass
class TrainingConfig:
    """The optimizer, its schedule, the limits of a run, validation and checkpoints."""

    seed: int = 1  # seeds the weights, dropout and the batch order
    device: str = "auto"  # auto: CUDA when present, else CPU
    # CPU threads; 0 = every core while the machine is idle, fewer while other programs keep cores busy (checked
    # every 2 s; a fixed number repeats a run bit for bit, on a busy machine too)
    threads: int = 0
    # bf16 autocast with fp32 weights, or fp32; auto: bf16 where the CPU or GPU has it natively and, for training, a
    # timed step at the start finds it faster than fp32
    precision: str = "auto"
    batch_tokens: int = 4096  # per batch: sentences × the longest pair's source+target pieces (EOS included)
    accumulate: int = 1  # batches per optimizer step
    lr: float = 1e-3  # peak learning rate, reached at the end of warm-up
    warmup_steps: int = 1000  # linear warm-up over this many steps
    # with linear, cosine or rex: the warm-up also ends once this share of the budget is spent, so a slow machine
    # that makes few steps still reaches the peak; 0 = warmup_steps alone
    warmup_share: float = 0.4
    # after warm-up: inverse_sqrt never reaches zero; linear, cosine and rex decay with the share of the budget spent
    # (of max_minutes or max_steps, whichever is further along) and reach zero as it ends, on a slow machine as on a
    # fast one
    schedule: str = "inverse_sqrt"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # Adam's betas: two numbers in [0, 1)
    weight_decay: float = 0.0  # Adam's weight decay
    label_smoothing: float = 0.1  # share of the target probability spread over the vocabulary (padding ignored)
    clip_norm: float = 1.0  # gradient-norm clipping; 0 disables it
    max_steps: int = 0  # stop after this many optimizer steps; 0 = unlimited
    max_epochs: int = 0  # stop after this many epochs; 0 = unlimited
    max_minutes: float = 0.0  # wall-clock limit in minutes, validation included; 0 = unlimited
    # decay of an exponential moving average of the weights, updated after every step (e.g. 0.999); 0 = off; each
    # validation scores it beside the trained weights, and best.pt gets whichever scores better
    ema: float = 0.0
    keep_checkpoints: int = 0  # keep the weights of the last N validations as step_N.pt (for averaging)
    eval_every: int = 500  # steps between validations (dev loss, perplexity, BLEU, chrF)
    eval_sentences: int = 0  # dev sentences scored with BLEU at each validation; 0 = all
    patience: int = 0  # validations without a better dev BLEU before stopping; 0 = never stop early
    log_every: int = 50  # steps between progress lines and metrics.jsonl records
    # torch.compile the model; auto: on a GPU, when a timed trial finds compiled steps faster by more than the
    # compiling costs over the run's budget (on a CPU, eager: compiled steps measured no faster there); a missing
    # compiler toolchain means eager, with one warning line
    compile: bool | str = "auto"


@dataclass
class DecodingConfig:
    """Translation: search or sampling, length limits, batching (translate, evaluate, serve and validation use it)."""

    max_len_a: float = 1.5  # output length limit = a × source pieces + b: the a
    max_len_b: int = 10  # the b of the output length limit, at least 1
    batch_size: int = 64  # sentences per decoding batch
    beam_size: int = 1  # partial translations kept per sentence; 1 = greedy search (translate --beam)
    # GNMT's alpha (translate --alpha): finished beams are ranked by log-probability / ((5 + length) / 6) ** alpha;
    # 0 ranks by log-probability alone, which favours short outputs
    length_penalty: float = 0.0
    n_best: int = 1  # translations printed per sentence, best first; at most beam_size (translate --n-best)
    # > 0: sample each piece from the model's distribution at this temperature instead of searching (translate
    # --temperature; needs beam_size 1): below 1 sharper, above 1 flatter; 0 = greedy or beam search
    temperature: float = 0.0
    top_k: int = 0  # sampling draws among the k most probable pieces only; 0 = all (translate --top-k)
    top_p: float = 1.0  # then only the fewest most probable pieces whose probability reaches p; 1 = all (--top-p)
    seed: int = 0  # sampling's seed: the same seed, sentences and batch_size give the same output (translate --seed)


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
    """Read a YAML file (or a shipped config by name: `find_config`), apply `section.key=value` overrides, and
    validate everything."""
    path = find_config(path)
    if not path.is_file():
        raise ConfigError(f"{path}: a folder, not a config file" if path.is_dir() else f"config file not found: {path}")
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
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


def parse_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load`, stricter where PyYAML is silent: a key written twice in one mapping is an error (PyYAML
    keeps the last value), and aliases may not expand past MAX_YAML_VALUES values (nine nested lists of nine aliases
    expand to 387 million: PyYAML builds them and an error message would print them)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        try:
            _expanded_size(root, "", {}, source)
        except RecursionError:
            raise ConfigError(f"{source}: nested too deeply to be a config") from None
        return loader.construct_document(root)
    finally:
        loader.dispose()


MAX_YAML_VALUES = 10_000  # a config holds about 60 values


def _expanded_size(node: yaml.Node, where: str, sizes: dict[int, int], source: str) -> int:
    """The number of values under `node` once every alias is expanded (each node is counted once, so a bomb costs
    its size in the file, not its expansion); checks each mapping for a key given twice on the way."""
    if id(node) in sizes:
        if sizes[id(node)] < 0:
            raise ConfigError(f"{source}: {where or 'the document'}: a YAML alias refers to its own anchor")
        return sizes[id(node)]
    sizes[id(node)] = -1  # being counted: meeting it again below is a cycle
    total = 1
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            line, inner = key.start_mark.line + 1, f"{where}.{name[:60]}" if where else str(name)[:60]
            if name is not None and name != "<<" and name in lines:
                raise ConfigError(f"{source}: {inner} is given twice, at lines {lines[name]} and {line}; keep one")
            lines[name or ""] = line
            total += _expanded_size(key, where, sizes, source) + _expanded_size(value, inner, sizes, source)
    elif isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(item, where, sizes, source) for item in node.value)
    if total > MAX_YAML_VALUES:
        raise ConfigError(
            f"{source}: {where or 'the document'}: its aliases expand to more than {MAX_YAML_VALUES:,} values; "
            "a config is far smaller"
        )
    sizes[id(node)] = total
    return total


def shown(value: Any, limit: int = 80) -> str:
    """A value as an error message shows it: its repr, cut to `limit` characters (a value can be huge)."""
    short = reprlib.Repr()  # bounded in depth and breadth: never walks a whole huge value
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 2, 4, 4, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def find_config(name: str | os.PathLike) -> Path:
    """A config by path, or a shipped one by bare name (`demo` is configs/demo.yaml): a wheel carries the shipped
    configs inside the package, a clone keeps them in configs/ beside it, and either way `--config demo` works."""
    path = Path(name)
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) != 1:
        return path
    shipped = shipped_configs()
    if path.name not in shipped:
        raise ConfigError(f"config file not found: {name} (the shipped configs are {', '.join(shipped) or 'missing'})")
    return shipped[path.name]


def shipped_configs() -> dict[str, Path]:
    """The configs that come with the toolkit, by name."""
    for directory in (Path(__file__).parent / "configs", Path(__file__).parent.parent / "configs"):  # wheel, clone
        if directory.is_dir():
            return {p.stem: p for p in sorted(directory.glob("*.yaml"))}
    return {}


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """Build and validate a Config from plain data (YAML or a checkpoint)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections {sorted(SECTIONS)}, got {type(raw).__name__}")
    sections = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {shown(name)}{_suggest(shown(name), SECTIONS)}")
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
            parsed = parse_yaml(value, f"--set {key.strip()}") if value.strip() else None
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
    """Check values that types alone cannot: choices, ranges and the rules between keys."""
    d, m, tr, dec = config.data, config.model, config.training, config.decoding

    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key}: {message}")

    def check(section: str, keys: str, rule: str, ok: Callable[[Any], bool]) -> None:
        for key in keys.split():
            value = getattr(getattr(config, section), key)
            need(ok(value), f"{section}.{key}", f"must be {rule}, got {value}")

    def at_least(section: str, keys: str, low: int) -> None:
        check(section, keys, f">= {low}", lambda value: value >= low)

    for key, options in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        need(value in options, key, f"got {shown(value)}; choose one of {', '.join(options)}")
    need(d.corpus != "hub" or bool(d.hub_name), "data.hub_name", "corpus 'hub' needs a dataset name")
    at_least("data", "max_len", 2)
    at_least("data", "demo_train_size demo_dev_size demo_test_size", 1)
    check("data", "init_mix", "in [0, 1)", lambda value: 0 <= value < 1)
    need(d.src_lang != d.tgt_lang, "data.tgt_lang", "source and target languages must differ")
    at_least("tokenizer", "vocab_size", 16)
    at_least("tokenizer", "sample_sentences", 1)
    check("tokenizer", "character_coverage", "in (0, 1]", lambda value: 0 < value <= 1)
    at_least("model", "d_model heads d_ff encoder_layers decoder_layers max_positions", 1)
    need(m.d_model % m.heads == 0, "model.d_model", f"{m.d_model} is not divisible by model.heads={m.heads}")
    check("model", "dropout attention_dropout", "in [0, 1)", lambda value: 0 <= value < 1)
    need(
        m.max_positions >= d.max_len + 2, "model.max_positions", f"must be at least data.max_len + 2 = {d.max_len + 2}"
    )
    need(tr.batch_tokens >= 2 * d.max_len, "training.batch_tokens", f"must hold one longest pair: >= {2 * d.max_len}")
    at_least("training", "accumulate eval_every log_every", 1)
    check("training", "lr", "positive", lambda value: value > 0)
    need(
        tr.schedule == "inverse_sqrt" or bool(tr.max_minutes or tr.max_steps),
        "training.schedule",
        f"{tr.schedule!r} decays to zero at the end of a budget: set training.max_minutes or training.max_steps",
    )
    need(len(tr.betas) == 2 and all(0 <= b < 1 for b in tr.betas), "training.betas", "must be two numbers in [0, 1)")
    check("training", "ema label_smoothing", "in [0, 1)", lambda value: 0 <= value < 1)
    check("training", "compile", "true, false or auto", lambda value: value in (True, False, "auto"))
    check("training", "warmup_share", "in [0, 1]", lambda value: 0 <= value <= 1)
    at_least("training", "threads warmup_steps weight_decay clip_norm max_steps max_epochs max_minutes", 0)
    at_least("training", "eval_sentences patience keep_checkpoints", 0)
    at_least("decoding", "max_len_a length_penalty top_k seed", 0)
    check("decoding", "max_len_b", ">= 1 (one piece at least)", lambda value: value >= 1)
    at_least("decoding", "batch_size beam_size n_best", 1)
    need(dec.n_best <= dec.beam_size, "decoding.n_best", f"must be <= decoding.beam_size ({dec.beam_size})")
    check("decoding", "temperature", ">= 0 (0 = no sampling)", lambda value: value >= 0)
    sampling = f"must be 1 when sampling (decoding.temperature > 0), got {dec.beam_size}"
    need(dec.temperature == 0 or dec.beam_size == 1, "decoding.beam_size", sampling)
    check("decoding", "top_p", "in (0, 1]", lambda value: 0 < value <= 1)


def _build_section(name: str, values: Any, source: str) -> Any:
    cls = SECTIONS[name]
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section {name!r} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if not isinstance(key, str) or key not in hints:
            raise ConfigError(f"{source}: unknown key {name}.{shown(key)}{_suggest(shown(key), hints)}")
        kwargs[key] = _check_type(f"{name}.{key}", value, hints[key], source)
    return cls(**kwargs)


def _check_type(key: str, value: Any, hint: Any, source: str) -> Any:
    """Return the value if it has the declared type (ints are accepted for floats), else raise."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is int and type(value) is int and abs(value) >= 2**63:  # torch and NumPy take 64-bit integers
            raise ConfigError(f"{source}: {key}: must be between -2**63 and 2**63, got {shown(value)}")
        if kind in (bool, int, str) and type(value) is kind:  # exactly: True is an int to Python, not to a config
            return value
        if kind is float and isinstance(value, str) and any(c.isdigit() for c in value):
            with contextlib.suppress(ValueError):  # PyYAML reads 1e-3 (no dot, no sign) as a string
                value = float(value)
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if abs(value) >= 2**1024 or value != value or value in (float("inf"), float("-inf")):  # 2**1024: inf
                raise ConfigError(f"{source}: {key}: must be a finite number, got {shown(value)}")
            return float(value)
        if typing.get_origin(kind) is list and isinstance(value, list):
            (item,) = typing.get_args(kind)
            return [_check_type(key, v, item, source) for v in value]
    names = " or ".join(getattr(k, "__name__", str(k)).replace("NoneType", "null") for k in allowed)
    raise ConfigError(f"{source}: {key}: expected {names}, got {shown(value)}")


def _suggest(name: str, valid: Any) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (valid: {', '.join(sorted(valid))})"
