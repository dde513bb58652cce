"""Beam search: beam 1 is greedy, scores are the model's log-probabilities, batching and the cache change nothing,
n-best lists are sorted; and the command lines that expose it. On the demo model, which translates."""

import json

import pytest
import sacrebleu
import torch
from helpers import random_ids, run_script, tiny_model
from reference_decoding import old_beam_search
from test_decoding import demo_sources, eos_raised, random_batch
from test_end_to_end import SENTENCES, assert_translates

from transformer.checkpoint import read_checkpoint
from transformer.corpora import read_split
from transformer.decoding import Search, beam_search, greedy_decode, output_limits
from transformer.specials import BOS_ID, EOS_ID, PAD_ID


@torch.no_grad()
def teacher_forced_log_prob(model, src_row, ids, ended_by_eos):
    """The model's log-probability of `ids` (and of the EOS after them) given one source row, in one pass."""
    tgt_in = torch.tensor([[BOS_ID, *ids]], device=src_row.device)
    log_probs = model.decode(tgt_in, model.encode(src_row)).logits[0].float().log_softmax(-1)  # (len + 1, vocab)
    targets = [*ids, EOS_ID] if ended_by_eos else ids
    return sum(float(log_probs[i, t]) for i, t in enumerate(targets))


def test_beam_1_is_greedy_token_for_token(translator):
    src = demo_sources(translator)
    greedy = greedy_decode(translator.model, src)
    assert all(greedy)
    assert [hyps[0].ids for hyps in beam_search(translator.model, src, beam_size=1)] == greedy


@pytest.mark.parametrize("k", [2, 4, 8])
def test_scores_are_the_model_log_probability_and_n_best_is_sorted(translator, k):
    model, src = translator.model, demo_sources(translator)
    limits = output_limits(model, src, Search()).tolist()
    results = beam_search(model, src, beam_size=k, n_best=k)
    for row, hyps in enumerate(results):
        assert 1 <= len(hyps) <= k and all(EOS_ID not in h.ids for h in hyps)
        assert len({tuple(h.ids) for h in hyps}) == len(hyps)  # distinct hypotheses
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        source = src[row : row + 1, : int((src[row] != PAD_ID).sum())]
        for h in hyps:
            assert len(h.ids) <= limits[row]
            recomputed = teacher_forced_log_prob(model, source, h.ids, ended_by_eos=len(h.ids) < limits[row])
            assert h.log_prob == pytest.approx(recomputed, abs=1e-3)
            assert h.score == h.log_prob  # alpha = 0: ranked by log-probability alone


@torch.no_grad()
def textbook_beam_search(model, source, k, limit, n_best):
    """The algorithm as written in a textbook, for one sentence: whole prefixes recomputed, plain Python lists, the
    2k best candidates; EOS among the first k finishes a hypothesis; stop when no beam can beat the n-best finished.
    Returns the n best (ids, log-probability), best first."""
    encoded, beams, finished = model.encode(source), [([], 0.0)], []
    for step in range(limit):
        candidates = []
        for ids, score in beams:
            tgt_in = torch.tensor([[BOS_ID, *ids]], device=source.device)
            log_probs = model.decode(tgt_in, encoded).logits[0, -1].float().log_softmax(-1).tolist()
            candidates += [(score + log_prob, ids, token) for token, log_prob in enumerate(log_probs)]
        top = sorted(candidates, key=lambda c: -c[0])[: 2 * k]
        finished += [(ids, score) for score, ids, token in top[:k] if token == EOS_ID]
        beams = [(ids + [token], score) for score, ids, token in top if token != EOS_ID][:k]
        if step + 1 == limit:
            finished += beams
        elif len(finished) >= n_best and beams[0][1] <= sorted(score for _, score in finished)[-n_best]:
            break
    return sorted(finished, key=lambda f: -f[1])[:n_best]


