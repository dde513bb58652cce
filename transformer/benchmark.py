"""Measure training and decoding speed on real batches, beside a `torch.nn.Transformer` of the same shape.

Every figure comes with the same figure for the baseline, measured in the same run, so ratios survive a noisy
machine. Model FLOPs are counted by hand (see `forward_flops`), on real tokens only: padding is waste, not work.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transformer.config import Config
from transformer.data import Batch, Encoded, batch_plan, collate
from transformer.decoding import greedy_decode
from transformer.device import autocast
from transformer.layers import DecoderCache, PositionalEncoding
from transformer.loss import loss_sum
from transformer.model import Transformer
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, pad, until_eos


def matmul_peak(dtype: torch.dtype, size: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of a large square matmul: the practical peak of this machine for that dtype."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9


def forward_flops(config: Config, vocab: int, src_lens: list[int], tgt_lens: list[int]) -> float:
    """FLOPs of one forward pass: 2 per multiply-add of every matmul, real tokens only, embeddings free.

    Attention scores and weighted sums count each sentence's full (len × len) square, causal or not.
    """
    m = config.model
    d, ff = m.d_model, m.d_ff
    src, tgt = sum(src_lens), sum(tgt_lens)
    src_sq = sum(s * s for s in src_lens)
    tgt_sq = sum(t * t for t in tgt_lens)
    cross = sum(s * t for s, t in zip(src_lens, tgt_lens, strict=True))
    encoder = 2 * (4 * d * d * src + 2 * d * ff * src + 2 * d * src_sq)
    self_attention = 4 * d * d * tgt + 2 * d * tgt_sq  # q, k, v, out projections; scores and weighted sum
    cross_attention = 2 * d * d * tgt + 2 * d * d * src + 2 * d * cross  # q, out on the target; k, v on the source
    decoder = 2 * (self_attention + cross_attention + 2 * d * ff * tgt)
    return m.encoder_layers * encoder + m.decoder_layers * decoder + 2 * d * vocab * tgt


class BaselineTransformer(nn.Module):
    """What a user would pick instead: `torch.nn.Transformer` with the same shape, embeddings and tied output."""

    def __init__(self, config: Config, vocab: int) -> None:
        super().__init__()
        m = config.model
        self.d_model = m.d_model
        self.embedding = nn.Embedding(vocab, m.d_model, padding_idx=PAD_ID)
        self.positions = PositionalEncoding(m.d_model, m.max_positions)
        self.core = nn.Transformer(
            m.d_model, m.heads, m.encoder_layers, m.decoder_layers, m.d_ff, m.dropout,
            batch_first=True, norm_first=m.norm == "pre",
        )  # fmt: skip

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids) * math.sqrt(self.d_model) + self.positions(ids.size(1))

    def forward(
        self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """The same contract as `Transformer.forward`: the summed loss, here through the usual full logits."""
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1), dtype=torch.bool)
        src_pad, tgt_pad = src == PAD_ID, tgt_in == PAD_ID  # nn.Transformer's convention: True = ignore
        out = self.core(
            self.embed(src), self.embed(tgt_in), tgt_mask=causal, src_key_padding_mask=src_pad,
            tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True,
        )  # fmt: skip
        logits = F.linear(out, self.embedding.weight)  # (batch, tgt_len, vocab)
        return loss_sum(logits, tgt_out, label_smoothing)

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, steps: int) -> torch.Tensor:
        """The baseline has no key/value cache: every step runs the decoder over the whole prefix."""
        src_pad = src == PAD_ID
        memory = self.core.encoder(self.embed(src), src_key_padding_mask=src_pad)
        prefix = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long)
        for _ in range(steps):
            causal = nn.Transformer.generate_square_subsequent_mask(prefix.size(1), dtype=torch.bool)
            out = self.core.decoder(self.embed(prefix), memory, tgt_mask=causal, memory_key_padding_mask=src_pad)
            next_ids = F.linear(out[:, -1], self.embedding.weight).argmax(-1)
            prefix = torch.cat([prefix, next_ids[:, None]], dim=1)
            if bool((next_ids == EOS_ID).all()):
                break
        return prefix


@dataclass
class TrainResult:
    tokens_per_s: float  # source + target real tokens
    tgt_tokens_per_s: float
    gflops: float  # model FLOP/s achieved, in GFLOP/s


def time_training(
    model: nn.Module, batches: list[Batch], flops: list[float], warmup: int, bf16: bool, label_smoothing: float
) -> TrainResult:
    """Full training steps (forward, loss, backward, Adam) over `batches`; the first `warmup` are not timed."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
    device = torch.device("cpu")
    model.train()

    def step(batch: Batch) -> None:
        with autocast(device, bf16):
            loss = model(batch.src, batch.tgt_in, batch.tgt_out, label_smoothing)  # summed over target tokens
        (loss / batch.tgt_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches[:warmup]:
        step(batch)
    timed = batches[warmup:]
    start = time.perf_counter()
    for batch in timed:
        step(batch)
    seconds = time.perf_counter() - start
    tokens = sum(b.src_tokens + b.tgt_tokens for b in timed)
    tgt_tokens = sum(b.tgt_tokens for b in timed)
    return TrainResult(tokens / seconds, tgt_tokens / seconds, 3 * sum(flops[warmup:]) / seconds / 1e9)


def training_batches(data: Encoded, config: Config, vocab: int, count: int) -> tuple[list[Batch], list[float], float]:
    """The first `count` batches of the training plan, their forward FLOPs, and their padding fraction."""
    plan = batch_plan(data, config.training.batch_tokens, config.training.seed, 0)[:count]
    batches = [collate(data, b) for b in plan]
    flops = []
    slots = real = 0
    for b in plan:
        src_lens = [len(data.src[i]) for i in b]
        tgt_lens = [len(data.tgt[i]) + 1 for i in b]
        flops.append(forward_flops(config, vocab, src_lens, tgt_lens))
        slots += len(b) * (max(src_lens) + max(tgt_lens))
        real += sum(src_lens) + sum(tgt_lens)
    return batches, flops, 1 - real / slots


def time_decoding(decode: Callable[[torch.Tensor], list[list[int]]], sources: list[list[int]], batch_size: int):
    """Sentences/s and output tokens/s of `decode` over the sources, sorted by length, in batches."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    produced = 0
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        src = pad([sources[j] for j in order[i : i + batch_size]])
        produced += sum(len(h) + 1 for h in decode(src))
    seconds = time.perf_counter() - start
    return len(sources) / seconds, produced / seconds


@torch.no_grad()
def time_fixed_length(model: Transformer, src: torch.Tensor, length: int, use_cache: bool) -> float:
    """Seconds per sentence to generate exactly `length` tokens (end-of-sentence ignored)."""
    start = time.perf_counter()
    encoded = model.encode(src)
    cache = DecoderCache() if use_cache else None
    prefix = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long)
    for _ in range(length):
        step_input = prefix[:, -1:] if use_cache else prefix
        next_ids = model.decode(step_input, encoded, cache).logits[:, -1].argmax(-1)
        prefix = torch.cat([prefix, next_ids[:, None]], dim=1)
    return (time.perf_counter() - start) / src.size(0)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def our_greedy(model: Transformer, config: Config, use_cache: bool) -> Callable[[torch.Tensor], list[list[int]]]:
    d = config.decoding
    return lambda src: greedy_decode(model, src, d.max_len_a, d.max_len_b, use_cache=use_cache)


def baseline_greedy(model: BaselineTransformer, config: Config) -> Callable[[torch.Tensor], list[list[int]]]:
    d = config.decoding

    def decode(src: torch.Tensor) -> list[list[int]]:
        steps = int((src != PAD_ID).sum(1).max() * d.max_len_a + d.max_len_b)
        rows = model.greedy(src, steps)[:, 1:].tolist()
        return [until_eos(r) for r in rows]

    return decode
