"""Greedy search, sampling and beam search. The search is not the model: it drives the model through `encode` and
`decode` only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from transformer.config import DecodingConfig
from transformer.layers import DecoderCache
from transformer.model import Transformer
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, until_eos


@dataclass(frozen=True)
class Search:
    """What greedy and beam search share: how long a translation may be, and how the loop runs (speed, not output)."""

    max_len_a: float = 1.5  # a translation has at most a × source pieces + b pieces
    max_len_b: int = 10
    min_len: int = 0  # and no EOS before this many pieces
    use_cache: bool = True  # keys and values kept: one new position a step; False: whole prefixes recomputed (tests)
    check_every: int | None = None  # steps between reads of the stop test; None: `check_interval` of the device

    @classmethod
    def of(cls, dec: DecodingConfig) -> Search:
        return cls(dec.max_len_a, dec.max_len_b)


@dataclass(frozen=True)
class Sampling:
    """Each piece drawn from the model's distribution at `temperature` (below 1 sharper, above 1 flatter) among the
    `top_k` most probable pieces (0: all), then within the nucleus (`keep_likely`); a call draws from a generator
    seeded with `seed`, so the same sources and seed give the same pieces."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def of(cls, dec: DecodingConfig) -> Sampling | None:
        """The config's sampling; None where it searches (temperature 0)."""
        return cls(dec.temperature, dec.top_k, dec.top_p, dec.seed) if dec.temperature > 0 else None


def output_limits(model: Transformer, src: torch.Tensor, search: Search) -> torch.Tensor:
    """(batch,) the most pieces each sentence may produce: a * source pieces + b, within the positional table."""
    src_lens = (src != PAD_ID).sum(1)
    return (src_lens.float() * search.max_len_a + search.max_len_b).long().clamp(max=model.config.max_positions - 1)


def check_interval(device: torch.device) -> int:
    """Steps between reads of the stop test. Reading a tensor's value waits for all the work queued before it: free on
    a CPU, where removing a finished sentence at once also saves its work; on a GPU a read every step would leave the
    chip idle while the host decides, so finished sentences are masked and the batch is compacted every few steps."""
    return 1 if device.type == "cpu" else 8


def keep_likely(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """(rows, vocab) `logits` with -inf outside each row's `top_k` most probable pieces (0: all), then outside the
    nucleus of those left: the fewest most probable whose probability among them reaches `top_p` (Holtzman et al.)."""
    if not (0 < top_k < logits.size(-1) or top_p < 1):
        return logits
    ranked, order = logits.sort(-1, descending=True)  # (rows, vocab) each
    if 0 < top_k < ranked.size(-1):
        ranked[:, top_k:] = float("-inf")
    if top_p < 1:
        probs = ranked.softmax(-1)
        ranked = ranked.masked_fill(probs.cumsum(-1) - probs >= top_p, float("-inf"))  # those before already reach p
    return logits.scatter(-1, order, ranked)


def next_pieces(sampling: Sampling | None, batch: int, device: torch.device) -> Callable[..., torch.Tensor]:
    """What picks each step's pieces, (alive, vocab) logits and the alive rows → (alive,) ids: the most probable, or
    with `sampling` argmax(logits + Gumbel noise), which is a draw from softmax(logits) (the Gumbel-max trick). The
    noise is drawn for every row of the batch at every step, so a row's draws never depend on when the others end."""
    if sampling is None:
        return lambda logits, alive: logits.argmax(-1)
    generator = torch.Generator(device).manual_seed(sampling.seed)

    def draw(logits: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        uniform = torch.rand((batch, logits.size(-1)), generator=generator, device=device)[alive]  # (alive, vocab)
        # In float64 with the row's maximum at 0, a tiny temperature sends the other pieces to -inf, never one to nan.
        logits = logits.double()  # (alive, vocab), converted once
        shifted = logits - logits.amax(-1, keepdim=True)
        kept = keep_likely(shifted / sampling.temperature, sampling.top_k, sampling.top_p)
        return (kept - (-uniform.log()).log()).argmax(-1)  # - log(-log(uniform)): Gumbel noise

    return draw


@torch.no_grad()
def greedy_decode(
    model: Transformer, src: torch.Tensor, search: Search = Search(), sampling: Sampling | None = None
) -> list[list[int]]:
    """Translate a batch of sources (batch, src_len) into piece ids, without BOS or EOS: each piece the most probable,
    or drawn with `sampling`. A sentence stops at its EOS or length limit and then only adds EOS; every `check_every`
    steps (`check_interval`) the finished ones leave the batch, so later steps cost only what is left."""
    batch, check_every = src.size(0), search.check_every or check_interval(src.device)
    choose = next_pieces(sampling, batch, src.device)
    limits = output_limits(model, src, search)  # (batch,)
    encoded = model.encode(src)
    steps = int(limits.max())
    tokens = torch.full((batch, steps), EOS_ID, dtype=torch.long, device=src.device)  # (batch, steps)
    alive = torch.arange(batch, device=src.device)  # original row of each sentence still in the batch
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)  # (alive,) ended, not yet removed
    cache = DecoderCache() if search.use_cache else None
    prefix = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=src.device)  # (alive, step + 1)
    for step in range(steps):
        step_input = prefix[:, -1:] if cache is not None else prefix
        logits = model.decode(step_input, encoded, cache).logits[:, -1]  # (alive, vocab)
        if step < search.min_len:
            logits[:, EOS_ID] = float("-inf")
        next_ids = choose(logits, alive).masked_fill(finished, EOS_ID)  # (alive,)
        tokens[alive, step] = next_ids
        finished |= (next_ids == EOS_ID) | (limits[alive] <= step + 1)
        if (step + 1) % check_every == 0:  # the only reads of the device's values
            if bool(finished.all()):
                break
            if bool(finished.any()):
                keep = (~finished).nonzero().squeeze(1)
                alive, next_ids, prefix, finished = alive[keep], next_ids[keep], prefix[keep], finished[keep]
                encoded = encoded.select(keep)
                if cache is not None:
                    cache.reorder(keep)
        prefix = torch.cat([prefix, next_ids[:, None]], dim=1)
    return [until_eos(row) for row in tokens.tolist()]


