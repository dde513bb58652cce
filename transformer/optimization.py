"""One optimizer step, the optimizer it updates and the learning rate it uses: what training, the precision trial
and the benchmark share, so that the step they time is the step that trains."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass

import torch
from torch.autograd.profiler import record_function

from transformer.config import TrainingConfig
from transformer.data import Batch
from transformer.device import autocast, synchronize
from transformer.distributed import Process, sum_tensor_over_ranks
from transformer.errors import TrainingError


def build_optimizer(model: torch.nn.Module, training: TrainingConfig) -> torch.optim.Adam:
    """Adam with the config's betas and weight decay; fused: one kernel for all parameters, not ~10 ops per tensor."""
    return torch.optim.Adam(model.parameters(), lr=training.lr, betas=tuple(training.betas), eps=1e-9,
                            weight_decay=training.weight_decay, fused=True)  # fmt: skip


def learning_rate(
    step: int, peak: float, warmup: int, schedule: str = "inverse_sqrt", spent: float = 0.0, warmup_share: float = 0.0
) -> float:
    """Linear warm-up to `peak` over `warmup` steps (with a budget schedule: or over `warmup_share` of the budget,
    whichever ends first, so that a slow machine still reaches the peak), then decay. `inverse_sqrt` (Vaswani et al.,
    2017) never reaches zero; `linear` (Li et al., "Budgeted Training", 2020), `cosine` and `rex` (Chen et al., 2021:
    high for longer, then a drop) decay with `spent`, the share of the budget (minutes or steps) used, to zero at its
    end."""
    step = max(step, 1)
    warm = step / warmup if warmup else 1.0
    if schedule == "inverse_sqrt":
        return peak * min(warm, math.sqrt(warmup / step)) if warmup else peak
    if warmup_share:
        warm = max(warm, spent / warmup_share)
    left = min(max(1.0 - spent, 0.0), 1.0)
    decay = {"linear": left, "cosine": 0.5 * (1 - math.cos(math.pi * left)), "rex": left / (0.5 + 0.5 * left)}
    return peak * min(warm, decay[schedule])


@dataclass
class Step:
    """What one step leaves on the device (reading a value would wait for the step to finish)."""

    loss: torch.Tensor  # () the label-smoothed loss summed over the step's target tokens, all processes
    grad_norm: torch.Tensor  # () before clipping
    tokens: int  # target tokens of the step, all processes
    loss_ok: torch.Tensor  # () bool: the loss was finite
    grads_ok: torch.Tensor  # () bool: the gradient norm was finite (Adam skipped the update unless both)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[Batch],
    training: TrainingConfig,
    lr: float,
    bf16: bool,
    process: Process,
    tokens: int | None = None,
) -> Step:
    """One optimizer step over `batches` (this process's share of the step: gradient accumulation), the loss averaged
    over all `tokens` target tokens of the step (default: those of `batches`); the model in training mode. A non-finite
    loss or gradient is decided on the device: fused Adam then skips the update (weights, moments and step count stay
    as they were, as under AMP's grad scaler); the caller decides when to look."""
    tokens = tokens or sum(batch.tgt_tokens for batch in batches)
    total = torch.zeros((), device=process.device)
    for n, batch in enumerate(batches):
        batch = batch.to(process.device)
        last = n == len(batches) - 1  # gradients are averaged across processes once, after the last micro-batch
        no_sync = getattr(model, "no_sync", None)  # DistributedDataParallel has it
        with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
            with autocast(process.device, bf16):
                loss = model(batch.src, batch.tgt_in, batch.tgt_out, training.label_smoothing)  # summed
            (loss * (process.world / tokens)).backward()  # DDP averages: world / total = 1 / share
        total += loss.detach().float()
    total = sum_tensor_over_ranks(total, process.world)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with record_function("optimizer"):  # a region of `benchmark --profile`; nothing when not profiling
        # The gradient norm is needed anyway for clipping; with clipping off, max_norm=inf only measures it.
        parameters = [p for group in optimizer.param_groups for p in group["params"]]  # the model's, in its order
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, training.clip_norm or math.inf)
        loss_ok, grads_ok = total.isfinite(), grad_norm.isfinite()
        optimizer.found_inf = (~(loss_ok & grads_ok)).float()  # read by fused Adam: skip if 1
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return Step(total, grad_norm, tokens, loss_ok, grads_ok)


def step_seconds(
    model: torch.nn.Module, batch: Batch, bf16: bool, training: TrainingConfig, process: Process, compiled: bool = False
) -> list[float]:
    """The seconds of three training steps over `batch` (the first warms up, or compiles), on a copy of the model and
    its optimizer and with the random stream put back: the trial changes nothing the run will compute."""
    trial = copy.deepcopy(model).train()
    optimizer, times = build_optimizer(trial, training), []
    runner = torch.compile(trial) if compiled else trial
    with torch.random.fork_rng(devices=[process.device] if process.device.type == "cuda" else []):
        for _ in range(3):
            synchronize(process.device)
            start = time.perf_counter()
            train_step(runner, optimizer, [batch], training, training.lr, bf16, process)
            synchronize(process.device)
            times.append(time.perf_counter() - start)
    return times


class FiniteGuard:
    """The first step whose loss or gradients were not finite (that step's update was skipped), kept on the device.
    Reading it waits for the device: `check` runs every step on a CPU, where that is free, and at each log,
    validation and save on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad = torch.zeros(3, dtype=torch.float64, device=device)  # step, kind (1: loss, 2: grads), loss

    def record(self, step: int, result: Step) -> None:
        kind = torch.where(result.loss_ok, torch.where(result.grads_ok, 0.0, 2.0), 1.0).double()
        at = torch.full((), float(step), dtype=torch.float64, device=self.first_bad.device)
        verdict = torch.stack([at, kind, result.loss.double()])
        self.first_bad = torch.where((self.first_bad[1] == 0) & (kind > 0), verdict, self.first_bad)

    def check(self, advice: str) -> None:
        """Raise a TrainingError naming the first bad step, if there was one."""
        step, kind, loss = self.first_bad.tolist()
        if kind:
            what = f"the loss became {loss}" if kind == 1 else "the gradients became inf/nan"
            raise TrainingError(f"{what} at step {int(step)}; stopped before updating the weights ({advice})")
