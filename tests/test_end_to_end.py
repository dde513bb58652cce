"""The demo config, end to end: train a few steps → checkpoint → translate → evaluate."""

import json
from pathlib import Path

from conftest import run_script

from transformer import Translator


def test_training_writes_a_complete_run_directory(demo_run):
    for name in ("best.pt", "last.pt", "config.yaml", "tokenizer.model", "metrics.jsonl"):
        assert (demo_run / name).is_file(), name
    records = [json.loads(line) for line in (demo_run / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in records} == {"train", "dev"}
    dev = [r for r in records if r["type"] == "dev"]
    assert [r["step"] for r in dev] == [4, 8]
    assert all(set(r) >= {"loss", "perplexity", "bleu", "chrf"} for r in dev)


def test_translate_from_arguments_stdin_and_files(demo_run, tmp_path):
    args = run_script("translate.py", "--checkpoint", str(demo_run), "The black cat sleeps.", "A dog runs.")
    assert args.returncode == 0, args.stderr
    assert len(args.stdout.splitlines()) == 2

    lines = ["The black cat sleeps.", "", "A dog runs.", "   "]
    stdin = run_script("translate.py", "--checkpoint", str(demo_run), stdin="\n".join(lines) + "\n")
    assert stdin.returncode == 0, stdin.stderr
    out = stdin.stdout.split("\n")[:-1]
    assert len(out) == 4 and out[1] == "" and out[3] == ""

    src, hyp = tmp_path / "in.en", tmp_path / "out.fr"
    src.write_text("\n".join(lines) + "\n")
    files = run_script(
        "translate.py", "--checkpoint", str(demo_run / "last.pt"), "--input", str(src), "--output", str(hyp)
    )
    assert files.returncode == 0, files.stderr
    assert hyp.read_text().split("\n")[:-1] == out


def test_attention_heatmap_is_drawn(demo_run, tmp_path):
    png = tmp_path / "attention.png"
    result = run_script(
        "translate.py",
        "--checkpoint",
        str(demo_run),
        "--show-attention",
        str(png),
        "The black cat sleeps near the house.",
    )
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_scores_the_test_split_and_files(demo_run, tmp_path):
    result = run_script("evaluate.py", "--checkpoint", str(demo_run), "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert 0 <= scores["bleu"] <= 100 and scores["sentences"] == 20
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed")
    assert len(Path(scores["hypotheses"]).read_text().splitlines()) == 20

    src, ref = tmp_path / "s.en", tmp_path / "r.fr"
    src.write_text("The cat sleeps.\nThe dog runs.\n")
    ref.write_text("Le chat dort.\nLe chien court.\n")
    files = run_script("evaluate.py", "--checkpoint", str(demo_run), "--src", str(src), "--ref", str(ref))
    assert files.returncode == 0, files.stderr
    assert files.stdout.startswith("BLEU ")
    ref.write_text("Le chat dort.\n")
    mismatch = run_script("evaluate.py", "--checkpoint", str(demo_run), "--src", str(src), "--ref", str(ref))
    assert mismatch.returncode == 2 and "has 2 lines but" in mismatch.stderr


def test_python_api_translates_in_three_lines(demo_run):
    translator = Translator.from_checkpoint(demo_run)
    out = translator.translate(["The black cat sleeps.", "", "A dog runs."])
    assert len(out) == 3 and out[1] == ""
    assert translator.translate(["A dog runs."]) == [out[2]]
