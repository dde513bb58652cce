"""No input crashes translation: every line gets exactly one output line, in order."""

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer import Translator
from transformer.config import TokenizerConfig
from transformer.demo_corpus import demo_corpus
from transformer.tokenizer import Tokenizer

# A small tokenizer trained on the demo corpus (whose alphabet covers the round-trip test's).
TOKENIZER = Tokenizer.train(
    [s for pair in demo_corpus(500, 5, 5, seed=3)["train"] for s in pair], TokenizerConfig(vocab_size=200)
)


@pytest.fixture(scope="module")
def translator(demo_run):
    return Translator.from_checkpoint(demo_run)


def test_unusual_inputs_translate_line_for_line(translator, caplog):
    lines = ["", "   ", "🐈 😺 🐕", "猫が寝ている。", "Ωμέγα", "\u200b\u200b", "x" * 3000, "The cat " * 400, "\x00\x07"]
    with caplog.at_level(logging.WARNING):
        out = translator.translate(lines)
    assert len(out) == len(lines)
    assert out[0] == "" and out[1] == "" and out[8] == ""
    assert "truncated" in caplog.text  # the two overlong lines


def test_batched_and_unbatched_translation_agree(translator):
    sentences = [en for en, _ in demo_corpus(50, 5, 5, seed=99)["train"][:12]]
    batched = translator.translate(sentences)
    assert batched == [translator.translate([s])[0] for s in sentences]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=40), min_size=1, max_size=6))
def test_random_unicode_always_gives_one_line_per_input(translator, lines):
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    out = translator.translate(lines)
    assert len(out) == len(lines)
    assert all("\n" not in line for line in out)


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_tokenizer_never_fails_and_stays_in_vocabulary(text):
    ids = TOKENIZER.encode([text])[0]
    assert all(0 <= i < TOKENIZER.vocab_size for i in ids)
    assert isinstance(TOKENIZER.decode([ids])[0], str)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="abcdefghilmnoprstuv .", max_size=60))
def test_tokenizer_round_trips_text_of_its_own_alphabet(text):
    assert TOKENIZER.decode(TOKENIZER.encode([text]))[0] == " ".join(text.split())
