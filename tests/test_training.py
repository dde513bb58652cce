"""Training-loop guarantees: divergence stops cleanly and never reaches a checkpoint, early stopping, data-parallel
equals one process."""

import json
import math
import signal
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, free_port, overrides, run_script, script_env, train_demo

from transformer.checkpoint import load_checkpoint
from transformer.config import apply_overrides, load_config
from transformer.data import batch_plan
from transformer.distributed import setup_process
from transformer.errors import ConfigError, TrainingError
from transformer.prepare import Progress, prepare_run
from transformer.trainer import Trainer, budget_spent, learning_rate


def tiny_config(**changes):
    return apply_overrides(load_config(ROOT / "configs" / "demo.yaml"), overrides(**changes)[1::2])


def test_learning_rate_warms_up_then_decays():
    assert learning_rate(1, 1e-3, 100) == 1e-5
    assert learning_rate(100, 1e-3, 100) == 1e-3
    assert abs(learning_rate(400, 1e-3, 100) - 5e-4) < 1e-12
    assert learning_rate(5, 1e-3, 0) == 1e-3


@pytest.mark.parametrize("schedule", ["linear", "cosine", "rex"])
def test_budget_schedules_warm_up_then_reach_zero_when_the_budget_ends(schedule):
    assert learning_rate(10, 1.0, 100, schedule, spent=0.01) == 0.1  # the warm-up is the same for all
    after = [learning_rate(200, 1.0, 100, schedule, spent=x / 10) for x in range(11)]
    assert after[0] == 1.0 and after[-1] == 0.0
    assert all(a > b for a, b in zip(after, after[1:], strict=False))  # falls all the way
    assert learning_rate(200, 1.0, 100, schedule, spent=1.5) == 0.0  # never negative past the end
    middle = {"linear": 0.5, "cosine": 0.5, "rex": 2 / 3}[schedule]  # rex holds the rate higher for longer
    assert math.isclose(after[5], middle)


def test_a_slow_machine_still_warms_up_to_near_the_peak():
    """600 warm-up steps in a budget a slow machine spends in 600 steps meet REX's decay at 0.59 of the peak; with
    the warm-up ending at 40% of the budget at the latest, 0.81. A machine making 1,638 steps warms up as before."""

    def peak(steps, share):
        return max(learning_rate(s, 1.0, 600, "rex", s / steps, share) for s in range(1, steps + 1))

    assert peak(600, 0.0) < 0.6 and peak(600, 0.4) > 0.8
    assert peak(1638, 0.4) == peak(1638, 0.0)
    assert learning_rate(10, 1.0, 100, "inverse_sqrt", 0.9, 0.4) == 0.1  # inverse_sqrt knows no budget


def test_the_budget_spent_is_the_share_of_minutes_or_steps_whichever_is_further():
    training = tiny_config(training__max_steps=100, training__max_minutes=10).training
    assert budget_spent(Progress(step=20, elapsed=60), training) == 0.2  # steps ahead
    assert budget_spent(Progress(step=20, elapsed=300), training) == 0.5  # the clock ahead: a slower machine
    no_budget = tiny_config(training__max_minutes=0, training__max_steps=0).training
    assert budget_spent(Progress(step=20, elapsed=300), no_budget) == 0.0


def test_a_budget_schedule_without_a_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="training.schedule: 'linear' decays to zero at the end of a budget"):
        tiny_config(training__schedule="linear", training__max_minutes=0, training__max_steps=0)


def test_a_time_budget_ends_with_the_learning_rate_near_zero(tmp_path):
    """A 6-second budget, a step every few tens of milliseconds here: still ≥ 5 steps on a machine 40× slower."""
    result = train_demo(tmp_path / "run", training__schedule="linear", training__max_minutes=0.1,
                        training__warmup_steps=1, training__eval_every=25, training__log_every=1)  # fmt: skip
    assert "reached training.max_minutes=0.1" in result.stderr and "validating took" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["lr"] for r in records if r["type"] == "train"]
    assert len(rates) >= 5 and rates[-1] < 0.2 * max(rates)  # whatever this machine's speed: the clock set the decay


@pytest.fixture
def trainer(tmp_path):
    """A Trainer in this process, on a tiny demo run: step and validation called directly."""
    config = tiny_config(data__demo_train_size=300, training__max_steps=3)
    return Trainer(prepare_run(config, tmp_path / "run", setup_process(config.training)))


def first_batch(trainer):
    return batch_plan(trainer.run.train_data, trainer.config.training.batch_tokens, 0, 0)[:1]


