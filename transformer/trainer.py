"""The training loop: batches → model → label-smoothed loss → Adam with warm-up → checkpoints, validation, stops.

A run directory holds `best.pt` (by dev BLEU), `last.pt`, `config.yaml` (the resolved config),
`tokenizer.model` and `metrics.jsonl` (one JSON object a line). `resume=True` continues from `last.pt` exactly:
model, optimizer, schedule, step, RNG and the position in the epoch's batch plan.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from transformer import distributed
from transformer.checkpoint import load_checkpoint, save_checkpoint, tensor_to_tokenizer, tokenizer_to_tensor
from transformer.config import Config, config_from_dict
from transformer.data import Encoded, batch_plan, collate, encode_pairs, padding_fraction, read_split
from transformer.device import autocast, resolve_device, tune_cpu_allocator, use_bf16
from transformer.errors import ToolkitError
from transformer.metrics import score
from transformer.model import Transformer
from transformer.tokenizer import Tokenizer
from transformer.translator import Translator

log = logging.getLogger(__name__)


class TrainingError(ToolkitError):
    """Training cannot go on (e.g. the loss became NaN)."""


def write_file(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise ToolkitError(f"cannot write {path}: {e.strerror or e}") from None


def learning_rate(step: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then decay with the inverse square root of the step (Vaswani et al., 2017)."""
    step = max(step, 1)
    if warmup == 0:
        return peak
    return peak * min(step / warmup, math.sqrt(warmup / step))