def assert_equals_textbook(model, src, k):
    limits = output_limits(model, src, Search()).tolist()
    for row, hyps in enumerate(beam_search(model, src, beam_size=k, n_best=k)):
        source = src[row : row + 1, : int((src[row] != PAD_ID).sum())]
        expected = textbook_beam_search(model, source, k, limits[row], n_best=k)
        assert [h.ids for h in hyps] == [ids for ids, _ in expected]
        assert [h.log_prob for h in hyps] == pytest.approx([log_prob for _, log_prob in expected], abs=1e-4)


@pytest.mark.parametrize("k", [2, 5])
def test_beam_search_equals_the_textbook_algorithm(translator, k):
    """Batched, cached, with sentences leaving the batch: the same k-best translations and scores as the textbook."""
    assert_equals_textbook(translator.model, demo_sources(translator), k)


@pytest.mark.parametrize("k", [2, 5])
def test_beam_search_equals_the_textbook_algorithm_where_eos_is_anywhere(k):
    """The same on an untrained model whose EOS logit is raised by 2: there EOS lands anywhere among the 2k best,
    where a trained model rarely puts it just below the k best, so the finishing rules (EOS among the first k only;
    stop once no beam can beat the n-best) decide the result on most sentences."""
    model = tiny_model(seed=k)
    decode = model.decode

    def eos_raised(*args, **kwargs):
        out = decode(*args, **kwargs)
        out.logits[..., EOS_ID] += 2.0
        return out

    model.decode = eos_raised
    src = random_ids(6, 9, seed=k)
    for row, length in enumerate([9, 4, 7, 2, 9, 5]):
        src[row, length:] = PAD_ID  # (6, 9): sentences of different lengths, leaving the batch at different steps
    assert_equals_textbook(model, src, k)


def test_batched_beam_equals_one_sentence_at_a_time_and_the_cache_changes_nothing(translator):
    model, src = translator.model, demo_sources(translator)
    assert (src == PAD_ID).any()
    batched = beam_search(model, src, beam_size=4, alpha=1.0, n_best=3)
    lengths = (src != PAD_ID).sum(1).tolist()
    single = [beam_search(model, src[i : i + 1, : lengths[i]], 4, 1.0, 3)[0] for i in range(len(lengths))]
    uncached = beam_search(model, src, beam_size=4, alpha=1.0, n_best=3, search=Search(use_cache=False))
    for other in (single, uncached):
        assert [[h.ids for h in hyps] for hyps in batched] == [[h.ids for h in hyps] for hyps in other]
        for a, b in zip(batched, other, strict=True):
            assert [h.log_prob for h in a] == pytest.approx([h.log_prob for h in b], abs=1e-4)


def test_a_length_penalty_ranks_by_log_probability_over_gnmt_length(translator):
    src = demo_sources(translator)
    limits = output_limits(translator.model, src, Search()).tolist()
    results = beam_search(translator.model, src, beam_size=4, alpha=0.6, n_best=4)
    for hyps, limit in zip(results, limits, strict=True):
        for h in hyps:
            length = len(h.ids) + (len(h.ids) < limit)  # the EOS counts when one ended the hypothesis
            assert h.score == pytest.approx(h.log_prob / ((5 + length) / 6) ** 0.6)


def test_translate_with_a_beam_and_n_best_from_the_command_line(demo_run, translator):
    beam = translator.with_search(beam_size=4, length_penalty=0.6)
    expected = beam.translate(SENTENCES)
    assert_translates(expected)
    assert [n_best[0][0] for n_best in beam.translate_n_best(SENTENCES, 3)] == expected
    result = run_script("translate.py", "--checkpoint", str(demo_run), "--beam", "4", "--alpha", "0.6", *SENTENCES)
    assert result.returncode == 0 and result.stdout.splitlines() == expected
    stdin = "\n".join([SENTENCES[0], "", SENTENCES[1]]) + "\n"
    args = ("--checkpoint", str(demo_run), "--beam", "4", "--alpha", "0.6", "--n-best", "3")
    lines = run_script("translate.py", *args, stdin=stdin).stdout.splitlines()
    fields = [line.split(" ||| ") for line in lines]
    assert [f[0] for f in fields] == ["0", "0", "0", "1", "2", "2", "2"]  # an empty line: one empty entry
    assert fields[0][1] == expected[0] and fields[4][1] == expected[1] and fields[3][1:] == ["", "0.0000", "0.0000"]
    for start in (0, 4):
        scores = [float(f[3]) for f in fields[start : start + 3]]
        assert scores == sorted(scores, reverse=True) and all(float(f[2]) < 0 for f in fields[start : start + 3])


