"""Session fixtures. Helpers the tests import live in `helpers.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import train_demo


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A tiny demo model trained for 300 steps: it translates (badly, but distinct sentences differently)."""
    out = tmp_path_factory.mktemp("runs") / "demo"
    train_demo(out, training__max_steps=300, training__eval_every=150, training__log_every=50)
    return out


@pytest.fixture(scope="session")
def translator(demo_run):
    from transformer import Translator

    return Translator.from_checkpoint(demo_run)
