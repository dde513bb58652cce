"""The training loop: batches → model → label-smoothed loss → Adam with warm-up → validation, stopping, checkpoints.

The `Trainer` receives a prepared `Run` (see `prepare.py`) and owns only the loop. Resuming is exact: a checkpoint
holds model, optimizer, step, RNG state and the position in the epoch's batch plan, which is rebuilt from the seed
and the epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from transformer import distributed
from transformer.checkpoint import save_checkpoint, tokenizer_to_tensor
from transformer.config import TrainingConfig
from transformer.data import batch_plan, collate, padding_fraction
from transformer.device import autocast
from transformer.errors import MissingExtraError, ToolkitError, TrainingError
from transformer.metrics import Scores, score
from transformer.plotting import read_metrics, save_curves
from transformer.prepare import Progress, Run
from transformer.threads import ThreadGovernor
from transformer.translator import Translator

log = logging.getLogger(__name__)


def learning_rate(step: int, peak: float, warmup: int, schedule: str = "inverse_sqrt", spent: float = 0.0) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then decay.

    `inverse_sqrt` decays with the square root of the step (Vaswani et al., 2017) and never reaches zero. The
    budget-aware schedules decay with `spent`, the share of the budget (minutes or steps) already used, and reach zero
    as it runs out: `linear` (Li et al., "Budgeted Training", 2020), `cosine`, and `rex` (Chen et al., 2021), which
    stays high longer and drops at the end. A slower machine thus still ends at zero when its minutes end.
    """
    step = max(step, 1)
    warm = step / warmup if warmup else 1.0
    if schedule == "inverse_sqrt":
        return peak * min(warm, math.sqrt(warmup / step)) if warmup else peak
    left = min(max(1.0 - spent, 0.0), 1.0)
    decay = {"linear": left, "cosine": 0.5 * (1 - math.cos(math.pi * left)), "rex": left / (0.5 + 0.5 * left)}
    return peak * min(warm, decay[schedule])


def budget_spent(progress: Progress, training: TrainingConfig) -> float:
    """The share of the training budget used so far: of the minutes, of the steps, whichever is further along."""
    shares = [0.0]
    if training.max_minutes:
        shares.append(progress.elapsed / (60 * training.max_minutes))
    if training.max_steps:
        shares.append(progress.step / training.max_steps)
    return max(shares)


def checkpoint_state(run: Run) -> dict[str, Any]:
    """Everything a checkpoint holds: what translating needs (config, tokenizer, weights) and what resuming needs."""
    state = {
        "config": run.config.to_dict(),
        "tokenizer": tokenizer_to_tensor(run.tokenizer.model_bytes),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        **dataclasses.asdict(run.progress),
        "rng": torch.get_rng_state(),
        "bf16": run.bf16,  # the precision chosen at the start (by a timed trial with `auto`): a resume keeps it
    }
    if run.process.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(run.process.device)
    if run.ema is not None:
        state["ema"] = run.ema.average
    return state


@torch.no_grad()
def dev_loss(run: Run) -> float:
    """Mean cross-entropy per target token on the dev set (no label smoothing: perplexity = exp of it)."""
    run.model.eval()
    data, total, tokens = run.dev_data, 0.0, 0
    for indices in batch_plan(data, run.config.training.batch_tokens, 0, 0, shuffle=False):
        batch = collate(data, indices).to(run.process.device)
        with autocast(run.process.device, run.bf16):
            total += run.model(batch.src, batch.tgt_in, batch.tgt_out).item()
        tokens += batch.tgt_tokens
    return total / max(tokens, 1)


def translate_dev(run: Run) -> tuple[list[str], list[str], Scores]:
    """Greedy translations of the dev sentences (the first `eval_sentences`), with their BLEU and chrF."""
    pairs = run.dev_pairs
    n = run.config.training.eval_sentences or len(pairs)
    translator = Translator(run.model, run.tokenizer, run.config.decoding, run.process.device, run.bf16)
    hypotheses = translator.translate(pairs.src[:n])
    return pairs.src[:n], hypotheses, score(hypotheses, pairs.tgt[:n])


