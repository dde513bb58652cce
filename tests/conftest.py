"""Shared fixtures: tiny seeded models and a tiny demo run, so the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transformer.config import ModelConfig
from transformer.model import Transformer

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 40


def tiny_model(seed: int = 0, norm: str = "pre", dropout: float = 0.0) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(
        d_model=32,
        heads=4,
        d_ff=64,
        encoder_layers=2,
        decoder_layers=2,
        dropout=dropout,
        norm=norm,
        max_positions=64,
    )
    return Transformer(config, VOCAB).eval()


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Ids of real pieces only (specials are 0-3)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, VOCAB, (batch, length), generator=generator)


def run_script(name: str, *args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


TINY_DEMO = [
    "--set",
    "data.demo_train_size=400",
    "--set",
    "data.demo_dev_size=20",
    "--set",
    "data.demo_test_size=20",
    "--set",
    "model.d_model=32",
    "--set",
    "model.d_ff=64",
    "--set",
    "model.heads=2",
    "--set",
    "model.encoder_layers=1",
    "--set",
    "model.decoder_layers=1",
    "--set",
    "tokenizer.vocab_size=120",
    "--set",
    "training.batch_tokens=512",
    "--set",
    "training.eval_every=4",
    "--set",
    "training.log_every=2",
    "--set",
    "training.max_minutes=0",
    "--set",
    "training.threads=1",
]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A demo run of 8 steps with a tiny model: the checkpoint the end-to-end tests translate with."""
    out = tmp_path_factory.mktemp("runs") / "demo"
    result = run_script(
        "train.py",
        "--config",
        "configs/demo.yaml",
        "--out",
        str(out),
        *TINY_DEMO,
        "--set",
        "training.max_steps=8",
    )
    assert result.returncode == 0, result.stderr
    return out