@dataclass
class Hypothesis:
    ids: list[int]  # pieces, without BOS or EOS
    log_prob: float  # the model's log-probability of the pieces and of the EOS that ended them (if one did)
    score: float  # log_prob / length penalty: what the beams are ranked by


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's ((5 + length) / 6)^alpha (Wu et al., 2016): alpha = 0 ranks by log-probability, which favours short
    outputs since every piece adds a negative log-probability; larger alpha favours longer ones."""
    return ((5 + length) / 6) ** alpha


@dataclass
class FinishedPool:
    """The n-best finished hypotheses of each sentence of a batch, best first, kept as tensors on the device so the
    search never reads them back until it ends. A score of -inf marks an empty place."""

    scores: torch.Tensor  # (batch, n_best) log_prob / length penalty, float64 as the host computed it before
    log_probs: torch.Tensor  # (batch, n_best)
    ids: torch.Tensor  # (batch, n_best, steps) pieces, then EOS

    @classmethod
    def empty(cls, batch: int, n_best: int, steps: int, device: torch.device) -> FinishedPool:
        scores = torch.full((batch, n_best), float("-inf"), dtype=torch.float64, device=device)
        log_probs = torch.zeros((batch, n_best), dtype=torch.float64, device=device)
        return cls(scores, log_probs, torch.full((batch, n_best, steps), EOS_ID, dtype=torch.long, device=device))

    def add(
        self,
        sentences: torch.Tensor,
        log_prob: torch.Tensor,
        score: torch.Tensor,
        rows: torch.Tensor,
        last: torch.Tensor,
        history: torch.Tensor,
    ) -> None:
        """Merge one step's candidates into the pools of `sentences` (n,): each candidate (n, c) has its log_prob,
        its score (-inf: not finished), the history row it extends and its last piece. The pool comes first in the
        merge, so on a tie the hypothesis that finished earlier stays ahead (as Python's stable sort kept it)."""
        n_best, steps, n = self.scores.size(1), self.ids.size(2), sentences.size(0)
        merged = torch.cat([self.scores[sentences], score], 1)  # (n, n_best + c)
        best = merged.sort(dim=1, descending=True, stable=True).indices[:, :n_best]  # (n, n_best)
        self.scores[sentences] = merged.gather(1, best)
        self.log_probs[sentences] = torch.cat([self.log_probs[sentences], log_prob], 1).gather(1, best)
        # The pieces of each new n-best: a pool place's own, or those of the row a candidate extends + its last piece.
        candidate = (best - n_best).clamp(min=0)  # (n, n_best) which candidate, where one won
        source_rows, last = rows.gather(1, candidate), last.gather(1, candidate)  # (n, n_best) each
        step = history.size(1) - 1
        ids = torch.cat([history[source_rows.view(-1), 1:].view(n, n_best, step), last[:, :, None]], 2)
        ids = F.pad(ids, (0, steps - step - 1), value=EOS_ID)  # (n, n_best, steps)
        kept = self.ids[sentences].gather(1, best.clamp(max=n_best - 1)[:, :, None].expand(-1, -1, steps))
        self.ids[sentences] = torch.where((best < n_best)[:, :, None], kept, ids)

    def hypotheses(self) -> list[list[Hypothesis]]:
        """Each sentence's finished hypotheses, best first: the one read back of the whole search."""
        found = zip(self.ids.tolist(), self.log_probs.tolist(), self.scores.tolist(), strict=True)
        return [
            [Hypothesis(until_eos(i), lp, sc) for i, lp, sc in zip(*pool, strict=True) if sc != float("-inf")]
            for pool in found
        ]


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: torch.Tensor,
    beam_size: int = 5,
    alpha: float = 0.0,
    n_best: int = 1,
    search: Search = Search(),
) -> list[list[Hypothesis]]:
    """The `n_best` best hypotheses of each source of a batch (batch, src_len), best first. Each sentence keeps
    `beam_size` beams as rows (the cache follows them: `DecoderCache.reorder`); a step keeps the best 2k candidates:
    EOS among the first k finish, the best k others go on (as fairseq and CTranslate2). A sentence is done at its
    length limit or once no beam can beat its n-best (log-probabilities only fall; the penalty is bounded by its value
    at the limit). Tensor work on the device: values are read back every `check_every` steps and at the end."""
    k, batch, device = beam_size, src.size(0), src.device
    if not 1 <= 2 * k <= model.embedding.num_embeddings:
        raise ValueError(f"beam_size must be between 1 and half the vocabulary, got {beam_size}")
    check_every = search.check_every or check_interval(device)
    limits = output_limits(model, src, search)  # (batch,)
    steps = int(limits.max())
    # The penalty at each sentence's limit, computed as the host computes every other penalty: the same rounding.
    limit_penalty = torch.tensor([length_penalty(n, alpha) for n in limits.tolist()], dtype=torch.float64).to(device)
    encoded = model.encode(src).select(torch.arange(batch, device=device).repeat_interleave(k))  # batch × k rows
    cache = DecoderCache() if search.use_cache else None
    sentences = torch.arange(batch, device=device)  # original index of each sentence still in the batch
    done = torch.zeros(batch, dtype=torch.bool, device=device)  # (alive,) done, not yet removed
    scores = torch.full((batch, k), float("-inf"), device=device)  # (alive, k) log-probability of each beam
    scores[:, 0] = 0.0  # one real beam to start from: the others would repeat it
    history = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device)  # (alive × k, step + 1)
    finished = FinishedPool.empty(batch, n_best, steps, device)

    for step in range(steps):
        n = sentences.size(0)
        step_input = history[:, -1:] if cache is not None else history
        logits = model.decode(step_input, encoded, cache).logits[:, -1]  # (n × k, vocab)
        log_probs = logits.float().log_softmax(-1)
        if step < search.min_len:
            log_probs[:, EOS_ID] = float("-inf")
        vocab = log_probs.size(-1)
        candidates = (scores[:, :, None] + log_probs.view(n, k, vocab)).view(n, k * vocab)  # (n, k × vocab)
        top_scores, top_indices = candidates.topk(2 * k, dim=1)  # (n, 2k), best first
        top_beams, is_eos = top_indices // vocab, top_indices % vocab == EOS_ID  # (n, 2k) each
        # The first k candidates that do not end in EOS go on (there are at least k: one EOS per beam at most).
        going_on = torch.sort(is_eos.int(), dim=1, stable=True).indices[:, :k]  # (n, k)
        chosen, next_scores = top_indices.gather(1, going_on), top_scores.gather(1, going_on)  # (n, k)
        first_rows = torch.arange(n, device=device)[:, None] * k  # (n, 1) each sentence's first beam
        rows, next_ids = first_rows + chosen // vocab, chosen % vocab  # (n, k) each

        # Finished at this step (each with step + 1 positions): EOS among the first k candidates, and at the length
        # limit every beam going on. Both join the pool after those finished earlier: ties keep the earlier first.
        at_limit = limits[sentences] <= step + 1  # (n,)
        ended_by_eos = is_eos[:, :k] & top_scores[:, :k].isfinite()  # (n, k)
        ended_by_limit = at_limit[:, None] & next_scores.isfinite()  # (n, k)
        ended = torch.cat([ended_by_eos, ended_by_limit], 1) & ~done[:, None]  # (n, 2k)
        log_prob = torch.cat([top_scores[:, :k], next_scores], 1).double()  # (n, 2k)
        score = (log_prob / length_penalty(step + 1, alpha)).masked_fill(~ended, float("-inf"))
        extended = torch.cat([first_rows + top_beams[:, :k], rows], 1)  # (n, 2k) the history row each extends
        last = torch.cat([torch.full_like(next_ids, EOS_ID), next_ids], 1)  # (n, 2k)
        finished.add(sentences, log_prob, score, extended, last, history)

        # Done: out of length, or no beam going on can beat the n-th best finished (whose score is finite once n
        # hypotheses have finished).
        nth_best = finished.scores[sentences, n_best - 1]  # (n,)
        settled = nth_best.isfinite() & (next_scores[:, 0].double() / limit_penalty[sentences] <= nth_best)
        done |= at_limit | settled
        reading = (step + 1) % check_every == 0  # the only steps that read the device's values
        if reading and bool(done.all()):
            break
        leaving = reading and bool(done.any())
        if leaving:
            keep = (~done).nonzero().squeeze(1)  # (alive,)
            rows, next_scores, next_ids = rows[keep], next_scores[keep], next_ids[keep]
            sentences, done = sentences[keep], done[keep]
            encoded = encoded.select((keep[:, None] * k + torch.arange(k, device=device)).view(-1))
        flat = rows.reshape(-1)  # (alive × k,) the row each new beam extends
        if cache is not None:
            cache.reorder(flat, cross=leaving)  # beams moving within their sentence keep its source's rows
        history = torch.cat([history.index_select(0, flat), next_ids.reshape(-1, 1)], dim=1)
        scores = next_scores
    return finished.hypotheses()
