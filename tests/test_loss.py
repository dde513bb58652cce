import math

import torch
import torch.nn.functional as F

from transformer.loss import loss_sum, projected_loss_sum
from transformer.specials import PAD_ID


def test_padding_positions_contribute_nothing():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 9, requires_grad=True)
    target = torch.tensor([[5, 6, PAD_ID, PAD_ID], [7, 8, 5, PAD_ID]])
    loss = loss_sum(logits, target, 0.1)
    changed = logits.detach().clone()
    changed[0, 2:], changed[1, 3] = 100.0, -100.0
    assert torch.allclose(loss, loss_sum(changed, target, 0.1))
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad[0, 2:] == 0) and torch.all(grad[1, 3] == 0)


def test_label_smoothing_spreads_epsilon_over_the_vocabulary():
    logits = torch.zeros(1, 1, 10)  # uniform prediction: every piece has probability 1/10
    target = torch.tensor([[4]])
    assert math.isclose(loss_sum(logits, target, 0.0).item(), math.log(10), rel_tol=1e-6)
    assert math.isclose(loss_sum(logits, target, 0.3).item(), math.log(10), rel_tol=1e-6)
    confident = torch.full((1, 1, 10), -20.0)
    confident[0, 0, 4] = 20.0
    assert loss_sum(confident, target, 0.0) < loss_sum(confident, target, 0.1)  # smoothing penalizes certainty


def test_the_chunked_projection_loss_equals_the_plain_one_in_value_and_gradients():
    """Training's fused path (chunks, gradient in the forward pass, padding dropped) against the textbook one."""
    torch.manual_seed(0)
    hidden = torch.randn(3, 700, 16, requires_grad=True)  # 2,100 positions: several chunks of CHUNK
    weight = torch.randn(50, 16, requires_grad=True)
    target = torch.randint(4, 50, (3, 700))
    target[0, 500:], target[2, 100:] = PAD_ID, PAD_ID
    for smoothing in (0.0, 0.1):
        fused = projected_loss_sum(hidden, weight, target, smoothing)
        fused_grads = torch.autograd.grad(fused * 0.5, (hidden, weight))
        plain = loss_sum(F.linear(hidden, weight), target, smoothing)
        plain_grads = torch.autograd.grad(plain * 0.5, (hidden, weight))
        assert torch.allclose(fused, plain, rtol=1e-5)
        for a, b in zip(fused_grads, plain_grads, strict=True):
            assert torch.allclose(a, b, atol=1e-4)
        assert torch.all(fused_grads[0][2, 100:] == 0)  # padding gets no gradient


def test_the_chunked_projection_loss_under_bf16_autocast_stays_close_to_fp32():
    """Under bf16 autocast the weight's gradient is a bf16 matmul too: value and both gradients stay within bf16's
    precision of the fp32 textbook loss."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 600, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    target = torch.randint(4, 50, (2, 600))
    target[1, 400:] = PAD_ID
    plain = loss_sum(F.linear(hidden, weight), target, 0.1)
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = projected_loss_sum(hidden, weight, target, 0.1)  # fp32 states, as the final layer norm gives them
    fused_grads = torch.autograd.grad(fused, (hidden, weight))
    assert torch.allclose(fused, plain, rtol=1e-2)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        assert (a.float() - b).norm() < 2e-2 * b.norm()
