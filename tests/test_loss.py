import math

import torch

from transformer.loss import loss_sum
from transformer.tokenizer import PAD_ID


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
