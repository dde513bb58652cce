"""Export to CTranslate2: the exported float32 model translates as ours does, token for token; int8 stays close; the
command lines export and translate through it. Skipped (saying why) without the `deploy` extra."""

import pytest
import sacrebleu
from helpers import run_script, train_demo

from transformer import Translator
from transformer.checkpoint import read_checkpoint
from transformer.data import read_split
from transformer.demo_corpus import demo_corpus

pytest.importorskip("ctranslate2", reason='needs the deploy extra: pip install -e ".[deploy]"')

from transformer.deploy import CTranslate2Translator, export_ctranslate2  # noqa: E402


@pytest.fixture(scope="module")
def test_split(demo_run):
    return read_split(read_checkpoint(demo_run).config.data, "test")


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


def test_int8_stays_within_one_bleu_of_ours(translator, exported):
    """On 400 sentences of the demo grammar: on the 20 of the test split one changed word moves BLEU by 2."""
    pairs = demo_corpus(400, 0, 0, seed=11)["train"]
    sources, references = [en for en, _ in pairs], [fr for _, fr in pairs]
    ours = sacrebleu.corpus_bleu(translator.translate(sources), [references]).score
    int8 = CTranslate2Translator(exported["int8"]).translate(sources)
    assert ours > 5 and abs(sacrebleu.corpus_bleu(int8, [references]).score - ours) <= 1.0


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
