"""Training-loop guarantees: a NaN stops cleanly, early stopping, data-parallel equals one process."""

import os
import subprocess
import sys

import torch
from conftest import ROOT, TINY_DEMO, run_script

from transformer.checkpoint import load_checkpoint
from transformer.trainer import learning_rate


def test_learning_rate_warms_up_then_decays():
    assert learning_rate(1, 1e-3, 100) == 1e-5
    assert learning_rate(100, 1e-3, 100) == 1e-3
    assert abs(learning_rate(400, 1e-3, 100) - 5e-4) < 1e-12
    assert learning_rate(5, 1e-3, 0) == 1e-3


def test_a_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), *TINY_DEMO,
                        "--set", "training.lr=1e30", "--set", "training.warmup_steps=0",
                        "--set", "training.clip_norm=0", "--set", "training.eval_every=1",
                        "--set", "training.max_steps=50")  # fmt: skip
    assert result.returncode == 2, result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "the loss became" in message[0] and "Traceback" not in result.stderr
    failed_step = int(message[0].split("at step ")[1].split(";")[0])
    assert load_checkpoint(out / "last.pt")["step"] == failed_step - 1


def test_early_stopping_after_patience_validations(tmp_path):
    out = tmp_path / "run"
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), *TINY_DEMO,
                        "--set", "training.lr=1e-9", "--set", "training.warmup_steps=0",
                        "--set", "training.eval_every=1", "--set", "training.patience=2",
                        "--set", "training.max_steps=50")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "early stopping" in result.stderr
    assert load_checkpoint(out / "last.pt")["step"] < 50


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    common = [*TINY_DEMO, "--set", "model.dropout=0", "--set", "training.max_steps=3",
              "--set", "training.eval_every=100"]  # fmt: skip
    single = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(tmp_path / "one"), *common,
                        "--set", "training.accumulate=2")  # fmt: skip
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", "29517", "scripts/train.py", "--config", "configs/demo.yaml",
               "--out", str(tmp_path / "two"), *common]  # fmt: skip
    ddp = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["step"] == two["step"] == 3
    for name, tensor in one["model"].items():
        assert torch.allclose(tensor, two["model"][name], atol=1e-5), name