def test_a_training_step_lowers_the_loss_on_its_batch(trainer):
    batch = first_batch(trainer)
    losses = [trainer.train_step(batch)[0] for _ in range(5)]
    assert trainer.progress.step == 5 and losses[-1] < losses[0]
    tokens = trainer.train_step(batch)[1]
    assert tokens == sum(len(ids) for ids in trainer.run.train_data.rows(batch[0])[1])  # target pieces + EOS


def test_validation_scores_the_dev_set_and_keeps_best_and_last(trainer):
    record = trainer.validate()
    assert record["type"] == "dev" and record["loss"] > 0 and 0 <= record["bleu"] <= 100
    assert trainer.progress.best_bleu == record["bleu"] and trainer.progress.bad_evals == 0
    assert (trainer.run_dir / "best.pt").is_file() and (trainer.run_dir / "last.pt").is_file()
    assert trainer.validate()["bleu"] == record["bleu"] and trainer.progress.bad_evals == 1  # not better: counted


def test_a_nan_loss_stops_before_the_weights_or_the_optimizer_change(trainer):
    trainer.train_step(first_batch(trainer))  # one good step: Adam has state now
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    adam_before = {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"][0].items()}
    model = trainer.model
    trainer.run.step_model = lambda *args: model(*args) * float("nan")  # a NaN loss, with NaN gradients
    with pytest.raises(TrainingError, match="the loss became nan at step 2"):
        trainer.train_step(first_batch(trainer))
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p, before[name]), name
    for key, value in trainer.optimizer.state_dict()["state"][0].items():
        assert torch.equal(value, adam_before[key]), key
    assert trainer.progress.step == 1


def test_a_diverged_model_never_becomes_last_or_best(trainer):
    trainer.validate()
    saved = load_checkpoint(trainer.run_dir / "best.pt")["model"]
    with torch.no_grad():
        trainer.model.embedding.weight.mul_(1e30)  # finite weights whose outputs are not
    with pytest.raises(TrainingError, match="dev loss became"):
        trainer.validate()
    for name in ("best.pt", "last.pt"):
        for key, tensor in load_checkpoint(trainer.run_dir / name)["model"].items():
            assert torch.equal(tensor, saved[key]), (name, key)
    with torch.no_grad():
        trainer.model.embedding.weight.fill_(float("inf"))
    with pytest.raises(TrainingError, match="weights became non-finite"):
        trainer.save("last.pt")


def test_a_diverging_run_stops_with_one_line_and_writes_no_broken_checkpoint(tmp_path):
    out = tmp_path / "run"
    # A learning rate of 1e30: the first update gives finite weights whose outputs overflow.
    diverging = overrides(training__lr=1e30, training__warmup_steps=0, training__clip_norm=0, training__eval_every=1)
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), *diverging)
    assert result.returncode == 2, result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "Traceback" not in result.stderr
    assert "at step 1" in message[0] and "no checkpoint was written" in message[0]
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


def test_early_stopping_after_patience_validations(tmp_path):
    result = train_demo(tmp_path / "run", training__lr=1e-9, training__warmup_steps=0, training__eval_every=1,
                        training__patience=2, training__max_steps=50)  # fmt: skip
    assert "early stopping" in result.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3  # the first validation sets the best


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    common = overrides(model__dropout=0, training__max_steps=3, training__eval_every=100, training__device="cpu")
    single = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(tmp_path / "one"), *common,
                        "--set", "training.accumulate=2")  # fmt: skip
    assert single.returncode == 0, single.stderr
    env = {**script_env(), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "scripts/train.py", "--config", "configs/demo.yaml",
               "--out", str(tmp_path / "two"), *common]  # fmt: skip
    ddp = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["step"] == two["step"] == 3
    for name, tensor in one["model"].items():
        assert torch.allclose(tensor, two["model"][name], atol=1e-5), name


def train_in_process(run_dir, stop_at=None, resume=False):
    """The linear schedule on a 30-step budget, in this process; with `stop_at`, stopped as by Ctrl-C there."""
    config = tiny_config(data__demo_train_size=300, training__max_steps=30, training__schedule="linear",
                         training__eval_every=100)  # fmt: skip
    trainer = Trainer(prepare_run(config, run_dir, setup_process(config.training), resume=resume))
    return train_stopping_at(trainer, stop_at)


