"""A new run from a trained model (`train --init-from`): its weights, EMA average, shape and tokenizer; the rest from
the given config; a fresh optimizer at step 0; a resume of that run as exact as any other."""

import logging

import numpy as np
import pytest
import torch
from helpers import overrides, run_script
from test_training import first_batch, tiny_config, train_stopping_at

from transformer.checkpoint import load_checkpoint, read_checkpoint
from transformer.corpora import read_pairs
from transformer.data import collate
from transformer.distributed import setup_process
from transformer.prepare import prepare_run
from transformer.trainer import Trainer

SOURCE = {"data__demo_train_size": 300, "model__dropout": 0.0, "training__eval_every": 3, "training__ema": 0.9}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny demo run of 6 steps with an EMA average: the trained model the tests start from."""
    config = tiny_config(training__max_steps=6, **SOURCE)
    run_dir = tmp_path_factory.mktemp("source") / "run"
    Trainer(prepare_run(config, run_dir, setup_process(config.training))).train()
    return run_dir


def tuned(source, run_dir, **changes):
    """A run from the source's model on other data (400 demo pairs: a tokenizer of its own would differ)."""
    config = tiny_config(data__demo_train_size=400, training__ema=0.5, **changes)
    return Trainer(prepare_run(config, run_dir, setup_process(config.training), init_from=source))


def test_the_first_step_of_a_run_from_a_trained_model_has_that_models_loss(source, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        trainer = tuned(source / "last.pt", tmp_path / "tuned", model__d_model=128, model__dropout=0.0)
    assert "model.d_model (64 there, 128 in the config)" in caplog.text  # the model's shape, said once
    checkpoint = read_checkpoint(source / "last.pt")
    run = trainer.run
    assert run.config.model.d_model == 64 and run.config.training.ema == 0.5  # shape theirs, training ours
    assert run.tokenizer.model_bytes == checkpoint.tokenizer.model_bytes
    assert trainer.progress.step == 0 and not trainer.optimizer.state  # a fresh optimizer at step 0
    for name, tensor in checkpoint.state["ema"].items():  # the source's average, not its weights
        assert torch.equal(run.ema.average[name], tensor), name
    batch = first_batch(trainer)
    model = checkpoint.build_model().train()
    data = collate(run.train_data, batch[0])
    with torch.no_grad():
        expected = model(data.src, data.tgt_in, data.tgt_out, run.config.training.label_smoothing) / data.tgt_tokens
    assert float(trainer.train_step(batch)[0]) == pytest.approx(float(expected), rel=1e-6)
    assert trainer.progress.step == 1


def test_a_set_that_contradicts_the_models_shape_is_one_line(source, tmp_path):
    out = tmp_path / "tuned"
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), "--init-from", str(source),
                        *overrides(training__max_steps=1), "--set", "model.d_model=128")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --set model.d_model: --init-from {source / 'best.pt'}: model.d_model is 64 there, 128 here; "
        "a run from a trained model keeps its shape and tokenizer"
    )
    assert not out.exists()


def test_resume_and_init_from_together_are_one_line(source, tmp_path):
    out = tmp_path / "tuned"
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), "--init-from", str(source),
                        "--resume", *overrides(training__max_steps=1))  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --init-from starts a new run and --resume continues the one in --out: pass only one"
    )
    assert not out.exists()


def train_tuned(source, run_dir, stop_at=None, resume=False):
    """10 steps from the source's model, in this process; with `stop_at`, stopped as by Ctrl-C there."""
    config = tiny_config(data__demo_train_size=400, training__max_steps=10, training__eval_every=4,
                         training__ema=0.5, model__dropout=0.1)  # fmt: skip
    process = setup_process(config.training)
    trainer = Trainer(prepare_run(config, run_dir, process, resume=resume, init_from=None if resume else source))
    return train_stopping_at(trainer, stop_at)


def test_a_run_from_a_trained_model_resumes_exactly_and_keeps_where_it_started(source, tmp_path):
    train_tuned(source, tmp_path / "straight")
    assert train_tuned(source, tmp_path / "split", stop_at=6)["step"] == 6
    assert train_tuned(source, tmp_path / "split", resume=True)["step"] == 10
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name
    assert torch.equal(a["rng"], b["rng"])
    began = {"path": str(source / "best.pt"), "step": load_checkpoint(source / "best.pt")["step"]}
    assert a["init_from"] == b["init_from"]  # recorded, and kept through the resume
    assert {key: a["init_from"][key] for key in began} == began and a["init_from"]["data"]["demo_train_size"] == 300
    header = (tmp_path / "split" / "config.yaml").read_text().splitlines()[0]
    assert header == f"# started from {source / 'best.pt'} (its step {began['step']})"


def test_init_mix_draws_its_share_from_the_models_own_corpus_and_a_resume_draws_the_same(source, tmp_path):
    """data.init_mix 0.2: a quarter as many pairs as the new data's, drawn from the source's own training corpus."""

    def prepared(run_dir, mix, resume=False, steps=2):
        config = tiny_config(
            data__demo_train_size=400, data__demo_seed=99, data__init_mix=mix, training__max_steps=steps
        )
        init_from = None if resume else source
        return prepare_run(config, run_dir, setup_process(config.training), resume=resume, init_from=init_from)

    new = prepared(tmp_path / "plain", 0.0).train_data
    mixed_run = prepared(tmp_path / "mixed", 0.2)
    mixed = mixed_run.train_data
    assert len(mixed) == len(new) + round(0.25 * len(new))
    assert np.array_equal(mixed.src_lens[: len(new)], new.src_lens)  # the new data first, whole
    own = {pair[0] for pair in read_pairs(read_checkpoint(source / "best.pt").config.data, "train")}
    drawn = mixed_run.tokenizer.decode([ids[:-1] for ids in mixed.rows(np.arange(len(new), len(mixed)))[0]])
    assert set(drawn) <= own  # every added pair is one the source model was trained on
    Trainer(mixed_run).train()
    resumed = prepared(tmp_path / "mixed", 0.2, resume=True, steps=3).train_data
    assert np.array_equal(resumed.src_lens, mixed.src_lens) and np.array_equal(resumed.tgt_lens, mixed.tgt_lens)
