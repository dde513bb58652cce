"""What the tests share: tiny seeded models, the tiny demo config, and running the scripts as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from transformer.config import ModelConfig
from transformer.model import Transformer

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 40

# The demo config shrunk to a model that learns the demo grammar in a few seconds on one thread.
TINY_DEMO = {
    "data.demo_train_size": 3000,
    "data.demo_dev_size": 20,
    "data.demo_test_size": 20,
    "model.d_model": 64,
    "model.d_ff": 128,
    "model.heads": 4,
    "model.encoder_layers": 1,
    "model.decoder_layers": 1,
    "tokenizer.vocab_size": 150,
    "training.batch_tokens": 1024,
    "training.lr": 0.003,
    "training.warmup_steps": 50,
    "training.eval_every": 4,
    "training.log_every": 2,
    "training.max_minutes": 0,
    "training.threads": 1,
    "training.precision": "fp32",
}


def overrides(**changes: object) -> list[str]:
    """The tiny demo as `--set` arguments, with `changes` (training__max_steps=3 → training.max_steps=3)."""
    values = {**TINY_DEMO, **{key.replace("__", "."): value for key, value in changes.items()}}
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def tiny_model(seed: int = 0, norm: str = "pre", dropout: float = 0.0) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(
        d_model=32, heads=4, d_ff=64, encoder_layers=2, decoder_layers=2, dropout=dropout, norm=norm, max_positions=64
    )
    return Transformer(config, VOCAB).eval()


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Ids of real pieces only (specials are 0-3)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (batch, length), generator=generator)


def script_env() -> dict[str, str]:
    """The environment for a script: this checkout's package first, whatever PYTHONPATH held after it."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_script(name: str, *args: str, stdin: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    kwargs = {"env": script_env(), **kwargs}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        **kwargs,
    )


def train_demo(out: Path, *extra: str, **changes: object) -> subprocess.CompletedProcess:
    """`train.py` on the tiny demo; `changes` as in `overrides`; asserts success."""
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), *overrides(**changes), *extra)
    assert result.returncode == 0, result.stderr
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