def train_stopping_at(trainer, stop_at=None):
    """trainer.train(), stopped as by Ctrl-C once it reaches step `stop_at` (None: not stopped)."""
    step = trainer.train_step

    def step_then_maybe_stop(batches):
        result = step(batches)
        if trainer.progress.step == stop_at:
            trainer._request_stop(signal.SIGINT, None)
        return result

    trainer.train_step = step_then_maybe_stop
    return trainer.train()


def test_a_step_budget_schedule_resumes_exactly(tmp_path):
    train_in_process(tmp_path / "straight")
    assert train_in_process(tmp_path / "split", stop_at=17)["step"] == 17
    assert train_in_process(tmp_path / "split", resume=True)["step"] == 30
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] < 1e-3
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


@pytest.mark.parametrize("clip_norm", [0.05, 0.0])
def test_the_update_sees_gradients_clipped_to_clip_norm(tmp_path, clip_norm):
    """What the optimizer steps with: gradients of norm `training.clip_norm` when they are larger (a fresh model's
    are far larger than 0.05), and as they came with clipping off (0)."""
    config = tiny_config(data__demo_train_size=300, training__max_steps=2, training__clip_norm=clip_norm)
    trainer = Trainer(prepare_run(config, tmp_path / "run", setup_process(config.training)))
    norms, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.train()
    assert len(norms) == 2
    if clip_norm:
        assert norms == pytest.approx([clip_norm] * 2, rel=1e-3)
    else:
        assert min(norms) > 1.0  # unclipped: what the clipped run cut down to 0.05


def test_auto_precision_is_bf16_only_where_native_and_measured_faster(monkeypatch):
    from transformer import device as device_module
    from transformer.device import choose_bf16

    cpu = torch.device("cpu")
    never = lambda bf16: pytest.fail("no trial when the precision is given")  # noqa: E731
    assert choose_bf16("fp32", cpu, never) == (False, "as configured")
    assert choose_bf16("bf16", cpu, never) == (True, "as configured")
    monkeypatch.setattr(device_module, "native_bf16", lambda device: False)
    assert choose_bf16("auto", cpu, never)[0] is False
    monkeypatch.setattr(device_module, "native_bf16", lambda device: True)
    bf16, why = choose_bf16("auto", cpu, lambda bf16: 0.010 if bf16 else 0.020)
    assert bf16 and why.endswith("10 ms in bf16, 20 ms in fp32: bf16")
    bf16, why = choose_bf16("auto", cpu, lambda bf16: 0.030 if bf16 else 0.020)
    assert not bf16 and why.endswith("30 ms in bf16, 20 ms in fp32: fp32")


def test_compile_auto_weighs_a_timed_trial_against_the_budget(monkeypatch):
    """auto never compiles on a CPU (nothing timed), never tries where the budget is too short to earn a compile back,
    and elsewhere compiles only when the seconds saved over the run exceed the compiles it pays; true with a broken
    toolchain trains eagerly."""
    from transformer import device as device_module
    from transformer.device import choose_compile

    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object: no GPU needed to decide for one
    calls = []

    def trial(eager_s, compiled_s, compile_s):  # seconds of steps; the first compiled step also compiles
        def seconds(compiled=False):
            calls.append(compiled)
            return [compile_s + compiled_s, compiled_s, compiled_s] if compiled else [1.0, eager_s, eager_s]

        return seconds

    never = lambda **_: pytest.fail("nothing timed")  # noqa: E731
    monkeypatch.setattr(device_module, "compiler_problem", lambda device: pytest.fail("no toolchain check"))
    assert choose_compile(False, gpu, lambda s: 1e9, never) == (False, "as configured")
    assert choose_compile("auto", cpu, lambda s: 1e9, never)[0] is False
    monkeypatch.setattr(device_module, "compiler_problem", lambda device: None)
    assert choose_compile(True, cpu, lambda s: 1e9, never) == (True, "as configured")
    compiled, why = choose_compile("auto", gpu, lambda s: 300.0, trial(0.10, 0.08, 30.0))  # a 5-minute run
    assert not compiled and "10 minutes" in why and calls == [False]  # the compiled trial was never paid
    compiled, why = choose_compile("auto", gpu, lambda s: 1800.0, trial(0.10, 0.08, 30.0))
    assert compiled and why.endswith("80 ms compiled, 100 ms eager; compiling took 30 s: compiled")
    assert not choose_compile("auto", gpu, lambda s: 1800.0, trial(0.10, 0.12, 30.0))[0]  # compiled is slower
    assert not choose_compile("auto", gpu, lambda s: 600.0, trial(0.10, 0.09, 60.0))[0]  # saves 67 s, pays 180
    assert choose_compile("auto", gpu, lambda s: 2000 * s, trial(0.10, 0.09, 60.0))[0] is False  # 200 s
    assert choose_compile("auto", gpu, lambda s: 20000 * s, trial(0.10, 0.09, 60.0))[0] is True  # saves 200 s
    monkeypatch.setattr(device_module, "compiler_problem", lambda device: "InvalidCxxCompiler: no C++ compiler")
    compiled, why = choose_compile(True, cpu, lambda s: 1e9, never)
    assert not compiled and why == "torch.compile cannot run here: InvalidCxxCompiler: no C++ compiler"


