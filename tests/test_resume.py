"""Checkpoints lose nothing: resuming is exact, a SIGKILL at any instant leaves a loadable checkpoint."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY_DEMO, run_script

from transformer.checkpoint import load_checkpoint


def train(out, steps, *extra):
    result = run_script(
        "train.py",
        "--config",
        "configs/demo.yaml",
        "--out",
        str(out),
        *TINY_DEMO,
        "--set",
        f"training.max_steps={steps}",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_resume_ends_with_the_same_weights_bit_for_bit(tmp_path):
    train(tmp_path / "straight", 10)
    train(tmp_path / "split", 6)
    train(tmp_path / "split", 10, "--resume")
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["step"] == b["step"] == 10
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert torch.equal(a["rng"], b["rng"])


def test_starting_over_an_existing_run_needs_resume(demo_run):
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(demo_run), *TINY_DEMO)
    assert result.returncode == 2 and "pass --resume" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, and what schedulers send
def test_a_stop_signal_saves_last_and_says_how_to_resume(tmp_path, sig):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "scripts/train.py",
            "--config",
            "configs/demo.yaml",
            "--out",
            str(out),
            *TINY_DEMO,
            "--set",
            "training.max_steps=100000",
            "--set",
            "training.eval_every=100000",
        ],
        cwd=ROOT,
        env=env,
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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # eval_every=1: a checkpoint is written after every step, so kills land during saves too
    command = [
        sys.executable,
        "scripts/train.py",
        "--config",
        "configs/demo.yaml",
        "--out",
        str(out),
        *TINY_DEMO,
        "--set",
        "training.max_steps=100000",
        "--set",
        "training.eval_every=1",
    ]
    for attempt, delay in enumerate([0.3, 0.5, 0.7]):
        proc = subprocess.Popen(
            command + (["--resume"] if attempt else []), cwd=ROOT, env=env, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while not (out / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        load_checkpoint(out / "last.pt")  # loadable whatever instant the kill hit
    train(out, load_checkpoint(out / "last.pt")["step"] + 2, "--resume")
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # half-written files were cleared
