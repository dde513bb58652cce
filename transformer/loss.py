"""The training loss: label-smoothed cross-entropy over real target tokens, padding ignored.

    loss = (1 - ε) · (−log p[target]) + ε · mean over the vocabulary of (−log p[v])

`loss_sum` is that formula on ready-made logits. Training uses `projected_loss_sum`, the same number computed
together with the output projection, a chunk of positions at a time (see `ChunkedProjectionLoss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from transformer.specials import PAD_ID

CHUNK = 512  # positions per chunk: with an 8,000-piece vocabulary, 16 MB of fp32 logits, which stay in cache


def loss_sum(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """(batch, len, vocab) logits and (batch, len) target ids → the loss summed over non-pad target tokens."""
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),  # (batch * len, vocab), fp32 for a stable softmax
        target.reshape(-1),
        ignore_index=PAD_ID,
        label_smoothing=label_smoothing,
        reduction="sum",
    )


def projected_loss_sum(
    hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """loss_sum(hidden @ weightᵀ, target): (batch, len, d_model) states, (vocab, d_model) output matrix.

    When gradients are wanted, the fused chunked path, on real tokens only; otherwise (validation) the plain one.
    """
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        return loss_sum(F.linear(hidden, weight), target, label_smoothing)
    real = target != PAD_ID  # (batch, len): padding is neither projected nor scored
    return ChunkedProjectionLoss.apply(hidden[real], weight, target[real], label_smoothing)


class ChunkedProjectionLoss(torch.autograd.Function):
    """Output projection + label-smoothed cross-entropy, with the gradient computed in the forward pass.

    Why: a batch's logits (tokens × vocab, e.g. 3,500 × 8,000 fp32 = 112 MB) are the largest tensor of a training
    step. Written, read back by the softmax, zero-filled and summed again in the backward pass, they cost a CPU
    more time than the projection's matmuls. A chunk of CHUNK positions fits in cache, and the gradient of softmax
    cross-entropy is known in closed form — softmax(logits) − q, where q is the smoothed target distribution — so
    each chunk's logits are made, turned into loss and gradient, and dropped. Only the gradients of the hidden
    states and of the weight are kept for the backward pass, which merely scales them.
    """

    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, label_smoothing: float
    ) -> torch.Tensor:
        """hidden: (tokens, d_model) real positions only; weight: (vocab, d_model); target: (tokens,) ids."""
        vocab, eps = weight.size(0), label_smoothing
        grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)  # (tokens, d_model)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)  # (vocab, d_model)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        device = hidden.device.type  # under autocast both gradient matmuls run in its dtype, as for every other weight
        low = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        for start in range(0, hidden.size(0), CHUNK):
            h, t = hidden[start : start + CHUNK], target[start : start + CHUNK, None]  # (chunk, d_model), (chunk, 1)
            log_probs = torch.log_softmax((h @ weight.t()).float(), dim=-1)  # (chunk, vocab)
            nll = -log_probs.gather(1, t).sum()  # Σ −log p[target]
            uniform = -log_probs.mean(-1).sum()  # Σ mean over the vocabulary of −log p
            total += (1 - eps) * nll + eps * uniform
            # d loss / d logits = softmax − q, where q = (1 − ε)·onehot(target) + ε / vocab
            grad = log_probs.exp_().sub_(eps / vocab)  # (chunk, vocab), in place
            grad.scatter_add_(1, t, torch.full(t.shape, eps - 1, dtype=grad.dtype, device=grad.device))
            if low is not None:
                grad = grad.to(low)  # cast once for the two matmuls below (autocast would cast it for each)
            grad_hidden[start : start + CHUNK] = grad @ weight  # (chunk, d_model)
            if low is None:
                grad_weight.addmm_(grad.t(), h.float())  # (vocab, d_model)
            else:  # the step's largest matmul in low precision too, accumulated in fp32
                grad_weight += grad.t() @ h  # (vocab, d_model)
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_total, grad_weight * grad_total, None, None
