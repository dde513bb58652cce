"""Prepare a training run: the run directory, the config (the run's own on resume), data, tokenizer, model,
optimizer and the restored progress, handed to the `Trainer` as plain objects. A new run may start from a trained
model (`--init-from`): its weights, EMA average, tokenizer and shape; the rest from the given config, and a fresh
optimizer at step 0."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from transformer import distributed
from transformer.averaging import ExponentialMovingAverage
from transformer.checkpoint import Checkpoint, read_checkpoint
from transformer.config import Config, DataConfig, TrainingConfig, apply_overrides, config_from_dict
from transformer.corpora import Pairs, read_split
from transformer.corpus_cache import cached_ids, cached_text, cached_tokenizer
from transformer.data import Encoded, batch_plan, collate, encode_pairs
from transformer.device import choose_bf16, choose_compile
from transformer.distributed import Process
from transformer.errors import ConfigError, ToolkitError
from transformer.files import atomic_file
from transformer.model import Transformer
from transformer.optimization import build_optimizer, step_seconds
from transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)

# What a user may change when resuming: the limits. Everything else is the run's own, as saved in last.pt.
LIMITS = ("max_steps", "max_epochs", "max_minutes")
RESUMABLE = tuple(f"training.{name}" for name in LIMITS)


@dataclass
class Progress:
    """Where training stands: saved in every checkpoint beside the weights, restored on resume."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # next batch of the epoch's plan
    best_bleu: float = -1.0
    bad_evals: int = 0  # validations since the best dev BLEU
    elapsed: float = 0.0  # seconds of training, summed over resumed sessions (validation included)
    validation_seconds: float = 0.0  # of those, spent validating


@dataclass
class Run:
    """Everything a Trainer trains: built here, handed over as plain objects."""

    config: Config
    run_dir: Path
    process: Process
    tokenizer: Tokenizer
    train_data: Encoded  # piece ids, memory-mapped from the cache
    dev_pairs: Pairs  # text, for BLEU
    dev_data: Encoded  # ids, for the dev loss
    model: Transformer
    step_model: torch.nn.Module  # what a training step calls: the model, compiled and/or wrapped for data parallelism
    optimizer: torch.optim.Optimizer
    progress: Progress
    bf16: bool
    ema: ExponentialMovingAverage | None  # with training.ema > 0
    lock: RunLock | None  # the run directory held by this process (rank 0); released when training ends
    init_from: dict[str, Any] | None = None  # a run from a trained model: {"path": its checkpoint, "step", "data"}