def test_compile_true_without_a_compiler_trains_eagerly_after_one_line(tmp_path):
    """No C++ compiler (CXX points nowhere): before, the first step died in a traceback of a hundred lines."""
    changes = overrides(data__demo_train_size=200, training__max_steps=2, training__eval_every=2)
    changes += ["--set", "training.compile=true"]
    result = run_script("train.py", "--config", "demo", "--out", str(tmp_path / "run"), *changes,
                        env={**script_env(), "CXX": str(tmp_path / "no-such-g++")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "compile" in line.lower()]
    assert len(lines) == 1 and "compile: no (torch.compile cannot run here:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "no-such-g++" in lines[0]
    assert "step 2" in result.stderr + result.stdout


def test_a_beam_the_vocabulary_cannot_fill_or_a_model_memory_cannot_hold_fails_before_any_file(tmp_path):
    """Before: decoding.beam_size beyond half the vocabulary failed at the first validation, after training; a model
    too large for memory was an allocator traceback. Both left config.yaml and tokenizer.model behind."""
    for changes, message in [
        ({"decoding__beam_size": 1000}, "decoding.beam_size: must be at most"),
        ({"model__d_model": 1_000_000}, "model: this shape does not fit in the cpu's memory"),
    ]:
        result = run_script("train.py", "--config", "demo", "--out", str(tmp_path / "run"), *overrides(**changes))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
        assert not (tmp_path / "run").exists()


def test_the_precision_trial_changes_nothing_the_run_computes(tmp_path, monkeypatch):
    """A run whose `auto` trial (both precisions timed on a copy of the model) chose fp32 ends with the weights of a
    run told fp32, bit for bit: the trial used no random number and touched no weight."""
    from transformer import device as device_module
    from transformer import prepare as prepare_module

    trials = []

    def trial_then_fp32(precision, device, seconds):
        trials.append((seconds(False), seconds(True)))
        return False, "fp32 for the test"

    def train(name, precision):
        config = tiny_config(data__demo_train_size=300, training__max_steps=5, training__precision=precision,
                             training__eval_every=100, model__dropout=0.1)  # fmt: skip
        Trainer(prepare_run(config, tmp_path / name, setup_process(config.training))).train()
        return load_checkpoint(tmp_path / name / "last.pt")

    told = train("told", "fp32")
    monkeypatch.setattr(prepare_module, "choose_bf16", trial_then_fp32)
    monkeypatch.setattr(device_module, "native_bf16", lambda device: True)
    chose = train("chose", "auto")
    assert len(trials) == 1 and all(t > 0 for t in trials[0])
    assert told["bf16"] is chose["bf16"] is False
    for name, tensor in told["model"].items():
        assert torch.equal(tensor, chose["model"][name]), name


def test_on_a_gpu_a_nan_step_is_skipped_on_the_device_and_stops_the_run_at_the_next_check(trainer):
    """What a GPU does (CI has none): the verdict is not read every step. The NaN step changes nothing, the good step
    after it trains, and the next check (a log, a validation, a save) stops the run naming the NaN step."""
    trainer.check_each_step = False
    batch = first_batch(trainer)
    trainer.train_step(batch)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    adam_step = trainer.optimizer.state_dict()["state"][0]["step"].clone()
    model, step_model = trainer.model, trainer.run.step_model
    trainer.run.step_model = lambda *args: model(*args) * float("nan")
    trainer.train_step(batch)  # no read of the device: no error yet
    assert all(torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())
    assert torch.equal(trainer.optimizer.state_dict()["state"][0]["step"], adam_step)
    trainer.run.step_model = step_model
    trainer.train_step(batch)
    assert not all(torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())
    with pytest.raises(TrainingError, match="the loss became nan at step 2"):
        trainer.save("last.pt")
    assert not (trainer.run_dir / "last.pt").exists()
