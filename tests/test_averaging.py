"""Averaged weights: the moving average during training, and the mean of saved checkpoints."""

import pytest
import torch
from helpers import ROOT, overrides, run_script, tiny_model
from test_end_to_end import SENTENCES, assert_translates

from transformer import Translator
from transformer.averaging import ExponentialMovingAverage, average_checkpoints
from transformer.checkpoint import load_checkpoint, save_checkpoint
from transformer.config import apply_overrides, load_config
from transformer.distributed import setup_process
from transformer.errors import CheckpointError
from transformer.prepare import prepare_run
from transformer.trainer import Trainer


def step(model, seed):
    """Move every weight somewhere new, as an optimizer step would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator))


def test_the_moving_average_follows_its_formula_and_decay_0_is_the_weights():
    model = tiny_model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ema, follower = ExponentialMovingAverage(model, 0.75), ExponentialMovingAverage(model, 0.0)
    step(model, 1)
    ema.update()
    follower.update()
    for name, p in model.named_parameters():
        assert torch.allclose(ema.average[name], 0.75 * start[name] + 0.25 * p)
        assert torch.equal(follower.average[name], p)


def test_applied_swaps_the_average_in_and_the_trained_weights_back():
    model = tiny_model()
    ema = ExponentialMovingAverage(model, 0.9)
    step(model, 2)
    ema.update()
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.applied():
        assert all(torch.equal(p, ema.average[n]) for n, p in model.named_parameters())
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters())


def test_averaging_two_copies_of_a_model_gives_that_model(demo_run, tmp_path):
    averaged = average_checkpoints([demo_run / "best.pt", demo_run / "best.pt"])
    best = load_checkpoint(demo_run / "best.pt")
    for name, tensor in best["model"].items():
        assert torch.equal(averaged["model"][name], tensor), name


def test_averaged_checkpoints_load_and_translate(demo_run, tmp_path):
    out = tmp_path / "avg.pt"
    result = run_script("average.py", "--out", str(out), str(demo_run / "best.pt"), str(demo_run / "last.pt"))
    assert result.returncode == 0, result.stderr
    averaged, best = load_checkpoint(out), load_checkpoint(demo_run / "best.pt")
    name = "embedding.weight"
    assert torch.allclose(
        averaged["model"][name], (best["model"][name] + load_checkpoint(demo_run / "last.pt")["model"][name]) / 2
    )
    assert_translates(Translator.from_checkpoint(out).translate(SENTENCES))

    other = load_checkpoint(demo_run / "best.pt")
    other["config"]["model"]["dropout"] = 0.3
    save_checkpoint(other, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="another model shape or tokenizer"):
        average_checkpoints([demo_run / "best.pt", tmp_path / "other.pt"])


def test_average_refuses_weights_that_do_not_fit_and_never_writes_over_a_users_file(demo_run, tmp_path):
    """Before: a checkpoint lacking a tensor was averaged into one lacking it too (exit code 0), one with an extra
    tensor was a KeyError traceback, and --out over any file replaced it."""
    state = load_checkpoint(demo_run / "best.pt")
    del state["model"]["embedding.weight"]
    save_checkpoint(state, tmp_path / "missing.pt")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for out, inputs, message in [
        (tmp_path / "avg.pt", [tmp_path / "missing.pt", demo_run / "best.pt"], "the weights do not fit"),
        (notes, [demo_run / "best.pt"], f"--out {notes}: exists and is not a checkpoint; averaging would overwrite it"),
    ]:
        result = run_script("average.py", "--out", str(out), *map(str, inputs))
        assert result.returncode == 2 and "Traceback" not in result.stderr and message in result.stderr
    assert notes.read_text() == "mine\n" and not (tmp_path / "avg.pt").exists()


def test_training_keeps_the_better_of_trained_and_averaged_weights_and_the_last_n(tmp_path):
    config = apply_overrides(load_config(ROOT / "configs" / "demo.yaml"),
                             overrides(data__demo_train_size=300, training__ema=0.9, training__keep_checkpoints=2,
                                       training__max_steps=12, training__eval_every=4)[1::2])  # fmt: skip
    trainer = Trainer(prepare_run(config, tmp_path / "run", setup_process(config.training)))
    trainer.train()
    run_dir = tmp_path / "run"
    assert sorted(p.name for p in run_dir.glob("step_*.pt")) == ["step_12.pt", "step_8.pt"]
    last = load_checkpoint(run_dir / "last.pt")
    for name, tensor in trainer.run.ema.average.items():
        assert torch.equal(last["ema"][name], tensor)  # saved for an exact resume
    more = apply_overrides(config, ["training.max_steps=16"])  # resuming at the limit reached is refused
    resumed = prepare_run(more, run_dir, setup_process(config.training), resume=True)
    assert all(torch.equal(resumed.ema.average[n], t) for n, t in last["ema"].items())
    records = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"dev"' in line]
    assert len(records) == 3 and all('"ema_bleu"' in r for r in records)
    assert load_checkpoint(run_dir / "best.pt")["best_bleu"] == trainer.progress.best_bleu