class RunLock:
    """The run directory held by one process: an exclusive flock on RUN/.lock, taken before anything is written
    there. The kernel drops it when the process ends, however it ends (kill -9 too), so it can never go stale."""

    def __init__(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        self.created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # made here, innermost first
        self.path = run_dir / ".lock"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.created_file = not self.path.exists()
            self.file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        except OSError as e:
            raise ToolkitError(f"cannot write to the run directory {run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read(64).strip() or "unknown"
            self.file.close()
            raise ToolkitError(
                f"{run_dir} is in use by another training (process {holder}); "
                "wait for it to end or choose another --out"
            ) from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")  # who holds it, for the message above
        self.file.flush()

    def release(self) -> None:
        self.file.close()

    def abandon(self) -> None:
        """Setup failed: release, and remove the lock file and the folders if this run made them."""
        self.release()
        if self.created_file:
            self.path.unlink(missing_ok=True)
        for folder in self.created:
            with contextlib.suppress(OSError):  # not empty: something else is in it now
                folder.rmdir()


def prepare_run(
    config: Config,
    run_dir: str | Path,
    process: Process,
    resume: bool = False,
    overrides: list[str] | None = None,
    init_from: str | Path | None = None,
) -> Run:
    """Set up a new run in `run_dir` (with `init_from`, from the model of a checkpoint or run directory), or
    (resume=True) the run saved there, continuing where it stopped."""
    if resume and init_from is not None:
        raise ToolkitError("--init-from starts a new run and --resume continues the one in --out: pass only one")
    run_dir, overrides = Path(run_dir), overrides or []
    lock = RunLock(run_dir) if process.is_main else None  # before anything is read or written there
    try:
        theirs = lock is not None and lock.created_file  # no run of ours has been in this folder
        checkpoint, source, origin = _open_run_dir(run_dir, resume, process, theirs), None, None
        if checkpoint is not None:
            config, origin = resumed_config(checkpoint.config, config, overrides), checkpoint.state.get("init_from")
        elif init_from is not None:
            source = read_checkpoint(init_from)
            config = init_config(source, config, overrides)
            step = int(source.state.get("step", 0))
            origin = {"path": str(source.path), "step": step, "data": source.config.to_dict()["data"]}
            log.info("starting from the model of %s (step %d), with a fresh optimizer", source.path, step)
        trained = checkpoint or source  # the weights and tokenizer a resumed run, or a run from a trained model, takes
        dev_pairs = read_split(config.data, "dev")  # first: a broken dev file fails in seconds, before any writing
        tokenizer, train_data, dev_data = _encoded_data(config, process, trained, origin, dev_pairs)
        if 2 * config.decoding.beam_size > tokenizer.vocab_size:  # validation would fail, after the first steps
            raise ConfigError(f"decoding.beam_size: must be at most {tokenizer.vocab_size // 2} (half the vocabulary), "
                              f"got {config.decoding.beam_size}")  # fmt: skip
        t = config.training
        try:
            model = trained.build_model(config.model) if trained else Transformer(config.model, tokenizer.vocab_size)
            model = model.to(process.device)
        except RuntimeError as e:  # torch.OutOfMemoryError is one
            if "alloc" not in str(e) and "out of memory" not in str(e):
                raise
            raise ConfigError(f"model: this shape does not fit in the {process.device.type}'s memory") from None
        optimizer = build_optimizer(model, t)
        progress = Progress() if checkpoint is None else _restore(checkpoint, optimizer, process)
        if checkpoint is not None:
            _check_limits_ahead(t, progress)
        ema = ExponentialMovingAverage(model, t.ema) if t.ema else None
        if ema is not None and trained is not None and "ema" in trained.state:
            ema.average = {name: tensor.to(process.device) for name, tensor in trained.state["ema"].items()}
        plan = batch_plan(train_data, t.batch_tokens, t.seed, 0)
        trial = functools.partial(step_seconds, model, collate(train_data, plan[0]), training=t, process=process)
        if checkpoint is not None:  # a resumed run keeps its precision (checkpoints before it was saved: the old rule)
            bf16, why = bool(checkpoint.state.get("bf16", choose_bf16(t.precision, process.device)[0])), "the run's own"
        else:
            bf16, why = choose_bf16(t.precision, process.device, lambda bf16: min(trial(bf16)[1:]))
        bf16 = distributed.broadcast_bytes(b"1" if bf16 else b"0", process.world) == b"1"  # rank 0's choice for all
        log.info("precision: %s (%s)", "bf16" if bf16 else "fp32", why)
        budget = functools.partial(_budget_seconds, t, len(plan))
        compiled, why = choose_compile(t.compile, process.device, budget, functools.partial(trial, bf16))
        compiled = distributed.broadcast_bytes(b"1" if compiled else b"0", process.world) == b"1"
        log.log(logging.WARNING if t.compile is True and not compiled else logging.INFO, "compile: %s (%s)",
                "yes" if compiled else "no", why)  # fmt: skip
        step_model = torch.compile(model) if compiled else model
        if process.world > 1:
            step_model = torch.nn.parallel.DistributedDataParallel(step_model)
        if process.is_main:  # the run's files appear once the run is set up: a failure before leaves none
            write_file(run_dir / "tokenizer.model", tokenizer.model_bytes)
            started = f"# started from {origin['path']} (its step {origin['step']})\n" if origin else ""
            write_file(run_dir / "config.yaml", (started + yaml.safe_dump(config.to_dict(), sort_keys=False)).encode())
        return Run(config, run_dir, process, tokenizer, train_data, dev_pairs, dev_data, model, step_model, optimizer,
                   progress, bf16, ema, lock, origin)  # fmt: skip
    except BaseException:
        if lock is not None:
            lock.abandon()
        raise


def _budget_seconds(training: TrainingConfig, batches_per_epoch: int, step_seconds: float) -> float:
    """How long the run's limits let it train at `step_seconds` a step (inf when nothing limits it)."""
    limits = [60 * training.max_minutes] if training.max_minutes else []
    if training.max_steps:
        limits.append(training.max_steps * step_seconds)
    if training.max_epochs:
        limits.append(training.max_epochs * batches_per_epoch / training.accumulate * step_seconds)
    return min(limits, default=math.inf)


def _check_limits_ahead(training: TrainingConfig, progress: Progress) -> None:
    """A resumed run whose limit is already reached would still train a step past it: say so instead."""
    at = {"max_steps": progress.step, "max_epochs": progress.epoch, "max_minutes": progress.elapsed / 60}
    for name in LIMITS:
        if (limit := getattr(training, name)) and at[name] >= limit:
            raise ToolkitError(f"--resume: the run already reached training.{name}={limit}; raise it to train on")


def _encoded_data(
    config: Config, process: Process, trained: Checkpoint | None, origin: dict[str, Any] | None, dev_pairs: Pairs
) -> tuple[Tokenizer, Encoded, Encoded]:
    """The tokenizer (a trained model's own, or one trained on the text), the ids of the training pairs (with
    `data.init_mix` of the trained model's own corpus mixed in) and of the dev pairs."""
    log.info("reading the %s corpus", config.data.corpus)
    train_data = tokenizer = None
    if process.is_main:  # the other processes wait at the broadcast, then find everything in the cache
        text = cached_text(config.data, "train")
        tokenizer = trained.tokenizer if trained is not None else cached_tokenizer(config, text)
        train_data = cached_ids(config.data, text, tokenizer)
    tokenizer = Tokenizer(distributed.broadcast_bytes(tokenizer and tokenizer.model_bytes, process.world))
    if train_data is None:
        train_data = cached_ids(config.data, cached_text(config.data, "train"), tokenizer)
    if config.data.init_mix and origin is not None and "data" in origin:  # some of what the model was trained on
        own = DataConfig(**origin["data"])
        new_pairs = len(train_data)
        original = cached_ids(own, cached_text(own, "train"), tokenizer)
        train_data = train_data.mixed_with(original, config.data.init_mix, config.training.seed)
        log.info("data.init_mix: %d pairs of the trained model's own corpus mixed in", len(train_data) - new_pairs)
    log.info("train: %d pairs, dev: %d pairs, vocabulary: %d", len(train_data), len(dev_pairs), tokenizer.vocab_size)
    return tokenizer, train_data, encode_pairs(dev_pairs, tokenizer)


RUN_FILES = ("config.yaml", "tokenizer.model", "metrics.jsonl", "curves.png", "best.pt")  # besides last.pt


def _open_run_dir(run_dir: Path, resume: bool, process: Process, theirs: bool) -> Checkpoint | None:
    """Enforce the run-directory rules; on resume, the checkpoint to continue from. `theirs`: no run of ours has
    been in the folder (no .lock), so files there with our names are someone else's."""
    last = run_dir / "last.pt"
    if resume and not last.is_file():
        raise ToolkitError(f"--resume: no checkpoint to resume from at {last}")
    if not resume and last.is_file():
        raise ToolkitError(f"{run_dir} already holds a run; pass --resume to continue it or choose --out")
    if not resume and theirs and (taken := [name for name in RUN_FILES if (run_dir / name).exists()]):
        raise ToolkitError(f"{run_dir} holds {', '.join(taken)}, which no run wrote and a run would overwrite; "
                           "choose another --out")  # fmt: skip
    if process.is_main:
        for stale in run_dir.glob(".*.tmp"):  # files.atomic_file's .NAME.RANDOM.tmp, left by a run killed while saving
            if re.fullmatch(r"\..+\.[0-9a-f]{8}\.tmp", stale.name):
                stale.unlink()
    return read_checkpoint(last) if resume else None


def resumed_config(saved: Config, given: Config, overrides: list[str]) -> Config:
    """The run's own config, with the limits of `given` (which may be raised); any other `--set` is an error."""
    own = saved.to_dict()
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE and apply_overrides(saved, [item]).to_dict() != own:
            raise ConfigError(
                f"--set {key}: a resumed run keeps its own config; only {', '.join(RESUMABLE)} may change on --resume"
            )
    changed = [
        f"{section}.{key}"
        for section, values in given.to_dict().items()
        for key, value in values.items()
        if f"{section}.{key}" not in RESUMABLE and own[section][key] != value
    ]
    if changed:
        log.warning("--resume: the run's own config is used; the given config differs in %s", ", ".join(changed))
    limits = {name: getattr(given.training, name) for name in LIMITS}
    return dataclasses.replace(saved, training=dataclasses.replace(saved.training, **limits))


def init_config(source: Checkpoint, given: Config, overrides: list[str]) -> Config:
    """The given config with the shape and tokenizer of the model it starts from (dropout is training: the config's).
    A config file that differs there is said in one warning; a `--set` that differs is an error."""
    own, new = source.config.to_dict(), given.to_dict()
    taken = [("model", key) for key in own["model"] if key not in ("dropout", "attention_dropout")]
    taken += [("tokenizer", key) for key in own["tokenizer"]]
    differ = [(f"{s}.{k}", own[s][k], new[s][k]) for s, k in taken if own[s][k] != new[s][k]]
    given_keys = {item.partition("=")[0].strip() for item in overrides}
    for key, there, here in differ:
        if key in given_keys:
            raise ConfigError(
                f"--set {key}: --init-from {source.path}: {key} is {there} there, {here} here; "
                "a run from a trained model keeps its shape and tokenizer"
            )
    if differ:
        shown = ", ".join(f"{key} ({there} there, {here} in the config)" for key, there, here in differ)
        log.warning("--init-from: the model's own shape and tokenizer are used; the config differs in %s", shown)
    for section, key in taken:
        new[section][key] = own[section][key]
    return config_from_dict(new, source=f"the config with the model of {source.path}")


def checkpoint_state(run: Run) -> dict[str, Any]:
    """Everything a checkpoint holds: what translating needs (config, tokenizer, weights) and what resuming needs."""
    state = {
        "config": run.config.to_dict(),
        "tokenizer": torch.frombuffer(bytearray(run.tokenizer.model_bytes), dtype=torch.uint8),
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
    if run.init_from is not None:
        state["init_from"] = run.init_from  # where a run from a trained model began; kept through every resume
    return state


def _restore(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer, process: Process) -> Progress:
    """The optimizer's state, the progress and the random stream of a resumed run (its weights: `build_model`)."""
    state: dict[str, Any] = checkpoint.state
    optimizer.load_state_dict(state["optimizer"])
    progress = Progress(**{f.name: state.get(f.name, f.default) for f in dataclasses.fields(Progress)})
    if process.is_main:  # exact resume: rank 0 continues its random stream where it stopped
        torch.set_rng_state(state["rng"])
        if process.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], process.device)
    else:  # other ranks start a fresh stream of their own (exact resume is a single-process guarantee)
        torch.manual_seed(checkpoint.config.training.seed + process.rank + 1000 * progress.step)
    log.info("resumed at step %d (epoch %d, batch %d)", progress.step, progress.epoch + 1, progress.batch_in_epoch)
    return progress


def write_file(path: Path, data: bytes) -> None:
    try:
        with atomic_file(path) as file:
            file.write(data)
    except OSError as e:
        raise ToolkitError(f"cannot write {path}: {e.strerror or e}") from None
