"""Greedy search: the cache changes nothing, batching changes nothing, limits hold. On a model that translates."""

import pytest
import torch
from helpers import random_ids, tiny_model
from reference_decoding import old_greedy_decode

from transformer.decoding import Search, greedy_decode
from transformer.demo_corpus import demo_corpus
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, pad


def demo_sources(translator, n=12):
    sentences = [en for en, _ in demo_corpus(50, 5, 5, seed=7)["train"][:n]]
    return pad(translator.encode_sources(sentences)).to(translator.device)  # (n, src_len): lengths differ


def test_batched_decoding_equals_one_sentence_at_a_time(translator):
    src = demo_sources(translator)
    assert (src == PAD_ID).any()
    batched = greedy_decode(translator.model, src)
    assert all(batched) and len({tuple(h) for h in batched}) > len(batched) // 2  # real, varied outputs
    lengths = (src != PAD_ID).sum(1).tolist()
    single = [greedy_decode(translator.model, src[i : i + 1, : lengths[i]])[0] for i in range(len(lengths))]
    assert batched == single


def test_cached_greedy_decoding_gives_the_same_tokens_as_recomputation(translator):
    src = demo_sources(translator)
    cached = greedy_decode(translator.model, src, Search(use_cache=True))
    assert all(cached)
    assert cached == greedy_decode(translator.model, src, Search(use_cache=False))


def test_outputs_stop_at_the_length_limit_and_never_contain_eos(translator):
    src = demo_sources(translator)
    lengths = (src != PAD_ID).sum(1)
    for a, b in ((0.0, 1), (0.0, 3), (0.5, 2)):
        hyps = greedy_decode(translator.model, src, Search(max_len_a=a, max_len_b=b))
        limits = (lengths.float() * a + b).long().tolist()
        assert all(len(h) <= limit for h, limit in zip(hyps, limits, strict=True))
        assert all(EOS_ID not in h for h in hyps)
    assert max(len(h) for h in greedy_decode(translator.model, src, Search(0.0, 3))) == 3  # the limit is reached


@torch.no_grad()
def test_greedy_picks_the_most_probable_piece_at_every_step(translator):
    src = demo_sources(translator, n=3)
    model = translator.model
    for row, hyp in enumerate(greedy_decode(model, src)):
        tgt_in = torch.tensor([[BOS_ID, *hyp]], device=translator.device)  # BOS + hypothesis
        logits = model.decode(tgt_in, model.encode(src[row : row + 1])).logits[0]  # (len + 1, vocab)
        assert logits.argmax(-1).tolist()[: len(hyp)] == hyp


def eos_raised(model, by):
    """`model` with the EOS logit raised by `by`: an untrained model then ends its sentences at every length."""
    decode = model.decode

    def decode_raised(*args, **kwargs):
        out = decode(*args, **kwargs)
        out.logits[..., EOS_ID] += by
        return out

    model.decode = decode_raised
    return model


def random_batch(seed):
    """(6, 9) random sources of different lengths: sentences leave the batch at different steps."""
    src = random_ids(6, 9, seed=seed)
    for row, length in enumerate([9, 4, 7, 2, 9, 5]):
        src[row, length:] = PAD_ID
    return src


@pytest.mark.parametrize("seed", range(4))
def test_the_device_loop_equals_the_old_loop_on_random_models(seed):
    """The masked loop that reads the device every `check_every` steps (1: a CPU's choice, 3 and past the limit: a
    GPU's) gives the tokens of the loop it replaced, which removed each finished sentence at once."""
    model = eos_raised(tiny_model(seed=seed, norm="pre" if seed % 2 else "post"), by=seed * 0.7)
    src = random_batch(seed)
    for a, b, min_len, use_cache in ((1.5, 10, 0, True), (0.5, 2, 0, True), (1.0, 5, 3, False)):
        old = old_greedy_decode(model, src, a, b, use_cache=use_cache, min_len=min_len)
        assert len({len(h) for h in old}) > 1  # sentences end at different steps
        for check_every in (1, 3, 1000):
            new = greedy_decode(model, src, Search(a, b, min_len, use_cache, check_every))
            assert new == old, (a, b, min_len, use_cache, check_every)