class Trainer:
    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        t = config.training
        last = self.run_dir / "last.pt"
        if resume and not last.is_file():
            raise ToolkitError(f"--resume: no checkpoint to resume from at {last}")
        if not resume and last.is_file():
            raise ToolkitError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose --out")
        if t.threads:
            torch.set_num_threads(t.threads)
        tune_cpu_allocator()
        torch.manual_seed(t.seed)
        self.rank, self.world, self.device = distributed.setup(resolve_device(t.device))
        self.main = self.rank == 0  # only the main process writes files and logs
        if not self.main:
            log.setLevel(logging.WARNING)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.pt.*.tmp"):  # left by a run killed while saving
                stale.unlink()
        self.bf16 = use_bf16(t.precision, self.device)
        state = load_checkpoint(last) if resume else None
        if state is not None:  # the run's own config wins, except for the limits a user may extend on resume
            saved = config_from_dict(state["config"], source=str(last))
            saved.training.max_steps, saved.training.max_epochs = t.max_steps, t.max_epochs
            saved.training.max_minutes = t.max_minutes
            self.config, config, t = saved, saved, saved.training

        log.info("reading the %s corpus", config.data.corpus)
        train_pairs = read_split(config.data, "train")
        dev_pairs = read_split(config.data, "dev")
        if state is not None:
            self.tokenizer = Tokenizer(tensor_to_tokenizer(state["tokenizer"]))
        else:
            trained = Tokenizer.train([*train_pairs.src, *train_pairs.tgt], config.tokenizer) if self.main else None
            self.tokenizer = Tokenizer(distributed.broadcast_bytes(trained and trained.model_bytes, self.world))
        if self.main:
            write_file(self.run_dir / "tokenizer.model", self.tokenizer.model_bytes)
            write_file(self.run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
        self.train_data: Encoded = encode_pairs(train_pairs, self.tokenizer, config.data.max_len)
        self.dev_data: Encoded = encode_pairs(dev_pairs, self.tokenizer)
        self.dev_pairs = dev_pairs
        log.info(
            "train: %d pairs, dev: %d pairs, vocabulary: %d",
            len(self.train_data.src),
            len(dev_pairs),
            self.tokenizer.vocab_size,
        )

        self.model = Transformer(config.model, self.tokenizer.vocab_size).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=t.lr,
            betas=tuple(t.betas),
            eps=1e-9,
            weight_decay=t.weight_decay,
            fused=True,  # one kernel for all parameters instead of ~10 small ops per tensor
        )
        self.step = 0  # optimizer steps taken
        self.epoch = 0
        self.batch_in_epoch = 0  # next batch of the epoch's plan
        self.best_bleu = -1.0
        self.bad_evals = 0  # validations since the best dev BLEU
        self.elapsed = 0.0  # seconds of training, summed over resumed sessions
        if state is not None:
            self._restore(state)
        self.wrapped_model = torch.compile(self.model) if t.compile else self.model
        if self.world > 1:
            self.wrapped_model = torch.nn.parallel.DistributedDataParallel(self.wrapped_model)
        self.stop_reason: str | None = None

    # -- checkpoints -------------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "tokenizer": tokenizer_to_tensor(self.tokenizer.model_bytes),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_bleu": self.best_bleu,
            "bad_evals": self.bad_evals,
            "elapsed": self.elapsed,
            "rng": torch.get_rng_state(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_bleu, self.bad_evals, self.elapsed = (
            state["best_bleu"],
            state["bad_evals"],
            state["elapsed"],
        )
        torch.set_rng_state(state["rng"])
        log.info("resumed at step %d (epoch %d, batch %d)", self.step, self.epoch + 1, self.batch_in_epoch)

    def save(self, name: str) -> Path:
        """Write a checkpoint, never one whose weights are not all finite."""
        path = self.run_dir / name
        if not all(bool(p.isfinite().all()) for p in self.model.parameters()):
            raise TrainingError(
                f"the weights became non-finite at step {self.step}; {path} was not written ({self._kept()})"
            )
        if self.main:
            save_checkpoint(self._state(), path)
        return path

    def _kept(self) -> str:
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written"
        return f"{kept}; try a lower training.lr"

    def _log_metrics(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # -- the loop ----------------------------------------------------------------------------------------------

    def train_step(self, chunk: list[list[int]]) -> tuple[float, int]:
        """One optimizer step over the batches in `chunk` (gradient accumulation; with N processes, each takes every
        N-th batch). The loss is averaged over all the step's target tokens. Returns that loss and the token count."""
        t = self.config.training
        self.model.train()
        total_tokens = sum(len(self.train_data.tgt[i]) + 1 for indices in chunk for i in indices)
        total_loss = 0.0
        for indices in chunk[self.rank :: self.world]:
            batch = collate(self.train_data, indices).to(self.device)
            with autocast(self.device, self.bf16):
                loss = self.wrapped_model(batch.src, batch.tgt_in, batch.tgt_out, t.label_smoothing)  # summed
            (loss * (self.world / total_tokens)).backward()  # DDP averages over processes: world / total = 1 / share
            total_loss += loss.item()
        total_loss = distributed.sum_over_ranks(total_loss, self.world, self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step + 1, t.lr, t.warmup_steps)
        # The gradient norm is needed anyway for clipping; with clipping off, max_norm=inf only measures it.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm or math.inf)
        if not (math.isfinite(total_loss) and math.isfinite(grad_norm)):  # checked before the update touches anything
            self.optimizer.zero_grad(set_to_none=True)
            what = (
                f"the loss became {total_loss}" if not math.isfinite(total_loss) else "the gradients became non-finite"
            )
            raise TrainingError(
                f"{what} at step {self.step + 1}; stopped without updating the weights ({self._kept()})"
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total_loss / total_tokens, total_tokens

    def train(self) -> dict[str, Any]:
        """Train until a limit (steps, epochs, minutes), early stopping, or a signal; return the final metrics."""
        t = self.config.training
        previous_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        progress = tqdm(
            disable=None if self.main else True,
            total=t.max_steps or None,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        started = time.perf_counter() - self.elapsed
        window_tokens, window_start, last_eval_step = 0, time.perf_counter(), -1
        try:
            while self.stop_reason is None:
                plan = batch_plan(self.train_data, t.batch_tokens, t.seed, self.epoch)
                if self.batch_in_epoch == 0:
                    log.info(
                        "epoch %d: %d batches, %.1f%% padding",
                        self.epoch + 1,
                        len(plan),
                        100 * padding_fraction(self.train_data, plan),
                    )
                per_step = t.accumulate * self.world
                # With several processes every step needs a full share for each; the epoch's tail is skipped.
                while self.batch_in_epoch + (per_step if self.world > 1 else 1) <= len(plan) and not self.stop_reason:
                    chunk = plan[self.batch_in_epoch : self.batch_in_epoch + per_step]
                    loss, tokens = self.train_step(chunk)
                    self.batch_in_epoch += len(chunk)
                    self.elapsed = time.perf_counter() - started
                    window_tokens += tokens
                    progress.update(1)
                    if self.step % t.log_every == 0:
                        rate = window_tokens / max(time.perf_counter() - window_start, 1e-9)
                        lr = self.optimizer.param_groups[0]["lr"]
                        progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tgt_tok_s=f"{rate:.0f}")
                        if progress.disable:
                            log.info("step %d  loss %.3f  lr %.2e  %.0f target tokens/s", self.step, loss, lr, rate)
                        self._log_metrics(
                            {
                                "type": "train",
                                "step": self.step,
                                "epoch": self.epoch + 1,
                                "loss": loss,
                                "lr": lr,
                                "tgt_tokens_per_s": rate,
                                "minutes": self.elapsed / 60,
                            }
                        )
                        window_tokens, window_start = 0, time.perf_counter()
                    if self.step % t.eval_every == 0:
                        self.validate(progress)
                        last_eval_step = self.step
                    self._check_limits()
                if self.batch_in_epoch + (per_step if self.world > 1 else 1) > len(plan):
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if t.max_epochs and self.epoch >= t.max_epochs:
                        self.stop_reason = self.stop_reason or f"reached training.max_epochs={t.max_epochs}"
            interrupted = self.stop_reason.startswith("received")
            if not interrupted and last_eval_step != self.step:
                self.validate(progress)
            self.save("last.pt")
        finally:
            progress.close()
            for s, handler in previous_handlers.items():
                signal.signal(s, handler)
            distributed.cleanup(self.world)
        log.info("stopped at step %d: %s", self.step, self.stop_reason)
        if interrupted:
            log.info("saved %s; continue with --resume --out %s", self.run_dir / "last.pt", self.run_dir)
        return {
            "step": self.step,
            "best_bleu": self.best_bleu,
            "minutes": self.elapsed / 60,
            "stop_reason": self.stop_reason,
        }

    def _check_limits(self) -> None:
        t = self.config.training
        if t.max_steps and self.step >= t.max_steps:
            self.stop_reason = self.stop_reason or f"reached training.max_steps={t.max_steps}"
        if t.max_minutes and self.elapsed >= 60 * t.max_minutes:
            self.stop_reason = self.stop_reason or f"reached training.max_minutes={t.max_minutes}"
        if t.patience and self.bad_evals >= t.patience:
            self.stop_reason = self.stop_reason or f"no better dev BLEU in {t.patience} validations (early stopping)"
        # Clocks and signals differ between processes: stop all when any one stops.
        if self.world > 1 and distributed.sum_over_ranks(float(self.stop_reason is not None), self.world, self.device):
            self.stop_reason = self.stop_reason or "another process stopped"

    def _request_stop(self, signum: int, frame: Any) -> None:
        self.stop_reason = f"received {signal.Signals(signum).name}"

    # -- validation --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def dev_loss(self) -> float:
        """Mean cross-entropy per target token on the dev set (no label smoothing: perplexity = exp of it)."""
        self.model.eval()
        total, tokens = 0.0, 0
        for indices in batch_plan(self.dev_data, self.config.training.batch_tokens, 0, 0, shuffle=False):
            batch = collate(self.dev_data, indices).to(self.device)
            with autocast(self.device, self.bf16):
                total += self.model(batch.src, batch.tgt_in, batch.tgt_out).item()
            tokens += batch.tgt_tokens
        return total / max(tokens, 1)

    def validate(self, progress: tqdm | None = None) -> dict[str, Any]:
        """Dev loss, perplexity and greedy BLEU; keeps `best.pt`, saves `last.pt`, counts toward early stopping."""
        t = self.config.training
        n = t.eval_sentences or len(self.dev_pairs)
        sources, references = self.dev_pairs.src[:n], self.dev_pairs.tgt[:n]
        translator = Translator(self.model, self.tokenizer, self.config.decoding, self.device, self.bf16)
        hypotheses = translator.translate(sources)
        scores = score(hypotheses, references)
        loss = self.dev_loss()
        if not math.isfinite(loss):  # a diverged model must not become last.pt or best.pt
            raise TrainingError(f"the dev loss became {loss} at step {self.step}; stopped ({self._kept()})")
        record = {
            "type": "dev",
            "step": self.step,
            "epoch": self.epoch + 1,
            "loss": loss,
            "perplexity": math.exp(min(loss, 50)),
            "bleu": scores.bleu,
            "chrf": scores.chrf,
            "minutes": self.elapsed / 60,
        }
        self._log_metrics(record)
        improved = scores.bleu > self.best_bleu
        if improved:
            self.best_bleu, self.bad_evals = scores.bleu, 0
        else:
            self.bad_evals += 1
        lines = [
            f"step {self.step}: dev loss {loss:.3f}, ppl {record['perplexity']:.2f}, BLEU {scores.bleu:.2f}, "
            f"chrF {scores.chrf:.2f}" + ("  (best so far)" if improved else f"  (best {self.best_bleu:.2f})")
        ]
        for src, hyp in list(zip(sources, hypotheses, strict=True))[:3]:
            lines.append(f"  {src}  →  {hyp}")
        if self.main:
            (progress.write if progress is not None else print)("\n".join(lines), file=sys.stderr)
        self.save("last.pt")
        if improved:
            self.save("best.pt")
        return record
