"""No input crashes translation: every line gets exactly one output line, in order, the same batched or alone."""

import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_end_to_end import assert_translates

from transformer.demo_corpus import demo_corpus


def one_at_a_time(translator, lines):
    return [translator.translate([line])[0] for line in lines]


def test_unusual_inputs_translate_line_for_line(translator, caplog):
    lines = ["", "   ", "🐈 😺 🐕", "猫が寝ている。", "Ωμέγα", "\u200b\u200b", "x" * 3000, "The cat " * 400, "\x00\x07"]
    with caplog.at_level(logging.WARNING):
        out = translator.translate(lines)
    assert len(out) == len(lines)
    assert out[0] == "" and out[1] == "" and out[8] == ""
    assert "truncated" in caplog.text  # the two overlong lines
    assert out == one_at_a_time(translator, lines)


def test_unusual_inputs_sample_line_for_line_the_same_each_time(translator):
    lines = ["", "🐈 😺 🐕", "x" * 3000, "The cat " * 400, "\x00\x07", "The black cat sleeps near the house."]
    sampler = translator.with_search(temperature=1.0, top_p=0.9, seed=0)
    out = sampler.translate(lines)
    assert len(out) == len(lines) and out[0] == out[4] == "" and all("\n" not in line for line in out)
    assert out == sampler.translate(lines)


def test_batched_and_unbatched_translation_agree(translator):
    sentences = [en for en, _ in demo_corpus(50, 5, 5, seed=99)["train"][:16]]
    batched = translator.translate(sentences)
    assert_translates(batched)  # otherwise the comparison below proves nothing
    assert batched == one_at_a_time(translator, sentences)
    assert translator.translate(sentences[::-1]) == batched[::-1]  # each output belongs to its input


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=40), min_size=1, max_size=6))
def test_random_unicode_gives_one_line_per_input_the_same_batched_or_alone(translator, lines):
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    out = translator.translate(lines)
    assert len(out) == len(lines)
    assert all("\n" not in line for line in out)
    assert out == one_at_a_time(translator, lines)
