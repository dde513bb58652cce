"""The greedy and beam search loops as they were before they moved onto the device (commit f4aa8ea): sentences
leave the batch at once and the beam's finished hypotheses are Python lists. Kept verbatim as the reference the new
loops must equal token for token (test_decoding.py, test_beam.py)."""

from __future__ import annotations

import math

import torch

from transformer.decoding import Hypothesis, Search, length_penalty, output_limits
from transformer.layers import DecoderCache
from transformer.model import Transformer
from transformer.specials import BOS_ID, EOS_ID, until_eos


@torch.no_grad()
def old_greedy_decode(
    model: Transformer,
    src: torch.Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    use_cache: bool = True,
    min_len: int = 0,
) -> list[list[int]]:
    """Translate a batch of sources (batch, src_len) into piece ids, without BOS or EOS.

    Each sentence stops at its end-of-sentence token or at a*src_len+b pieces. Finished sentences leave the batch,
    so the remaining steps cost only what is still being decoded. With `use_cache`, self-attention keys and values
    grow by one position a step and cross-attention keys and values are computed once; without it, the whole
    prefix is recomputed every step (kept for tests and the benchmark). EOS is not allowed before `min_len` pieces.
    """
    batch = src.size(0)
    limits = output_limits(model, src, Search(max_len_a, max_len_b))
    encoded = model.encode(src)
    steps = int(limits.max())
    tokens = torch.full((batch, steps), EOS_ID, dtype=torch.long, device=src.device)  # (batch, steps)
    alive = torch.arange(batch, device=src.device)  # original row of each sentence still being decoded
    cache = DecoderCache() if use_cache else None
    prefix = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=src.device)  # (alive, step + 1)
    for step in range(steps):
        step_input = prefix[:, -1:] if cache is not None else prefix
        logits = model.decode(step_input, encoded, cache).logits[:, -1]  # (alive, vocab)
        if step < min_len:
            logits[:, EOS_ID] = float("-inf")
        next_ids = logits.argmax(-1)  # (alive,)
        tokens[alive, step] = next_ids
        done = (next_ids == EOS_ID) | (limits[alive] <= step + 1)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            alive, next_ids, prefix = alive[keep], next_ids[keep], prefix[keep]
            encoded = encoded.select(keep)
            if cache is not None:
                cache.reorder(keep)
        prefix = torch.cat([prefix, next_ids[:, None]], dim=1)
    return [until_eos(row) for row in tokens.tolist()]


def settled(hypotheses: list[Hypothesis], best_alive: float, limit: int, n_best: int, alpha: float) -> bool:
    """No beam still going can beat the n-best finished: log-probabilities only fall as a beam grows, and the length
    penalty divides them by at most its value at the length limit."""
    if len(hypotheses) < n_best:
        return False
    return best_alive / length_penalty(limit, alpha) <= sorted(h.score for h in hypotheses)[-n_best]


@torch.no_grad()
def old_beam_search(
    model: Transformer,
    src: torch.Tensor,
    beam_size: int = 5,
    alpha: float = 0.0,
    n_best: int = 1,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    min_len: int = 0,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Translate a batch of sources (batch, src_len): the `n_best` best hypotheses of each, best first.

    Each sentence keeps `beam_size` partial translations as rows of the batch (the key/value cache follows them
    through `DecoderCache.reorder`). A step extends every beam by every piece and keeps the best 2k candidates: those
    ending in EOS among the first k are finished, the best k others go on (as in fairseq and CTranslate2). A sentence is
    done at its a*src_len+b limit (its beams end as they are) or once no beam can beat its n-best; then it leaves.
    """
    k, batch, device = beam_size, src.size(0), src.device
    if not 1 <= 2 * k <= model.embedding.num_embeddings:
        raise ValueError(f"beam_size must be between 1 and half the vocabulary, got {beam_size}")
    limits = output_limits(model, src, Search(max_len_a, max_len_b)).tolist()
    encoded = model.encode(src).select(torch.arange(batch, device=device).repeat_interleave(k))  # batch × k rows
    cache = DecoderCache() if use_cache else None
    sentences = list(range(batch))  # original index of each sentence still searching
    scores = torch.full((batch, k), float("-inf"), device=device)  # (alive, k) log-probability of each beam
    scores[:, 0] = 0.0  # one real beam to start from: the others would repeat it
    history = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device)  # (alive × k, step + 1)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]

    def finish(sentence: int, row: int, last: int, log_prob: float) -> None:
        """Beam `row` extended by `last` is a finished hypothesis: by its EOS, or by the length limit."""
        ids = history[row, 1:].tolist() + ([] if last == EOS_ID else [last])
        length = len(ids) + (last == EOS_ID)  # the positions generated, an EOS included
        finished[sentence].append(Hypothesis(ids, log_prob, log_prob / length_penalty(length, alpha)))

    for step in range(max(limits)):
        n = len(sentences)
        step_input = history[:, -1:] if cache is not None else history
        logits = model.decode(step_input, encoded, cache).logits[:, -1]  # (n × k, vocab)
        log_probs = logits.float().log_softmax(-1)
        if step < min_len:
            log_probs[:, EOS_ID] = float("-inf")
        vocab = log_probs.size(-1)
        candidates = (scores[:, :, None] + log_probs.view(n, k, vocab)).view(n, k * vocab)  # (n, k × vocab)
        top_scores, top_indices = candidates.topk(2 * k, dim=1)  # (n, 2k), best first
        top_beams, is_eos = top_indices // vocab, top_indices % vocab == EOS_ID  # (n, 2k) each
        # The first k candidates that do not end in EOS go on (there are at least k: one EOS per beam at most).
        going_on = torch.sort(is_eos.int(), dim=1, stable=True).indices[:, :k]  # (n, k)
        chosen, next_scores = top_indices.gather(1, going_on), top_scores.gather(1, going_on)  # (n, k)
        rows, next_ids = torch.arange(n, device=device)[:, None] * k + chosen // vocab, chosen % vocab  # (n, k) each
        ended = (is_eos[:, :k] & top_scores[:, :k].isfinite()).nonzero().tolist()  # [(sentence, candidate)]
        for i, j in ended:
            finish(sentences[i], i * k + int(top_beams[i, j]), EOS_ID, float(top_scores[i, j]))
        keep, best_alive = [], next_scores[:, 0].tolist()
        for i, sentence in enumerate(sentences):
            if step + 1 >= limits[sentence]:  # out of length: its beams end as they are
                for beam in (b for b in range(k) if math.isfinite(float(next_scores[i, b]))):
                    finish(sentence, int(rows[i, beam]), int(next_ids[i, beam]), float(next_scores[i, beam]))
            elif not settled(finished[sentence], best_alive[i], limits[sentence], n_best, alpha):
                keep.append(i)
        if not keep:
            break
        if len(keep) < n:
            keep_t = torch.tensor(keep, device=device)
            rows, next_scores, next_ids = rows[keep_t], next_scores[keep_t], next_ids[keep_t]
            sentences = [sentences[i] for i in keep]
            kept_rows = (keep_t[:, None] * k + torch.arange(k, device=device)).view(-1)
            encoded = encoded.select(kept_rows)
        flat = rows.reshape(-1)  # (alive × k,) the row each new beam extends
        if cache is not None:
            cache.reorder(flat, cross=len(keep) < n)  # beams moving within their sentence keep its source's rows
        history = torch.cat([history.index_select(0, flat), next_ids.reshape(-1, 1)], dim=1)
        scores = next_scores
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in finished]
