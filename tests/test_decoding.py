"""Greedy search: the cache changes nothing, batching changes nothing, limits hold. On a model that translates."""

import torch

from transformer.decoding import greedy_decode
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
    cached = greedy_decode(translator.model, src, use_cache=True)
    assert all(cached)
    assert cached == greedy_decode(translator.model, src, use_cache=False)


def test_outputs_stop_at_the_length_limit_and_never_contain_eos(translator):
    src = demo_sources(translator)
    lengths = (src != PAD_ID).sum(1)
    for a, b in ((0.0, 1), (0.0, 3), (0.5, 2)):
        hyps = greedy_decode(translator.model, src, max_len_a=a, max_len_b=b)
        limits = (lengths.float() * a + b).long().tolist()
        assert all(len(h) <= limit for h, limit in zip(hyps, limits, strict=True))
        assert all(EOS_ID not in h for h in hyps)
    assert max(len(h) for h in greedy_decode(translator.model, src, 0.0, 3)) == 3  # the limit is reached


@torch.no_grad()
def test_greedy_picks_the_most_probable_piece_at_every_step(translator):
    src = demo_sources(translator, n=3)
    model = translator.model
    for row, hyp in enumerate(greedy_decode(model, src)):
        tgt_in = torch.tensor([[BOS_ID, *hyp]], device=translator.device)  # BOS + hypothesis
        logits = model.decode(tgt_in, model.encode(src[row : row + 1])).logits[0]  # (len + 1, vocab)
        assert logits.argmax(-1).tolist()[: len(hyp)] == hyp
