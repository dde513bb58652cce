"""Resuming loses nothing: stopped and resumed equals uninterrupted, also across epochs; signals save first."""

import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, overrides, run_script, script_env, train_demo

from transformer.checkpoint import load_checkpoint

# 300 pairs make an epoch of about ten steps, so a run of 30 steps crosses two epoch boundaries.
SHORT_EPOCHS = {"data__demo_train_size": 300, "training__eval_every": 100}


def test_resume_ends_with_the_same_weights_bit_for_bit_across_epochs(tmp_path):
    train_demo(tmp_path / "straight", training__max_steps=30, **SHORT_EPOCHS)
    train_demo(tmp_path / "split", training__max_steps=20, **SHORT_EPOCHS)
    stopped = load_checkpoint(tmp_path / "split" / "last.pt")
    assert stopped["epoch"] >= 1 and stopped["batch_in_epoch"] > 0  # stopped inside a later epoch
    train_demo(tmp_path / "split", "--resume", training__max_steps=30, **SHORT_EPOCHS)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["step"] == b["step"] == 30 and a["epoch"] == b["epoch"]
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert torch.equal(a["rng"], b["rng"])


def test_resume_raises_the_limits_and_refuses_any_other_change(tmp_path):
    out = tmp_path / "run"
    train_demo(out, training__max_steps=3, **SHORT_EPOCHS)
    changed = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), *overrides(**SHORT_EPOCHS),
                         "--resume", "--set", "training.max_steps=5", "--set", "model.d_ff=256")  # fmt: skip
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert changed.stderr.strip().splitlines()[-1].startswith("error: --set model.d_ff: a resumed run keeps its own")
    same = train_demo(out, "--resume", "--set", "training.max_steps=5", "--set", "model.d_ff=128", **SHORT_EPOCHS)
    assert load_checkpoint(out / "last.pt")["step"] == 5  # the limit was raised; an unchanged value is no change
    assert "differs" not in same.stderr
    edited_yaml = tmp_path / "edited.yaml"
    edited_yaml.write_text(
        (ROOT / "configs" / "demo.yaml").read_text().replace("label_smoothing: 0.1", "label_smoothing: 0.2")
    )
    edited = run_script("train.py", "--config", str(edited_yaml), "--out", str(out), "--resume",
                        *overrides(training__max_steps=6, **SHORT_EPOCHS))  # fmt: skip
    assert edited.returncode == 0, edited.stderr
    assert "the given config differs in training.label_smoothing" in edited.stderr  # named, not applied
    assert load_checkpoint(out / "last.pt")["config"]["training"]["label_smoothing"] == 0.1


def test_resuming_a_run_at_its_limit_is_one_line_and_trains_nothing(tmp_path):
    """Before: --resume with max_steps at or below the run's step trained one step more, rewrote last.pt and best.pt,
    and said it had stopped at the limit."""
    out = tmp_path / "run"
    train_demo(out, training__max_steps=2, **SHORT_EPOCHS)
    before = (out / "last.pt").read_bytes()
    for limit in (1, 2):
        result = run_script("train.py", "--config", "demo", "--out", str(out), "--resume",
                            *overrides(training__max_steps=limit, **SHORT_EPOCHS))  # fmt: skip
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
            f"error: --resume: the run already reached training.max_steps={limit}; raise it to train on"
        ), result.stderr
    assert (out / "last.pt").read_bytes() == before


def test_starting_over_an_existing_run_needs_resume(demo_run):
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(demo_run), *overrides())
    assert result.returncode == 2 and "pass --resume" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, and what schedulers send
def test_a_stop_signal_saves_last_and_says_how_to_resume(tmp_path, sig):
    out = tmp_path / "run"
    args = overrides(training__max_steps=100000, training__eval_every=100000)
    proc = subprocess.Popen(
        [sys.executable, "scripts/train.py", "--config", "configs/demo.yaml", "--out", str(out), *args],
        cwd=ROOT,
        env=script_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:  # training has started
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"received {sig.name}" in stderr and "--resume" in stderr
    assert load_checkpoint(out / "last.pt")["step"] > 0


def test_sigkill_while_saving_leaves_a_run_that_resumes(tmp_path):
    out = tmp_path / "run"
    # eval_every=1: a checkpoint is written after every step, so kills land during saves too
    args = overrides(training__max_steps=100000, training__eval_every=1)
    command = [sys.executable, "scripts/train.py", "--config", "configs/demo.yaml", "--out", str(out), *args]
    for attempt, delay in enumerate([0.3, 0.5, 0.7]):
        proc = subprocess.Popen(
            command + (["--resume"] if attempt else []), cwd=ROOT, env=script_env(), stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while not (out / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        load_checkpoint(out / "last.pt")  # loadable whatever instant the kill hit
    (out / ".curves.png.0f0a2951.tmp").write_bytes(b"half")  # as a kill while drawing leaves, every time
    train_demo(
        out, "--resume", training__max_steps=load_checkpoint(out / "last.pt")["step"] + 2, training__eval_every=1
    )
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # half-written files were cleared
