"""Checkpoints: everything a run needs to resume or to translate, written atomically and loaded safely: a plain dict
of tensors, numbers and strings, read back with `torch.load(weights_only=True)`, which refuses to run code from the
file. It carries the config as a plain dict and the tokenizer model as bytes (a uint8 tensor): enough to translate."""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transformer.config import Config, ModelConfig, config_from_dict
from transformer.errors import CheckpointError, ToolkitError
from transformer.files import atomic_file
from transformer.model import Transformer
from transformer.tokenizer import Tokenizer

FORMAT_VERSION = 2  # 2: the layer norms are named after their sublayer (version 1 files are upgraded on load)
REQUIRED_KEYS = ("format_version", "config", "tokenizer", "model")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Through `atomic_file`: a crash or a failed write leaves the old checkpoint or the new one, never a torn one."""
    writer = None
    try:
        with atomic_file(path) as file:
            writer = _Writer(file)
            torch.save({"format_version": FORMAT_VERSION, **state}, writer)
    except (OSError, RuntimeError) as e:  # torch.save turns a failed write (a full disk) into a RuntimeError
        cause = writer.error if writer and writer.error else e
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause).strip().split("\n")[0]
        raise CheckpointError(f"cannot write checkpoint {path}: {reason}") from None


class _Writer:
    """A file for torch.save that remembers the OSError of a failed write, which torch replaces by its own."""

    def __init__(self, file) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run directory means its `best.pt` (or `last.pt` when no validation has run yet); a file means itself."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: no best.pt or last.pt in this run directory")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint; any problem is one CheckpointError naming the file."""
    path = resolve_checkpoint(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    _verify_records(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects other than tensors and plain data: loading them could run code
        raise CheckpointError(f"{path}: holds objects other than tensors and plain data; not loaded") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, OSError):
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, corrupted, or not a torch file)"
        ) from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this toolkit (missing {', '.join(missing)})")
    weights = state["model"] if isinstance(state["model"], dict) else {}
    for name, tensor in weights.items():  # training never saves such weights: they would translate into nothing
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise CheckpointError(
                f"{path}: damaged: weights {name} hold nan or inf; use another checkpoint or train again"
            )
    version = state["format_version"]
    if version == 1:
        state = {**state, "format_version": 2, "model": _upgrade_v1_weights(state["model"])}
    elif version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is not supported by this version of the toolkit "
            f"(it reads versions 1 and {FORMAT_VERSION})"
        )
    return state


def _verify_records(path: Path) -> None:
    """Check the CRC-32 that torch.save's zip format stores for every record: torch.load does not, so a file
    damaged on disk or in a copy would load, and its garbled weights would translate into nothing without a word."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()  # reads every record, as torch.load would, and compares its CRC-32
    except zipfile.BadZipFile:  # what torch.save has written for years (and every checkpoint of ours) is a zip
        raise CheckpointError(f"{path}: not a checkpoint (not a file torch.save writes)") from None
    except (OSError, EOFError, ValueError, RuntimeError) as e:  # a record's header or compressed data is unreadable
        raise CheckpointError(f"{path}: damaged: {_first_line(e)}; use another checkpoint or train again") from None
    if damaged is not None:
        raise CheckpointError(
            f"{path}: damaged: record {damaged} fails its CRC-32 check (the file changed after it was written); "
            "use another checkpoint or train again"
        )


@dataclass
class Checkpoint:
    """What a checkpoint holds, checked: the run's config, its tokenizer, and the raw state (weights and the rest)."""

    path: Path
    config: Config
    tokenizer: Tokenizer
    state: dict[str, Any]

    def build_model(self, model_config: ModelConfig | None = None) -> Transformer:
        """The model its config (or `model_config`: a new run's dropout) describes, with the saved weights; weights
        that do not fit are one clear error."""
        model = Transformer(model_config or self.config.model, self.tokenizer.vocab_size)
        try:
            model.load_state_dict(self.state["model"])
        except (RuntimeError, TypeError, AttributeError, KeyError) as e:
            raise CheckpointError(
                f"{self.path}: the weights do not fit the model its config describes: {_first_line(e)}"
            ) from None
        return model


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The one reader of checkpoints: a file or a run directory → config, tokenizer, state."""
    path = resolve_checkpoint(path)
    state = load_checkpoint(path)
    config = config_from_dict(state["config"], source=f"{path} (config)")
    try:
        tokenizer = Tokenizer(state["tokenizer"].numpy().tobytes())
    except (ToolkitError, RuntimeError, OSError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: the tokenizer inside is not usable: {_first_line(e)}") from None
    return Checkpoint(path, config, tokenizer, state)


def _first_line(error: Exception) -> str:
    """The first line that says something: load_state_dict's first line is only a heading."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return (lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0])[:300]


def _upgrade_v1_weights(weights: Any) -> Any:
    """Version 1 named each layer norm after a wrapper module (`attention_block.norm`); version 2 after its sublayer."""
    if not isinstance(weights, dict):
        return weights
    renames = [(".attention_block.norm.", ".self_attention_norm.")] + [
        (f".{name}_block.norm.", f".{name}_norm.") for name in ("self_attention", "cross_attention", "feed_forward")
    ]
    for old, new in renames:
        weights = {key.replace(old, new): value for key, value in weights.items()}
    return weights
