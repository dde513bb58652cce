import pytest
import torch
from helpers import random_ids, tiny_model

from transformer.layers import DecoderCache
from transformer.specials import BOS_ID, PAD_ID


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_changing_a_later_target_token_leaves_earlier_outputs_unchanged(norm):
    model = tiny_model(norm=norm)
    src, tgt = random_ids(2, 7, seed=1), random_ids(2, 6, seed=2)
    encoded = model.encode(src)
    logits = model.decode(tgt, encoded).logits
    for t in range(5):
        changed = tgt.clone()
        changed[:, t + 1 :] = random_ids(2, 5 - t, seed=10 + t)  # every token after t
        changed_logits = model.decode(changed, encoded).logits
        assert torch.allclose(logits[:, : t + 1], changed_logits[:, : t + 1], atol=1e-5)
        assert not torch.allclose(logits[:, t + 1 :], changed_logits[:, t + 1 :], atol=1e-3)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_padding_does_not_change_real_positions(norm):
    model = tiny_model(norm=norm)
    src, tgt = random_ids(1, 5, seed=3), random_ids(1, 4, seed=4)
    padded_src = torch.cat([src, torch.full((1, 3), PAD_ID)], dim=1)
    padded_tgt = torch.cat([tgt, torch.full((1, 2), PAD_ID)], dim=1)
    plain, padded = model.encode(src), model.encode(padded_src)
    assert torch.allclose(plain.memory, padded.memory[:, :5], atol=1e-5)
    logits = model.decode(tgt, plain).logits
    padded_logits = model.decode(padded_tgt, padded).logits
    assert torch.allclose(logits, padded_logits[:, :4], atol=1e-5)


def test_cross_attention_gives_padded_source_positions_zero_weight():
    model = tiny_model()
    src = random_ids(2, 6, seed=5)
    src[0, 4:] = PAD_ID
    tgt = random_ids(2, 3, seed=6)
    out = model.decode(tgt, model.encode(src), need_weights=True)
    assert len(out.cross_weights) == 2 and out.cross_weights[0].shape == (2, 4, 3, 6)
    for weights in out.cross_weights:
        assert torch.all(weights[0, :, :, 4:] == 0)
        assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 3), atol=1e-5)


def test_cached_decoding_gives_the_same_logits_as_full_recomputation():
    model = tiny_model()
    src, tgt = random_ids(3, 7, seed=7), random_ids(3, 6, seed=8)
    src[1, 5:] = PAD_ID
    encoded = model.encode(src)
    full = model.decode(tgt, encoded).logits  # (3, 6, vocab)
    cache = DecoderCache()
    steps = [model.decode(tgt[:, t : t + 1], encoded, cache).logits for t in range(6)]
    assert cache.length == 6
    assert torch.allclose(full, torch.cat(steps, dim=1), atol=1e-5)


def test_the_cache_outgrows_its_buffer_and_follows_reordered_rows():
    """Past the cache's first capacity (16 positions) and with rows reordered and dropped between steps, each step's
    logits equal a full recomputation over the rows' whole prefixes."""
    model = tiny_model()
    src, tgt = random_ids(4, 7, seed=9), random_ids(4, 40, seed=10)
    encoded, cache, rows = model.encode(src), DecoderCache(), torch.arange(4)
    logits = model.decode(tgt[:, :3], encoded, cache).logits  # a prefix of 3 positions in one call
    for t in range(3, 40):
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(t))[: max(2, len(rows) - t % 2)]
        cache.reorder(order)
        rows, encoded = rows[order], encoded.select(order)
        logits = model.decode(tgt[rows, t : t + 1], encoded, cache).logits
    full = model.decode(tgt[rows], model.encode(src[rows])).logits[:, -1:]
    assert cache.length == 40 and len(rows) == 2
    assert torch.allclose(full, logits, atol=1e-5)


def test_embeddings_and_output_projection_are_one_matrix():
    """Tied: the logits are the decoder states times the embedding matrix, and no other matrix could make them."""
    model = tiny_model()
    src, tgt = random_ids(2, 5, seed=1), torch.tensor([[BOS_ID, 5, 6], [BOS_ID, 7, 8]])
    encoded = model.encode(src)
    states, _, _ = model.decoder_states(tgt, encoded)
    assert torch.allclose(model.decode(tgt, encoded).logits, states @ model.embedding.weight.T, atol=1e-6)
    vocab, d_model = model.embedding.weight.shape
    assert [n for n, p in model.named_parameters() if p.shape in ((vocab, d_model), (d_model, vocab))] == [
        "embedding.weight"
    ]
    loss = model(src, tgt, torch.tensor([[5, 6, 3], [7, 8, 3]]))
    loss.backward()
    assert model.embedding.weight.grad[[5, 6, 7, 8, 3]].abs().sum() > 0  # the training loss goes through it
