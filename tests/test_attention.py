import math

import torch

from transformer.attention import MultiHeadAttention, attention, fused_is_faster
from transformer.masks import causal_mask, padding_mask


def test_explicit_attention_is_the_math_written_by_hand():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    out, weights = attention(q, k, v)
    for i in range(2):
        scores = [sum(q[0, 0, i, d] * k[0, 0, j, d] for d in range(4)) / math.sqrt(4) for j in range(3)]
        exp = [math.exp(s) for s in scores]
        w = [e / sum(exp) for e in exp]
        assert torch.allclose(weights[0, 0, i], torch.tensor(w), atol=1e-6)
        expected = sum(w[j] * v[0, 0, j] for j in range(3))
        assert torch.allclose(out[0, 0, i], expected, atol=1e-6)


def test_masked_keys_get_zero_weight_and_do_not_change_the_output():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])[:, None, None, :]
    out, weights = attention(q, k, v, mask)
    assert torch.all(weights[0, :, :, 3:] == 0)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 3:], v2[0, :, 3:] = 100.0, -100.0  # whatever sits in masked positions
    out2, _ = attention(q, k2, v2, mask)
    assert torch.allclose(out, out2)


def test_fused_path_equals_explicit_path():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=32, heads=4, dropout=0.0).eval()
    x, memory = torch.randn(3, 6, 32), torch.randn(3, 7, 32)
    ids = torch.tensor([[5] * 7, [5] * 4 + [0] * 3, [5] * 2 + [0] * 5])
    masks = [
        (x, None),  # no mask
        (x, causal_mask(6, 6)),  # decoder self-attention
        (memory, padding_mask(ids)),  # cross-attention with padded sources
    ]
    for source, mask in masks:
        k, v = mha.keys_values(source)
        fused, no_weights = mha(x, k, v, mask, need_weights=False)
        explicit, weights = mha(x, k, v, mask, need_weights=True)
        assert no_weights is None and weights.shape == (3, 4, 6, source.size(1))
        assert torch.allclose(fused, explicit, atol=1e-5)


def test_causal_mask_lets_each_position_see_only_itself_and_earlier():
    mask = causal_mask(4, 4)[0, 0]
    assert mask.tolist() == [[j <= i for j in range(4)] for i in range(4)]
    # with two cached positions, the two new queries sit at positions 2 and 3
    assert causal_mask(2, 4)[0, 0].tolist() == [[True, True, True, False], [True, True, True, True]]


def test_bf16_training_on_a_cpu_takes_the_explicit_path_and_keeps_its_masks(monkeypatch):
    """The fused CPU kernel's backward is slow in bf16 (`fused_is_faster`): under bf16 autocast with gradients the
    explicit path runs, masked keys still change nothing, and forward and backward stay close to fp32."""
    assert fused_is_faster(torch.device("cpu"), torch.float32, backward=True)
    assert not fused_is_faster(torch.device("cpu"), torch.bfloat16, backward=True)
    assert fused_is_faster(torch.device("cpu"), torch.bfloat16, backward=False)  # decoding keeps the fused kernel
    assert fused_is_faster(torch.device("cuda"), torch.bfloat16, backward=True)

    def fused_must_not_run(*args, **kwargs):
        raise AssertionError("scaled_dot_product_attention ran in bf16 on a CPU")

    torch.manual_seed(0)
    mha = MultiHeadAttention(d_model=32, heads=4, dropout=0.0)
    x, memory = torch.randn(2, 6, 32, requires_grad=True), torch.randn(2, 5, 32)
    mask = padding_mask(torch.tensor([[5] * 5, [5] * 3 + [0] * 2]))  # (2, 1, 1, 5)
    k, v = mha.keys_values(memory)
    reference, _ = mha(x, k, v, mask)
    (grad_reference,) = torch.autograd.grad(reference.sum(), x)
    memory2 = memory.clone()
    memory2[1, 3:] = 100.0  # what sits behind the mask
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", fused_must_not_run)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, weights = mha(x, *mha.keys_values(memory), mask)
        out2, _ = mha(x, *mha.keys_values(memory2), mask)
    (grad,) = torch.autograd.grad(out.float().sum(), x)
    assert out.dtype == torch.bfloat16 and weights is None
    assert torch.equal(out, out2)
    assert torch.allclose(out.float(), reference, atol=2e-2)
    assert torch.allclose(grad, grad_reference, atol=5e-2)
