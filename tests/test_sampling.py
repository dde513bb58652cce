"""Sampling: the filters keep what they say, the draws follow the filtered, tempered distribution, the seed repeats
them, and the limits of sampling (top-k 1, a temperature near 0, a tiny nucleus) are greedy search exactly; the
Python API, the command line and the config refuse bad settings in one line."""

import math

import pytest
import torch
from helpers import ROOT, random_ids, run_script, tiny_model
from test_decoding import demo_sources, eos_raised, random_batch
from test_end_to_end import SENTENCES

from transformer.config import ConfigError, load_config
from transformer.decoding import Sampling, Search, greedy_decode, keep_likely, next_pieces
from transformer.demo_corpus import demo_corpus
from transformer.errors import ToolkitError
from transformer.translator import batch_seed

PROBS = [0.1, 0.5, 0.15, 0.25]  # by rank: piece 1 (0.5), 3 (0.25), 2 (0.15), 0 (0.1)


def kept(top_k=0, top_p=1.0, probs=PROBS):
    logits = torch.tensor(probs).log()[None]  # (1, 4)
    filtered = keep_likely(logits, top_k, top_p)
    assert torch.equal(filtered[filtered.isfinite()], logits[filtered.isfinite()])  # kept logits are unchanged
    return set(filtered[0].isfinite().nonzero().squeeze(1).tolist())


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [(1e-9, {1}), (0.5, {1}), (0.51, {1, 3}), (0.7, {1, 3}), (0.76, {1, 3, 2}), (0.89, {1, 3, 2}), (0.95, {0, 1, 2, 3}),
     (1.0, {0, 1, 2, 3})],
)  # fmt: skip
def test_the_nucleus_is_the_smallest_set_of_most_probable_pieces_reaching_p(top_p, expected):
    assert kept(top_p=top_p) == expected


def test_top_k_keeps_the_k_most_probable_and_the_nucleus_is_taken_among_them():
    assert [kept(top_k=k) for k in (1, 2, 3, 4, 5, 0)] == [{1}, {1, 3}, {1, 3, 2}, *[{0, 1, 2, 3}] * 3]
    assert kept(top_p=0.6) == {1, 3} and kept(top_k=2, top_p=0.6) == {1}  # 0.5 / 0.75 of the top 2 reaches 0.6
    rows = keep_likely(torch.tensor([PROBS, PROBS[::-1]]).log(), top_k=2)  # (2, 4): each row its own ranking
    assert rows.isfinite().tolist() == [[False, True, False, True], [True, False, True, False]]


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 3, 1.0), (1.0, 0, 0.8)]
)
def test_draws_follow_the_filtered_tempered_distribution(temperature, top_k, top_p):
    n, logits = 40_000, torch.tensor(PROBS).log()
    draw = next_pieces(Sampling(temperature, top_k, top_p, seed=5), n, torch.device("cpu"))
    counts = torch.bincount(draw(logits.expand(n, -1).clone(), torch.arange(n)), minlength=4)
    expected = keep_likely((logits / temperature)[None], top_k, top_p)[0].softmax(-1)
    assert (counts / n - expected).abs().max() < 0.015, (counts / n, expected)  # 4 standard deviations at most


def test_top_k_1_a_temperature_near_0_and_a_tiny_nucleus_are_greedy_search_token_for_token(translator):
    model, src = translator.model, demo_sources(translator)
    greedy = greedy_decode(model, src)
    assert all(greedy)
    for seed in range(3):
        limits = (Sampling(top_k=1), Sampling(temperature=1e-4), Sampling(top_p=1e-6), Sampling(3.0, 1))
        tiny = (Sampling(temperature=1e-45), Sampling(temperature=1e-300, top_p=0.5), Sampling(temperature=5e-324))
        for sampling in limits + tiny:  # tiny: logits / temperature overflowed float32, and the output was empty
            sampling = Sampling(sampling.temperature, sampling.top_k, sampling.top_p, seed)
            assert greedy_decode(model, src, Search(), sampling) == greedy, sampling
    assert greedy_decode(model, src, Search(), Sampling(temperature=1.5)) != greedy  # sampling does sample


def untrained_sources():
    model = eos_raised(tiny_model(seed=3), by=1.5)  # a flat distribution; sentences end at different steps
    return model, random_batch(3)


def test_the_same_seed_draws_the_same_and_other_seeds_draw_otherwise():
    model, src = untrained_sources()
    runs = {seed: greedy_decode(model, src, Search(), Sampling(seed=seed)) for seed in range(4)}
    assert all(greedy_decode(model, src, Search(), Sampling(seed=seed)) == runs[seed] for seed in range(4))
    assert len({str(run) for run in runs.values()}) == 4
    assert len({len(ids) for ids in runs[0]}) > 1  # sentences end at different steps: the next test means something
    assert runs[0] != greedy_decode(model, src)


def test_a_sentences_draws_do_not_depend_on_when_the_others_end():
    """Noise is drawn for every row at every step: removing finished sentences at once (a CPU), every few steps (a
    GPU) or never, or recomputing prefixes instead of caching them, draws the same pieces."""
    model, src = untrained_sources()
    sampling = Sampling(temperature=0.9, top_k=20, top_p=0.95, seed=11)
    expected = greedy_decode(model, src, Search(check_every=1), sampling)
    for search in (Search(check_every=3), Search(check_every=1000), Search(use_cache=False)):
        assert greedy_decode(model, src, search, sampling) == expected, search


