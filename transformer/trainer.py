"""The training loop: batches → model → label-smoothed loss → Adam with warm-up → validation, stopping, checkpoints.
The `Trainer` receives a prepared `Run` (see `prepare.py`). Resuming is exact: a checkpoint holds the position in the
epoch's batch plan, which is rebuilt from the seed and the epoch."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from typing import Any

import torch
from tqdm import tqdm

from transformer import distributed
from transformer.config import TrainingConfig
from transformer.data import batch_plan, collate, padding_fraction
from transformer.device import autocast
from transformer.errors import TrainingError
from transformer.metrics import score
from transformer.optimization import FiniteGuard, learning_rate, train_step
from transformer.prepare import Progress, Run, checkpoint_state
from transformer.run_files import RunFiles
from transformer.threads import ThreadGovernor
from transformer.translator import Translator

log = logging.getLogger(__name__)


def budget_spent(progress: Progress, training: TrainingConfig) -> float:
    """The share of the training budget used so far: of the minutes, of the steps, whichever is further along."""
    minutes = progress.elapsed / (60 * training.max_minutes) if training.max_minutes else 0.0
    steps = progress.step / training.max_steps if training.max_steps else 0.0
    return max(minutes, steps)


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


class Trainer:
    def __init__(self, run: Run) -> None:
        self.run, self.config, self.model, self.optimizer = run, run.config, run.model, run.optimizer
        self.progress, self.process, self.run_dir = run.progress, run.process, run.run_dir
        self.stop_reason: str | None = None
        self.files = RunFiles(run.run_dir, run.process.is_main, run.progress.step)
        self.guard = FiniteGuard(run.process.device)
        self.check_each_step = run.process.device.type == "cpu"  # reading the device's verdict is free there
        adapt = run.process.device.type == "cpu" and not run.config.training.threads and run.process.world == 1
        self.threads = ThreadGovernor() if adapt else None  # fewer threads while other programs use cores

    def train_step(self, batches: list[list[int]]) -> tuple[torch.Tensor, int, torch.Tensor]:
        """One optimizer step over `batches` (with N processes, each takes every N-th): the loss per target token, the
        step's target tokens and the gradient norm before clipping (tensors on the device: reading them waits for the
        step). A non-finite step is skipped on the device; the next `guard.check` (each step on a CPU) stops the run."""
        t, data, process = self.config.training, self.run.train_data, self.process
        tokens = sum(int(data.tgt_lens[indices].sum()) for indices in batches)
        mine = [collate(data, indices) for indices in batches[process.rank :: process.world]]
        self.model.train()
        spent = budget_spent(self.progress, t)
        lr = learning_rate(self.progress.step + 1, t.lr, t.warmup_steps, t.schedule, spent, t.warmup_share)
        step = train_step(self.run.step_model, self.optimizer, mine, t, lr, self.run.bf16, process, tokens)
        self.guard.record(self.progress.step + 1, step)
        if self.check_each_step:
            self.guard.check(self.files.advice())
        if self.run.ema is not None:
            self.run.ema.update()
        self.progress.step += 1
        return step.loss / step.tokens, step.tokens, step.grad_norm

    # -- the loop ----------------------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Train until a limit (steps, epochs, minutes), early stopping, or a signal; return the final metrics."""
        t, p, world = self.config.training, self.progress, self.process.world
        handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(disable=None if self.process.is_main else True, total=t.max_steps or None, initial=p.step,
                   unit="step", dynamic_ncols=True, file=sys.stderr)  # fmt: skip
        started = time.perf_counter() - p.elapsed
        window_tokens, window_start = 0, time.perf_counter()  # for the throughput since the last log
        last_eval_step, per_step = -1, t.accumulate * world
        needed = per_step if world > 1 else 1  # with several processes each step needs a full share for each
        try:
            while self.stop_reason is None:
                plan = batch_plan(self.run.train_data, t.batch_tokens, t.seed, p.epoch)
                if p.batch_in_epoch == 0:
                    padding = 100 * padding_fraction(self.run.train_data, plan)
                    log.info("epoch %d: %d batches, %.1f%% padding", p.epoch + 1, len(plan), padding)
                while p.batch_in_epoch + needed <= len(plan) and not self.stop_reason:
                    batches = plan[p.batch_in_epoch : p.batch_in_epoch + per_step]
                    loss, tokens, grad_norm = self.train_step(batches)
                    p.batch_in_epoch += len(batches)
                    p.elapsed = time.perf_counter() - started
                    bar.update(1)
                    window_tokens += tokens
                    if self.threads is not None:
                        self.threads.update()
                    if p.step % t.log_every == 0:
                        self.guard.check(self.files.advice())
                        rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                        self._log_progress(bar, float(loss), float(grad_norm), rate)  # read here only
                        window_tokens, window_start = 0, time.perf_counter()
                    if p.step % t.eval_every == 0:
                        self.validate()
                        last_eval_step = p.step
                    self._check_limits()
                if p.batch_in_epoch + needed > len(plan):  # the epoch's tail that cannot fill a step is skipped
                    p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                    if t.max_epochs and p.epoch >= t.max_epochs:
                        self.stop_reason = self.stop_reason or f"reached training.max_epochs={t.max_epochs}"
            interrupted = self.stop_reason.startswith("received")
            if not interrupted and last_eval_step != p.step:
                self.validate()
            self.save("last.pt")
        finally:
            bar.close()
            self.files.close()
            if self.run.lock is not None:
                self.run.lock.release()
            for s, handler in handlers.items():
                signal.signal(s, handler)
            distributed.cleanup(world)
        log.info("stopped at step %d: %s", p.step, self.stop_reason)
        if interrupted:
            log.info("saved %s; continue with --resume --out %s", self.run_dir / "last.pt", self.run_dir)
        return {"step": p.step, "best_bleu": p.best_bleu, "minutes": p.elapsed / 60, "stop_reason": self.stop_reason}

    def _log_progress(self, bar: tqdm, loss: float, grad_norm: float, rate: float) -> None:
        p, lr = self.progress, self.optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tgt_tok_s=f"{rate:.0f}")
        if bar.disable:
            log.info("step %d  loss %.3f  lr %.2e  %.0f target tokens/s", p.step, loss, lr, rate)
        self.files.log({"type": "train", "step": p.step, "epoch": p.epoch + 1, "loss": loss, "lr": lr,
                        "grad_norm": grad_norm, "tgt_tokens_per_s": rate, "minutes": p.elapsed / 60})  # fmt: skip

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

    def validate(self) -> dict[str, Any]:
        """Dev loss, perplexity and greedy BLEU of the first `eval_sentences` (of the averaged weights too, with
        training.ema); keeps the better as `best.pt`, saves `last.pt`, counts toward early stopping."""
        p, run, started = self.progress, self.run, time.perf_counter()
        translator = Translator(run.model, run.tokenizer, run.config.decoding, run.process.device, run.bf16)
        n = run.config.training.eval_sentences or len(run.dev_pairs)
        sources, references = run.dev_pairs.src[:n], run.dev_pairs.tgt[:n]
        hypotheses = translator.translate(sources)
        scores = score(hypotheses, references)
        loss = dev_loss(run)
        if not math.isfinite(loss):  # a diverged model must not become last.pt or best.pt
            raise TrainingError(f"the dev loss became {loss} at step {p.step}; stopped ({self.files.advice()})")
        perplexity = math.exp(min(loss, 50))
        record = {"type": "dev", "step": p.step, "epoch": p.epoch + 1, "loss": loss, "perplexity": perplexity,
                  "bleu": scores.bleu, "chrf": scores.chrf, "minutes": p.elapsed / 60}  # fmt: skip
        best_weights = contextlib.nullcontext
        if run.ema is not None:
            with run.ema.applied():
                ema_hypotheses = translator.translate(sources)
            record["ema_bleu"] = score(ema_hypotheses, references).bleu
            if record["ema_bleu"] > scores.bleu:
                hypotheses, best_weights = ema_hypotheses, run.ema.applied
        self.files.log(record)
        self.files.redraw_curves()
        if self.files.events is not None:  # with the tensorboard extra: what the model reads, as images
            self.files.attention(p.step, translator.attention(sources[0], "cross"))
        bleu = max(record["bleu"], record.get("ema_bleu", -1.0))
        improved = bleu > p.best_bleu
        p.best_bleu, p.bad_evals = (bleu, 0) if improved else (p.best_bleu, p.bad_evals + 1)
        p.validation_seconds += time.perf_counter() - started
        ema = f", EMA BLEU {record['ema_bleu']:.2f}" if "ema_bleu" in record else ""
        best = "best so far" if improved else f"best {p.best_bleu:.2f}"
        share = 100 * p.validation_seconds / max(p.elapsed, 1e-9)
        lines = [
            f"step {p.step}: dev loss {loss:.3f}, ppl {perplexity:.2f}, BLEU {scores.bleu:.2f}{ema}, chrF "
            f"{scores.chrf:.2f}  ({best}); validating took {share:.0f}% of the {p.elapsed / 60:.1f} minutes so far"
        ]
        lines += [f"  {src}  →  {hyp}" for src, hyp in zip(sources[:3], hypotheses[:3], strict=True)]
        if self.process.is_main:
            tqdm.write("\n".join(lines), file=sys.stderr)  # above the progress bar, if there is one
        self.save("last.pt")
        if improved:
            with best_weights():
                self.save("best.pt")
        if self.config.training.keep_checkpoints:
            self.files.keep_step(checkpoint_state(run), self.config.training.keep_checkpoints)
        return record

    def save(self, name: str) -> None:
        """Write a checkpoint, never one whose weights are not all finite, nor after a skipped non-finite step."""
        self.guard.check(self.files.advice())
        if not all(bool(w.isfinite().all()) for w in self.model.parameters()):
            raise TrainingError(
                f"the weights became non-finite at step {self.progress.step}; not saved ({self.files.advice()})"
            )
        self.files.save(checkpoint_state(self.run), name)