def test_wrong_beam_settings_are_one_line_errors(demo_run):
    for args, message in [
        (("--beam", "0"), "error: the beam size must be >= 1, got 0"),
        (("--alpha", "-1"), "error: the length penalty alpha must be >= 0, got -1.0"),
        (("--beam", "2", "--n-best", "3"), "error: --n-best 3: must be between 1 and the beam size (--beam 2)"),
        (("--beam", "-3"), "error: the beam size must be >= 1, got -3"),  # was said about --n-best, not given
        (("--beam", "100000"), "error: the beam size must be at most 75 (half the vocabulary), got 100000"),
    ]:
        result = run_script("translate.py", "--checkpoint", str(demo_run), *args, SENTENCES[0])
        assert result.returncode == 2 and result.stderr.strip() == message


def test_evaluate_with_a_beam_scores_the_beam_translations(demo_run, translator, tmp_path):
    args = ("--checkpoint", str(demo_run), "--split", "test", "--beam", "4", "--alpha", "0.6")
    result = run_script("evaluate.py", *args, "--hyp", str(tmp_path / "beam.hyp"), "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["beam"] == 4 and scores["alpha"] == 0.6
    test = read_split(read_checkpoint(demo_run).config.data, "test")
    hypotheses = (tmp_path / "beam.hyp").read_text().splitlines()
    assert hypotheses == translator.with_search(4, 0.6).translate(test.src)
    assert scores["bleu"] == round(sacrebleu.corpus_bleu(hypotheses, [test.tgt]).score, 2) > 0


@pytest.mark.parametrize("seed", range(4))
def test_the_device_beam_equals_the_old_beam_on_random_models(seed):
    """The beam whose finished hypotheses, scores and stop test are tensor work, read every `check_every` steps,
    gives the hypotheses of the Python-list beam it replaced, with its log-probabilities and scores: to the last bit
    when it reads every step, as on a CPU."""
    model = eos_raised(tiny_model(seed=seed, norm="pre" if seed % 2 else "post"), by=1.0 + seed * 0.5)
    src = random_batch(seed)
    settings = [(5, 0.0, 1, 1.5, 10, 0, True), (4, 0.6, 3, 1.0, 4, 0, True), (3, 1.0, 3, 0.5, 6, 2, False),
                (2, 0.0, 2, 0.0, 3, 0, True), (1, 0.6, 1, 1.5, 10, 0, True)]  # fmt: skip
    lengths = set()
    for k, alpha, n_best, a, b, min_len, cache in settings:
        old = old_beam_search(model, src, k, alpha, n_best, a, b, min_len, cache)
        lengths |= {len(h.ids) for hyps in old for h in hyps}
        for check_every in (1, 3, 1000):
            new = beam_search(model, src, k, alpha, n_best, Search(a, b, min_len, cache, check_every))
            where = f"{(k, alpha, n_best, a, b, min_len, cache, check_every)}"
            if check_every == 1:  # the same batch at every step: the same arithmetic
                assert new == old, where
            else:  # finished sentences stay a while: other batch shapes round the last bits differently
                assert [[h.ids for h in hyps] for hyps in new] == [[h.ids for h in hyps] for hyps in old], where
                for x, y in zip(new, old, strict=True):
                    values = [[v for h in hyps for v in (h.log_prob, h.score)] for hyps in (x, y)]
                    assert values[0] == pytest.approx(values[1], abs=1e-4)
    assert len(lengths) > 3  # hypotheses end at many steps, by EOS and by the limit