def test_the_translator_samples_reproducibly_one_line_per_input(translator):
    sentences = ["", *[en for en, _ in demo_corpus(50, 5, 5, seed=3)["train"][:20]], "   "]
    sampler = translator.with_search(temperature=1.5, top_p=0.95, seed=1)
    first = sampler.translate(sentences)
    assert first == sampler.translate(sentences) and len(first) == len(sentences)
    assert first[0] == first[-1] == ""
    assert translator.with_search(temperature=1.5, top_p=0.95, seed=2).translate(sentences) != first
    assert translator.with_search(temperature=2.0, top_k=1, seed=1).translate(sentences) == translator.translate(
        sentences
    )


def test_each_batch_samples_from_its_own_seed(translator):
    batch = random_ids(3, 5).tolist()
    seeds = {batch_seed(seed, rows) for seed in range(3) for rows in (batch, batch[:2], batch[::-1])}
    assert len(seeds) == 9 and batch_seed(0, batch) == batch_seed(0, [list(row) for row in batch])
    assert all(0 <= seed < 2**64 for seed in seeds)  # what torch.Generator.manual_seed takes
    sampler = translator.with_search(temperature=1.5, seed=7)
    for sentence in SENTENCES:  # each alone in its batch
        (ids,) = sampler.encode_sources([sentence])
        sampling = Sampling(temperature=1.5, seed=batch_seed(7, [ids]))
        drawn = greedy_decode(translator.model, torch.tensor([ids]), Search.of(sampler.decoding), sampling)
        assert sampler.translate([sentence]) == translator.tokenizer.decode(drawn)


def test_wrong_sampling_settings_are_one_line_errors_in_python(translator):
    for settings, message in [
        ({"temperature": -1.0}, "the temperature must be >= 0 (0: no sampling), got -1.0"),
        ({"temperature": math.nan}, "the temperature must be >= 0 (0: no sampling), got nan"),
        ({"temperature": 1.0, "top_k": -1}, "top-k must be >= 0 (0: every piece), got -1"),
        ({"temperature": 1.0, "top_p": 0.0}, "top-p must be in (0, 1], got 0.0"),
        ({"temperature": 1.0, "top_p": 1.5}, "top-p must be in (0, 1], got 1.5"),
        ({"temperature": 1.0, "seed": -2}, "the seed must be >= 0, got -2"),
        ({"temperature": 1.0, "beam_size": 2}, "sampling takes beam size 1 (one draw a sentence), not 2"),
        ({"top_k": 5}, "top-k, top-p and the seed shape sampling: give a temperature > 0 as well"),
        ({"seed": 5}, "top-k, top-p and the seed shape sampling: give a temperature > 0 as well"),
    ]:
        with pytest.raises(ToolkitError) as error:
            translator.with_search(**settings)
        assert str(error.value) == message
    with pytest.raises(ToolkitError, match="no n-best list"):
        translator.with_search(temperature=1.0).translate_n_best(SENTENCES, 1)


def test_sampling_from_the_command_line_is_the_python_apis(demo_run, translator):
    args = ("--temperature", "1.5", "--top-k", "5", "--seed", "3")
    result = run_script("translate.py", "--checkpoint", str(demo_run), *args, *SENTENCES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == translator.with_search(temperature=1.5, top_k=5, seed=3).translate(SENTENCES)
    for args, message in [
        (("--temperature", "-1"), "error: the temperature must be >= 0 (0: no sampling), got -1.0"),
        (("--top-p", "0"), "error: top-p must be in (0, 1], got 0.0"),
        (("--temperature", "1", "--beam", "2"), "error: sampling takes beam size 1 (one draw a sentence), not 2"),
        (("--top-k", "3"), "error: top-k, top-p and the seed shape sampling: give a temperature > 0 as well"),
        (("--temperature", "1", "--n-best", "1"), "error: --n-best: sampling draws one translation a sentence, "
                                                  "without a score"),
    ]:  # fmt: skip
        result = run_script("translate.py", "--checkpoint", str(demo_run), *args, SENTENCES[0])
        assert (result.returncode, result.stderr.strip()) == (2, message)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("decoding.temperature=-0.5", "decoding.temperature: must be >= 0 (0 = no sampling), got -0.5"),
        ("decoding.top_k=-1", "decoding.top_k: must be >= 0, got -1"),
        ("decoding.top_p=0", "decoding.top_p: must be in (0, 1], got 0.0"),
        ("decoding.top_p=1.01", "decoding.top_p: must be in (0, 1], got 1.01"),
        ("decoding.seed=-1", "decoding.seed: must be >= 0, got -1"),
    ],
)
def test_config_errors_name_the_sampling_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(ROOT / "configs" / "demo.yaml", [override])
    assert str(error.value).endswith(message) and "\n" not in str(error.value)


def test_the_config_refuses_sampling_with_a_beam_and_accepts_it_alone():
    with pytest.raises(ConfigError, match="decoding.beam_size: must be 1 when sampling"):
        load_config(ROOT / "configs" / "demo.yaml", ["decoding.temperature=0.7", "decoding.beam_size=4"])
    config = load_config(ROOT / "configs" / "demo.yaml", ["decoding.temperature=0.7", "decoding.top_k=10"])
    assert Sampling.of(config.decoding) == Sampling(0.7, 10, 1.0, 0)
    assert Sampling.of(load_config(ROOT / "configs" / "demo.yaml").decoding) is None
