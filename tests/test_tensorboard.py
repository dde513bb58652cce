"""With the tensorboard extra, a run writes TensorBoard's event files beside its checkpoints: every number of
metrics.jsonl at its step, and at each validation the cross-attention of the first dev sentence as images."""

import json
import shutil
import sys

import pytest
from test_training import tiny_config

from transformer.distributed import setup_process
from transformer.prepare import prepare_run
from transformer.trainer import Trainer


def train(run_dir, steps=6, resume=False):
    config = tiny_config(data__demo_train_size=300, training__max_steps=steps, training__log_every=2,
                         training__eval_every=3)  # fmt: skip
    return Trainer(prepare_run(config, run_dir, setup_process(config.training), resume=resume)).train()


def read_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_events_hold_each_scalar_at_its_step_and_the_attention_images(tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    train(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = read_events(run_dir)
    tags = events.Tags()
    expected = {f"train/{key}" for key in ("loss", "lr", "grad_norm", "tgt_tokens_per_s")}
    expected |= {f"dev/{key}" for key in ("loss", "perplexity", "bleu", "chrf")}
    assert expected <= set(tags["scalars"])
    for tag in expected:
        kind, key = tag.split("/")
        written = [r for r in records if r["type"] == kind]
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [r["step"] for r in written], tag
        assert [e.value for e in scalars] == pytest.approx([r[key] for r in written], rel=1e-6), tag  # float32
    assert [r["step"] for r in records if r["type"] == "train"] == [2, 4, 6]
    layers = [tag for tag in tags["images"] if tag.startswith("attention/cross_layer_")]
    assert layers == ["attention/cross_layer_1"]  # the tiny model has one decoder layer
    images = events.Images(layers[0])
    assert [image.step for image in images] == [3, 6] and images[0].width > 0 and images[0].height > 0


def test_without_the_extra_a_run_writes_no_events_and_says_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    train(tmp_path / "run", steps=3)
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert "TensorBoard" not in capsys.readouterr().err


def test_a_resumed_run_hides_what_a_killed_session_logged_after_its_last_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    train(run_dir, steps=4)
    shutil.copy(run_dir / "last.pt", tmp_path / "at_step_4.pt")
    train(run_dir, steps=6, resume=True)  # logs step 6, then "dies" before its checkpoint:
    shutil.copy(tmp_path / "at_step_4.pt", run_dir / "last.pt")
    train(run_dir, steps=6, resume=True)  # step 6 again
    assert [e.step for e in read_events(run_dir).Scalars("train/loss")] == [2, 4, 6]
