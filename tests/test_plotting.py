"""Pictures of a run: curves.png redrawn at each validation, plot.py overlaying runs, never a reason to stop."""

import json

import pytest
from helpers import run_script
from test_training import trainer  # noqa: F401  (fixture)

from transformer import run_files as run_files_module

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


def test_each_validation_redraws_the_curves(trainer):  # noqa: F811
    curves = trainer.run_dir / "curves.png"
    trainer.validate()
    first = curves.read_bytes()
    trainer.train_step([[0, 1]])
    trainer.validate()
    assert first.startswith(PNG) and curves.read_bytes() != first  # a second dev point: a new picture


def test_a_failing_drawing_is_said_once_and_training_goes_on(trainer, monkeypatch, capsys):  # noqa: F811
    def broken(*args):  # matplotlib is there but fails (without it, curves are not drawn and nothing is said)
        raise ValueError("Image size of 90000x720 pixels is too large")

    monkeypatch.setattr(run_files_module, "save_curves", broken)
    trainer.validate()
    trainer.validate()
    assert capsys.readouterr().err.count("curves.png not drawn: Image size of 90000x720 pixels is too large") == 1
    assert (trainer.run_dir / "last.pt").is_file() and not (trainer.run_dir / "curves.png").exists()


def write_run(path, bleu):
    path.mkdir()
    records = [{"type": "train", "step": s, "loss": 5 - s / 100, "lr": 1e-3, "minutes": s / 50} for s in (50, 100)]
    records.append({"type": "dev", "step": 100, "loss": 3.0, "bleu": bleu, "ema_bleu": bleu + 1, "minutes": 2.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_plot_skips_a_torn_last_line_and_names_a_run_with_no_records(tmp_path):
    """A run killed while appending a record leaves half a line: before, plot died in a JSONDecodeError traceback."""
    write_run(tmp_path / "a", 20.0)
    with open(tmp_path / "a" / "metrics.jsonl", "a") as file:
        file.write('{"type": "train", "step": 150, "lo')
    result = run_script("plot.py", str(tmp_path / "a"), "--out", str(tmp_path / "a.png"))
    assert result.returncode == 0 and (tmp_path / "a.png").read_bytes().startswith(PNG), result.stderr
    assert "metrics.jsonl: line 4 not a training record; skipped" in result.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    result = run_script("plot.py", str(tmp_path / "empty"), "--out", str(tmp_path / "e.png"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'empty'}: its metrics.jsonl holds no training record yet"
    ]


def test_plot_overlays_runs_and_names_a_directory_without_metrics(tmp_path):
    write_run(tmp_path / "a", 20.0)
    write_run(tmp_path / "b", 30.0)
    result = run_script("plot.py", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both.png"))
    assert result.returncode == 0 and (tmp_path / "both.png").read_bytes().startswith(PNG)
    result = run_script("plot.py", str(tmp_path), "--out", str(tmp_path / "none.png"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'metrics.jsonl'}: no such file (is {tmp_path} a run directory?)"
    ]
