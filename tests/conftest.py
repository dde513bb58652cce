"""Session fixtures. Helpers the tests import live in `helpers.py`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import train_demo

# Tests whose results depend on the CPU's instruction set: they compare floats, scores or outputs across engines,
# precisions, batch shapes or processes, where kernels of another instruction set round differently. CI runs them a
# second time with every library capped at AVX2 (`pytest -m isa_sensitive`, see .ci/run); test_isa_cap.py checks
# that the cap took effect.
ISA_SENSITIVE = {
    "test_deploy.py": "CTranslate2's float32 and int8 kernels against ours",
    "test_decoding.py": "batched against one sentence at a time, cache against recomputation",
    "test_beam.py": "batched and cached beams against the textbook, one sentence at a time",
    "test_robustness.py": "batched against one sentence at a time",
    "test_model.py": "cached and padded logits against full recomputation",
    "test_attention.py": "the fused kernel against the explicit math",
    "test_loss.py": "the fused chunked loss against the plain one",
    "test_isa_cap.py": "the cap itself",
    "test_training.py::test_two_processes_match_one_process_with_the_same_global_batch": "sums in another order",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        if module in ISA_SENSITIVE or f"{module}::{item.originalname}" in ISA_SENSITIVE:
            item.add_marker(pytest.mark.isa_sensitive)


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
