"""Averaged weights, a cheap way to a better model: an exponential moving average (EMA) kept during training, and
the mean of checkpoints saved along the way (what `scripts/average.py` writes)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from transformer.checkpoint import read_checkpoint
from transformer.errors import CheckpointError


class ExponentialMovingAverage:
    """After every optimizer step: average ← decay · average + (1 − decay) · weights (decay 0: the weights)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = dict(model.named_parameters())
        self.average = {name: p.detach().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.average[name].lerp_(p, 1 - self.decay)

    @torch.no_grad()
    def _load(self, weights: dict[str, torch.Tensor]) -> None:
        for name, p in self.params.items():
            p.copy_(weights[name])

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model while the block runs (to validate or save them); the trained ones after."""
        trained = {name: p.detach().clone() for name, p in self.params.items()}
        self._load(self.average)
        try:
            yield
        finally:
            self._load(trained)


def average_checkpoints(paths: list[str | os.PathLike]) -> dict[str, Any]:
    """The mean of the weights of checkpoints of one model shape, as a checkpoint that translates like any other."""
    checkpoints = [read_checkpoint(path) for path in paths]
    first = checkpoints[0]
    for other in checkpoints[1:]:
        if other.config.model != first.config.model or other.tokenizer.model_bytes != first.tokenizer.model_bytes:
            raise CheckpointError(f"{other.path}: another model shape or tokenizer than {first.path}; cannot average")
    for checkpoint in checkpoints:
        checkpoint.build_model()  # weights that do not fit the config (a missing or extra tensor) are one error
    averaged = {}
    for name, tensor in first.state["model"].items():  # in fp32, back to each tensor's own dtype
        averaged[name] = torch.stack([c.state["model"][name].float() for c in checkpoints]).mean(0).to(tensor.dtype)
    return {
        "config": first.config.to_dict(),
        "tokenizer": first.state["tokenizer"],
        "model": averaged,
        "step": max(int(c.state.get("step", 0)) for c in checkpoints),
        "averaged_from": [str(c.path) for c in checkpoints],
    }
