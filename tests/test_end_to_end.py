"""The demo config, end to end: train → checkpoint → translate (arguments, stdin, files, Python) → evaluate."""

import json
import subprocess
import sys
from pathlib import Path

import sacrebleu
import torch
from helpers import run_script

from transformer.checkpoint import read_checkpoint
from transformer.corpora import read_split

SENTENCES = ["The black cat sleeps near the house.", "Two small dogs go to the garden.", "The horses walk."]


def assert_translates(outputs: list[str]) -> None:
    """The model really translates: no empty output, and different sentences get different translations."""
    assert all(outputs), outputs
    assert len(set(outputs)) == len(outputs), outputs


def test_training_writes_a_complete_run_directory(demo_run):
    for name in ("best.pt", "last.pt", "config.yaml", "tokenizer.model", "metrics.jsonl"):
        assert (demo_run / name).is_file(), name
    records = [json.loads(line) for line in (demo_run / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in records} == {"train", "dev"}
    dev = [r for r in records if r["type"] == "dev"]
    assert [r["step"] for r in dev] == [150, 300]
    assert all(set(r) >= {"loss", "perplexity", "bleu", "chrf"} for r in dev)
    assert dev[1]["loss"] < dev[0]["loss"]


def test_translate_from_arguments_stdin_and_files_agrees_with_the_python_api(demo_run, translator, tmp_path):
    expected = translator.translate(SENTENCES)
    assert_translates(expected)

    args = run_script("translate.py", "--checkpoint", str(demo_run), *SENTENCES)
    assert args.returncode == 0, args.stderr
    assert args.stdout.splitlines() == expected

    lines = [SENTENCES[0], "", SENTENCES[1], "   ", SENTENCES[2]]
    stdin = run_script("translate.py", "--checkpoint", str(demo_run), stdin="\n".join(lines) + "\n")
    assert stdin.returncode == 0, stdin.stderr
    assert stdin.stdout.split("\n")[:-1] == [expected[0], "", expected[1], "", expected[2]]

    src, hyp = tmp_path / "in.en", tmp_path / "out.fr"
    src.write_text("\n".join(lines) + "\n")
    files = run_script(
        "translate.py", "--checkpoint", str(demo_run / "best.pt"), "--input", str(src), "--output", str(hyp)
    )
    assert files.returncode == 0, files.stderr
    assert hyp.read_text().split("\n")[:-1] == stdin.stdout.split("\n")[:-1]


def test_attention_heatmap_is_drawn(demo_run, tmp_path):
    png = tmp_path / "attention.png"
    result = run_script("translate.py", "--checkpoint", str(demo_run), "--show-attention", str(png), SENTENCES[0])
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_heatmap_name_that_cannot_be_drawn_fails_before_translating(demo_run, tmp_path):
    """Before: the whole input was translated, then the drawing died in a traceback (or wrote NAME.png for NAME)."""
    for name, problem in [("attention.txt", "cannot draw a .txt file"), ("missing/a.png", "folder not found")]:
        result = run_script("translate.py", "--checkpoint", str(demo_run), "--show-attention", str(tmp_path / name),
                            SENTENCES[0])  # fmt: skip
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.strip().splitlines() == [f"error: --show-attention {tmp_path / name}: {problem}" + (
            "; name it .png, .svg or .pdf" if name.endswith(".txt") else f": {tmp_path / 'missing'}")]  # fmt: skip
    plain = tmp_path / "attention"  # no suffix: a PNG under the name asked for
    result = run_script("translate.py", "--checkpoint", str(demo_run), "--show-attention", str(plain), SENTENCES[0])
    assert result.returncode == 0, result.stderr
    assert plain.read_bytes()[:4] == b"\x89PNG" and list(tmp_path.iterdir()) == [plain]  # no temporary file left


def test_attention_of_every_kind_reads_like_the_math(translator, demo_run, tmp_path):
    hypothesis = translator.translate([SENTENCES[0]])[0]
    for kind in ("cross", "encoder", "decoder"):
        attention = translator.attention(SENTENCES[0], kind)
        layers, heads, queries, keys = attention.weights.shape
        assert (queries, keys) == (len(attention.query_pieces), len(attention.key_pieces))
        assert torch.allclose(attention.weights.sum(-1), torch.ones(layers, heads, queries), atol=1e-5)
    assert "".join(attention.query_pieces[:-1]).replace("▁", " ").strip() == hypothesis
    causal = torch.ones(queries, keys).tril().bool()  # decoder: piece i was produced reading <s> and pieces < i
    assert torch.all(attention.weights[..., ~causal] == 0) and torch.all(attention.weights[..., causal] > 0)
    png = tmp_path / "decoder.png"
    result = run_script("translate.py", "--checkpoint", str(demo_run), "--show-attention", str(png), "--kind",
                        "decoder", "--layer", "0", SENTENCES[0])  # fmt: skip
    assert result.returncode == 0 and png.read_bytes()[:4] == b"\x89PNG", result.stderr


def test_translating_imports_nothing_of_training():
    code = (
        "import sys, torch; before = set(sys.modules); from transformer import Translator; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "transformer.translator" in loaded
    for module in ("datasets", "tqdm", "matplotlib", "transformer.trainer", "transformer.prepare", "transformer.data"):
        assert module not in loaded, module  # tqdm: torch itself imports it (torch.hub), so only a new import counts


def test_evaluate_scores_what_it_translated(demo_run, translator, tmp_path):
    result = run_script("evaluate.py", "--checkpoint", str(demo_run), "--split", "test", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["sentences"] == 20 and scores["bleu_signature"].startswith("nrefs:1|case:mixed")
    hypotheses = Path(scores["hypotheses"]).read_text().splitlines()
    test = read_split(read_checkpoint(demo_run).config.data, "test")
    assert hypotheses == translator.translate(test.src)
    assert scores["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [test.tgt]).score, 2) > 0

    # References equal to the model's own translations score 100; one line fewer is an error naming both files.
    src, ref = tmp_path / "s.en", tmp_path / "r.fr"
    src.write_text("\n".join(SENTENCES) + "\n")
    ref.write_text("\n".join(translator.translate(SENTENCES)) + "\n")
    files = run_script("evaluate.py", "--checkpoint", str(demo_run), "--src", str(src), "--ref", str(ref), "--json")
    assert files.returncode == 0, files.stderr
    assert json.loads(files.stdout)["bleu"] == 100.0
    ref.write_text("Le chat dort.\n")
    mismatch = run_script("evaluate.py", "--checkpoint", str(demo_run), "--src", str(src), "--ref", str(ref))
    assert mismatch.returncode == 2 and "has 3 lines but" in mismatch.stderr


def test_python_api_translates_in_three_lines(demo_run):
    from transformer import Translator

    translator = Translator.from_checkpoint(demo_run)
    out = translator.translate([SENTENCES[0], "", SENTENCES[1]])
    assert len(out) == 3 and out[1] == ""
    assert_translates([out[0], out[2]])
    assert translator.translate([SENTENCES[1]]) == [out[2]]
