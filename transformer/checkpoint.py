"""Checkpoints: everything a run needs to resume or to translate, written atomically and loaded safely.

A checkpoint is a plain dict of tensors, numbers and strings saved with `torch.save` and read back with
`torch.load(weights_only=True)`, which refuses to run code from the file. It carries the config as a plain dict and
the tokenizer model as bytes (in a uint8 tensor), so a checkpoint alone is enough to translate.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from transformer.errors import CheckpointError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "config", "tokenizer", "model")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file in the same directory, fsync, then rename: a crash at any instant leaves either
    the old file or the new one, never a torn one. A failed write leaves the previous checkpoint untouched."""
    path = Path(path)
    state = {"format_version": FORMAT_VERSION, **state}
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
            tmp_name = f.name
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, corrupted or foreign): {reason}"
        ) from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a checkpoint of this toolkit (missing {', '.join(REQUIRED_KEYS)})")
    version = state["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is not supported by this version of the toolkit "
            f"(it reads version {FORMAT_VERSION})"
        )
    return state


def tokenizer_to_tensor(model_bytes: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8)


def tensor_to_tokenizer(tensor: torch.Tensor) -> bytes:
    return bytes(tensor.numpy().tobytes())