def keep_step_checkpoint(run: Run, keep: int) -> None:
    """Save the weights as step_N.pt (for averaging) and delete all but the newest `keep` of them."""
    state = checkpoint_state(run)
    save_checkpoint(
        {key: state[key] for key in ("config", "tokenizer", "model", "step")},
        run.run_dir / f"step_{run.progress.step}.pt",
    )
    kept = sorted(run.run_dir.glob("step_*.pt"), key=lambda path: int(path.stem.split("_")[1]))
    for old in kept[:-keep]:
        old.unlink()


class Trainer:
    def __init__(self, run: Run) -> None:
        self.run, self.config, self.model, self.optimizer = run, run.config, run.model, run.optimizer
        self.progress, self.process, self.run_dir = run.progress, run.process, run.run_dir
        self.stop_reason: str | None = None
        self.first_bad = torch.zeros(3, dtype=torch.float64, device=run.process.device)  # see train_step
        self.check_each_step = run.process.device.type == "cpu"  # reading the device's verdict is free there
        self.draw_curves = run.process.is_main  # off after the first failure: curves must never stop training
        adapt = run.process.device.type == "cpu" and not run.config.training.threads and run.process.world == 1
        self.threads = ThreadGovernor() if adapt else None  # fewer threads while other programs use cores

    # -- one step ----------------------------------------------------------------------------------------------

    def train_step(self, batches: list[list[int]]) -> tuple[torch.Tensor, int]:
        """One optimizer step over `batches` (gradient accumulation; with N processes, each takes every N-th batch).
        The loss is averaged over all the step's target tokens. Returns that loss (a tensor on the device: reading it
        would wait for the step) and the token count.

        A non-finite loss or gradient is decided on the device: Adam's fused kernel then skips the update (weights,
        moments and its step count stay as they were, as under AMP's grad scaler), and the run stops at the next
        `finite_check` with the step it happened at; on a CPU, where reading is free, before this step counts."""
        t, data, process = self.config.training, self.run.train_data, self.process
        self.model.train()
        total_tokens = sum(int(data.tgt_lens[indices].sum()) for indices in batches)
        total_loss = torch.zeros((), device=process.device)
        mine = batches[process.rank :: process.world]
        for n, indices in enumerate(mine):
            batch = collate(data, indices).to(process.device)
            last = n == len(mine) - 1  # gradients are averaged across processes once, after the last micro-batch
            with self._no_sync() if not last else contextlib.nullcontext():
                with autocast(process.device, self.run.bf16):
                    loss = self.run.step_model(batch.src, batch.tgt_in, batch.tgt_out, t.label_smoothing)  # summed
                (loss * (process.world / total_tokens)).backward()  # DDP averages: world / total = 1 / share
            total_loss += loss.detach().float()
        total_loss = distributed.sum_tensor_over_ranks(total_loss, process.world)
        for group in self.optimizer.param_groups:
            spent = budget_spent(self.progress, t)
            group["lr"] = learning_rate(self.progress.step + 1, t.lr, t.warmup_steps, t.schedule, spent)
        # The gradient norm is needed anyway for clipping; with clipping off, max_norm=inf only measures it.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm or math.inf)
        loss_ok, grads_ok = total_loss.isfinite(), grad_norm.isfinite()
        self.optimizer.found_inf = (~(loss_ok & grads_ok)).float()  # read by Adam's fused kernel: skip if 1
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        step = self.progress.step + 1
        # The first bad step, what went wrong (1: the loss, 2: the gradients) and the loss, kept on the device.
        kind = torch.where(loss_ok, torch.where(grads_ok, 0.0, 2.0), 1.0).double()
        at = torch.full((), float(step), dtype=torch.float64, device=process.device)
        verdict = torch.stack([at, kind, total_loss.double()])
        self.first_bad = torch.where((self.first_bad[1] == 0) & (kind > 0), verdict, self.first_bad)
        if self.check_each_step:
            self.finite_check()
        if self.run.ema is not None:
            self.run.ema.update()
        self.progress.step += 1
        return total_loss / total_tokens, total_tokens

    def finite_check(self) -> None:
        """Stop, with the step it happened at, if a step met a non-finite loss or gradient (its update was skipped):
        the one read of the device's verdict, made every step on a CPU and at each log, validation and save else."""
        step, kind, loss = self.first_bad.tolist()
        if kind:
            what = f"the loss became {loss}" if kind == 1 else "the gradients became inf/nan"
            raise TrainingError(f"{what} at step {int(step)}; stopped before updating the weights ({self._kept()})")

    def _no_sync(self) -> contextlib.AbstractContextManager:
        no_sync = getattr(self.run.step_model, "no_sync", None)  # DistributedDataParallel has it
        return no_sync() if no_sync is not None else contextlib.nullcontext()

    # -- the loop ----------------------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Train until a limit (steps, epochs, minutes), early stopping, or a signal; return the final metrics."""
        t, p, world = self.config.training, self.progress, self.process.world
        handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(disable=None if self.process.is_main else True, total=t.max_steps or None, initial=p.step,
                   unit="step", dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        started = time.perf_counter() - p.elapsed
        window = {"tokens": 0, "start": time.perf_counter()}
        last_eval_step = -1
        per_step = t.accumulate * world
        needed = per_step if world > 1 else 1  # with several processes each step needs a full share for each
        try:
            while self.stop_reason is None:
                plan = batch_plan(self.run.train_data, t.batch_tokens, t.seed, p.epoch)
                if p.batch_in_epoch == 0:
                    padding = 100 * padding_fraction(self.run.train_data, plan)
                    log.info("epoch %d: %d batches, %.1f%% padding", p.epoch + 1, len(plan), padding)
                while p.batch_in_epoch + needed <= len(plan) and not self.stop_reason:
                    batches = plan[p.batch_in_epoch : p.batch_in_epoch + per_step]
                    loss, tokens = self.train_step(batches)
                    p.batch_in_epoch += len(batches)
                    p.elapsed = time.perf_counter() - started
                    bar.update(1)
                    window["tokens"] += tokens
                    if self.threads is not None:
                        self.threads.update()
                    if p.step % t.log_every == 0:
                        self.finite_check()
                        self._log_progress(bar, float(loss), window)
                    if p.step % t.eval_every == 0:
                        self.validate(bar)
                        last_eval_step = p.step
                    self._check_limits()
                if p.batch_in_epoch + needed > len(plan):  # the epoch's tail that cannot fill a step is skipped
                    p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                    if t.max_epochs and p.epoch >= t.max_epochs:
                        self.stop_reason = self.stop_reason or f"reached training.max_epochs={t.max_epochs}"
            interrupted = self.stop_reason.startswith("received")
            if not interrupted and last_eval_step != p.step:
                self.validate(bar)
            self.save("last.pt")
        finally:
            bar.close()
            if self.run.lock is not None:
                self.run.lock.release()
            for s, handler in handlers.items():
                signal.signal(s, handler)
            distributed.cleanup(world)
        log.info("stopped at step %d: %s", p.step, self.stop_reason)
        if interrupted:
            log.info("saved %s; continue with --resume --out %s", self.run_dir / "last.pt", self.run_dir)
        return {"step": p.step, "best_bleu": p.best_bleu, "minutes": p.elapsed / 60, "stop_reason": self.stop_reason}

    def _log_progress(self, bar: tqdm, loss: float, window: dict[str, float]) -> None:
        p = self.progress
        rate = window["tokens"] / max(time.perf_counter() - window["start"], 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tgt_tok_s=f"{rate:.0f}")
        if bar.disable:
            log.info("step %d  loss %.3f  lr %.2e  %.0f target tokens/s", p.step, loss, lr, rate)
        self._log_metrics({"type": "train", "step": p.step, "epoch": p.epoch + 1, "loss": loss, "lr": lr,
                           "tgt_tokens_per_s": rate, "minutes": p.elapsed / 60})  # fmt: skip
        window["tokens"], window["start"] = 0, time.perf_counter()

    def _check_limits(self) -> None:
        t, p = self.config.training, self.progress
        if t.max_steps and p.step >= t.max_steps:
            self.stop_reason = self.stop_reason or f"reached training.max_steps={t.max_steps}"
        if t.max_minutes and p.elapsed >= 60 * t.max_minutes:
            self.stop_reason = self.stop_reason or f"reached training.max_minutes={t.max_minutes}"
        if t.patience and p.bad_evals >= t.patience:
            self.stop_reason = self.stop_reason or f"no better dev BLEU in {t.patience} validations (early stopping)"
        # Clocks and signals differ between processes: stop all when any one stops.
        world, device = self.process.world, self.process.device
        if world > 1 and distributed.sum_over_ranks(float(self.stop_reason is not None), world, device):
            self.stop_reason = self.stop_reason or "another process stopped"

    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stop_reason = f"received {signal.Signals(signum).name}"

    # -- validation --------------------------------------------------------------------------------------------

    def validate(self, bar: tqdm | None = None) -> dict[str, Any]:
        """Dev loss, perplexity and greedy BLEU (of the averaged weights too, with training.ema); keeps the better
        as `best.pt`, saves `last.pt`, counts toward early stopping."""
        p, run, started = self.progress, self.run, time.perf_counter()
        sources, hypotheses, scores = translate_dev(run)
        loss = dev_loss(run)
        if not math.isfinite(loss):  # a diverged model must not become last.pt or best.pt
            raise TrainingError(f"the dev loss became {loss} at step {p.step}; stopped ({self._kept()})")
        perplexity = math.exp(min(loss, 50))
        record = {"type": "dev", "step": p.step, "epoch": p.epoch + 1, "loss": loss, "perplexity": perplexity,
                  "bleu": scores.bleu, "chrf": scores.chrf, "minutes": p.elapsed / 60}  # fmt: skip
        best_weights = contextlib.nullcontext
        if run.ema is not None:
            with run.ema.applied():
                _, ema_hypotheses, ema_scores = translate_dev(run)
            record["ema_bleu"] = ema_scores.bleu
            if ema_scores.bleu > scores.bleu:
                hypotheses, best_weights = ema_hypotheses, run.ema.applied
        self._log_metrics(record)
        self._draw_curves()
        bleu = max(record["bleu"], record.get("ema_bleu", -1.0))
        improved = bleu > p.best_bleu
        p.best_bleu, p.bad_evals = (bleu, 0) if improved else (p.best_bleu, p.bad_evals + 1)
        p.validation_seconds += time.perf_counter() - started
        ema = f", EMA BLEU {record['ema_bleu']:.2f}" if "ema_bleu" in record else ""
        lines = [
            f"step {p.step}: dev loss {loss:.3f}, ppl {record['perplexity']:.2f}, BLEU {scores.bleu:.2f}{ema}, "
            f"chrF {scores.chrf:.2f}"
            + ("  (best so far)" if improved else f"  (best {p.best_bleu:.2f})")
            + f"; validating took {100 * p.validation_seconds / max(p.elapsed, 1e-9):.0f}% of the "
            f"{p.elapsed / 60:.1f} minutes so far"
        ]
        lines += [f"  {src}  →  {hyp}" for src, hyp in list(zip(sources, hypotheses, strict=True))[:3]]
        if self.process.is_main:
            (bar.write if bar is not None else print)("\n".join(lines), file=sys.stderr)
        self.save("last.pt")
        if improved:
            with best_weights():
                self.save("best.pt")
        if self.config.training.keep_checkpoints and self.process.is_main:
            keep_step_checkpoint(run, self.config.training.keep_checkpoints)
        return record

    # -- files -------------------------------------------------------------------------------------------------

    def save(self, name: str) -> Path:
        """Write a checkpoint, never one whose weights are not all finite, nor after a skipped non-finite step."""
        self.finite_check()
        path = self.run_dir / name
        if not all(bool(w.isfinite().all()) for w in self.model.parameters()):
            raise TrainingError(
                f"the weights became non-finite at step {self.progress.step}; not saved ({self._kept()})"
            )
        if self.process.is_main:
            save_checkpoint(checkpoint_state(self.run), path)
        return path

    def _kept(self) -> str:
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written"
        return f"{kept}; try a lower training.lr"

    def _draw_curves(self) -> None:
        """Redraw curves.png. Without matplotlib (the plot extra) there are simply no curves: a first run installs
        only what training needs and must not warn. Any other failure is said once; none stops training."""
        try:
            if self.draw_curves:
                save_curves({self.run_dir.name: read_metrics(self.run_dir)}, self.run_dir / "curves.png")
        except MissingExtraError:
            self.draw_curves = False
        except (ToolkitError, OSError, ValueError) as error:
            self.draw_curves = False
            print(f"curves.png not drawn: {error}", file=sys.stderr)

    def _log_metrics(self, record: dict[str, Any]) -> None:
        if self.process.is_main:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
