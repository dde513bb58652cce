"""Session fixtures. Helpers the tests import live in `helpers.py`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import train_demo


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> None:
    """The training cache (data.cache_dir = null) of every test and script in a folder of the session's own, never
    the user's ~/.cache; tests of the cache itself give each of theirs a fresh one."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))


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
