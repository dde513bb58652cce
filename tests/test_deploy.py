"""Export to CTranslate2: the exported float32 model translates as ours does, token for token; int8 stays close; the
command lines export and translate through it. Skipped (saying why) without the `deploy` extra."""

import math
import shutil
from copy import deepcopy

import pytest
import sacrebleu
import torch
from helpers import run_script, train_demo
from test_end_to_end import SENTENCES

from transformer import Translator
from transformer.checkpoint import read_checkpoint
from transformer.corpora import read_split
from transformer.decoding import greedy_decode
from transformer.demo_corpus import demo_corpus
from transformer.specials import BOS_ID, pad

pytest.importorskip("ctranslate2", reason='needs the deploy extra: pip install -e ".[deploy]"')

from transformer.deploy import CTranslate2Translator, export_ctranslate2  # noqa: E402


@pytest.fixture(scope="module")
def test_split(demo_run):
    return read_split(read_checkpoint(demo_run).config.data, "test")


@pytest.fixture(scope="module")
def strong_run(tmp_path_factory):
    """The tiny demo trained 4× longer than `demo_run`: it translates the grammar well (BLEU about 85), so most of
    its decisions win by a clear margin, which is what the int8 test needs."""
    out = tmp_path_factory.mktemp("runs") / "strong"
    train_demo(out, training__max_steps=1200, training__eval_every=1200, training__log_every=100)
    return out


@pytest.fixture(scope="module")
def exported(demo_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ct2")
    return {q: export_ctranslate2(demo_run, out / q, q) for q in ("float32", "int8")}


@pytest.mark.parametrize("beam", [1, 4])
def test_the_float32_export_translates_as_ours_token_for_token(translator, exported, test_split, beam):
    ours = translator.with_search(beam_size=beam).translate(test_split.src)
    theirs = CTranslate2Translator(exported["float32"], beam_size=beam).translate(test_split.src)
    assert any(ours) and len(set(ours)) > len(ours) // 2  # a model that translates
    assert theirs == ours


def fake_int8(model, activation_bits: int = 7):
    """A copy of `model` computing as an int8 engine does, in float: weights rounded to 8 bits per output row,
    the input of every linear layer to `activation_bits` per row at run time. 7 bits stand for the coarser of
    CTranslate2's int8 paths: without VNNI (AVX2 only) a u8×s8 pair sum saturates at int16, and oneDNN's guidance
    is to quantize activations to 7 bits there."""

    def rounded(x, bits):  # symmetric, one scale per row
        top = 2 ** (bits - 1) - 1
        scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / top
        return (x / scale).round().clamp(-top, top) * scale

    copy = deepcopy(model)
    with torch.no_grad():
        for module in copy.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(rounded(module.weight, 8))
                module.register_forward_pre_hook(lambda _, args: (rounded(args[0], activation_bits), *args[1:]))
        copy.embedding.weight.copy_(rounded(copy.embedding.weight, 8))  # also the output projection (tied)
    return copy


@torch.no_grad()
def decision_margins(model, src, hyps, chosen=None):
    """(batch, steps, vocab): at each step of each greedy path (its EOS included), the logit of the chosen piece
    minus that of every piece, teacher-forced on the path, so two models are compared on the same prefixes."""
    tgt_in = pad([[BOS_ID, *h] for h in hyps])  # (batch, steps)
    logits = model.decode(tgt_in, model.encode(src)).logits.float()  # (batch, steps, vocab)
    chosen = logits.argmax(-1, keepdim=True) if chosen is None else chosen  # (batch, steps, 1)
    return logits.gather(-1, chosen) - logits, chosen


def test_int8_changes_a_translation_only_where_ours_was_a_near_tie(strong_run):
    """A tolerance from the quantization, not from one machine: the largest change int8 rounding makes to any
    decision's margin on our own paths (simulated, `fake_int8`) bounds what the int8 export may change. Where every
    decision of a sentence wins by more than 2× that, int8 must translate it exactly as we do; elsewhere it may flip
    a near-tie. On a model that translates well most sentences have no near-tie, so the rule decides a lot."""
    translator = Translator.from_checkpoint(strong_run, precision="fp32")
    pairs = demo_corpus(400, 0, 0, seed=11)["train"]
    sources, references = [en for en, _ in pairs], [fr for _, fr in pairs]
    src = pad(translator.encode_sources(sources))  # (400, src_len)
    hyps = greedy_decode(translator.model, src)
    ours = translator.tokenizer.decode(hyps)
    assert sacrebleu.corpus_bleu(ours, [references]).score > 70  # a model that translates well
    margins, chosen = decision_margins(translator.model, src, hyps)
    rounded, _ = decision_margins(fake_int8(translator.model), src, hyps, chosen)
    on_path = torch.tensor([[t <= len(h) for t in range(margins.size(1))] for h in hyps])  # (400, steps)
    tolerance = 2 * float((margins - rounded).abs()[on_path].max())
    runner_up = margins.scatter(-1, chosen, math.inf).amin(-1)  # (400, steps): the win over the second best
    clear = runner_up.masked_fill(~on_path, math.inf).amin(-1) > tolerance  # (400,) no near-tie on the path
    int8 = CTranslate2Translator(export_ctranslate2(strong_run, strong_run / "int8", "int8")).translate(sources)
    assert int(clear.sum()) >= 100, f"only {int(clear.sum())} sentences without a near-tie: the test proves little"
    changed = [(sources[i], ours[i], int8[i]) for i in range(len(sources)) if clear[i] and int8[i] != ours[i]]
    assert not changed, f"tolerance {tolerance:.3f}: {changed[:3]}"


def test_export_and_translate_from_the_command_line(demo_run, translator, tmp_path):
    out = tmp_path / "ct2"
    result = run_script("export.py", "--checkpoint", str(demo_run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    sentences = ["The black cat sleeps near the house.", "", "Two small dogs go to the garden."]
    args = ("--engine", "ctranslate2", "--checkpoint", str(out))
    translated = run_script("translate.py", *args, stdin="\n".join(sentences) + "\n")
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout.split("\n")[:-1] == translator.translate(sentences)
    wrong = run_script("translate.py", "--engine", "ctranslate2", "--checkpoint", str(demo_run), "x")
    assert wrong.returncode == 2 and "not an exported CTranslate2 model" in wrong.stderr


def test_a_post_norm_model_exports_exactly_too(tmp_path):
    """The shipped configs are pre-norm; post-norm maps to CTranslate2's pre_norm=False, without final norms."""
    out = tmp_path / "post"
    assert train_demo(out, model__norm="post", training__max_steps=150, training__eval_every=150).returncode == 0
    sources = [en for en, _ in demo_corpus(100, 0, 0, seed=5)["train"]]
    ours = Translator.from_checkpoint(out, precision="fp32").translate(sources)
    assert any(ours)
    assert CTranslate2Translator(export_ctranslate2(out, out / "ct2", "float32")).translate(sources) == ours


def test_a_damaged_export_is_one_line(exported, tmp_path):
    """Before: a truncated model.bin was a RuntimeError traceback, a broken decoding.json a JSONDecodeError one."""
    for name, damage in [("model.bin", lambda data: data[: len(data) // 2]), ("decoding.json", lambda data: b"{")]:
        copy = tmp_path / name
        shutil.copytree(exported["float32"], copy)
        (copy / name).write_bytes(damage((copy / name).read_bytes()))
        result = run_script("translate.py", "--engine", "ctranslate2", "--checkpoint", str(copy), SENTENCES[0])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {copy}: a damaged export (") and line.endswith("); export it again")
