"""Measuring speed: the matmul peak, model FLOPs, timed training steps and decoding, a profile of where a step's time
goes, and `torch.nn.Transformer` of the same shape as the baseline. `mini-transformer benchmark` reports them.

Model FLOPs are counted by hand (see `forward_flops`), on real tokens only: padding is waste, not work.
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
from torch.autograd.profiler import record_function

from transformer.config import Config
from transformer.data import Batch, Encoded, batch_plan, collate, padding_fraction
from transformer.decoding import Search, greedy_decode
from transformer.device import cpu_info, device_name, synchronize
from transformer.distributed import Process
from transformer.layers import PositionalEncoding
from transformer.loss import loss_sum
from transformer.model import Transformer
from transformer.optimization import build_optimizer, train_step
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, pad


def machine(device: torch.device) -> dict:
    """What every report says about where it ran: the device, its name (and threads on a CPU), the CPU, torch."""
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return {
        "device": device.type,
        "machine": device_name(device) + threads,
        "cpu": cpu_info(),
        "torch": torch.__version__,
    }


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of a large square matmul: the practical peak of this device for that dtype."""
    size = size if device.type == "cpu" else 8192  # a GPU needs a large product to reach its peak
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b  # warm-up
    synchronize(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(1 if device.type == "cpu" else 10):
            a @ b
            runs += 1
        synchronize(device)
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
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1), tgt_in.device, torch.bool)
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
        prefix = torch.full((src.size(0), 1), BOS_ID, dtype=torch.long, device=src.device)
        for _ in range(steps):
            causal = nn.Transformer.generate_square_subsequent_mask(prefix.size(1), src.device, torch.bool)
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
    model: nn.Module, batches: list[Batch], flops: list[float], warmup: int, bf16: bool, config: Config,
    device: torch.device,
) -> TrainResult:  # fmt: skip
    """Training steps as training makes them (`train_step`: forward, loss, backward, clipping, Adam) over `batches`
    on `device`, each batch copied there as training copies it; the first `warmup` are not timed."""
    model.to(device).train()
    optimizer, process = build_optimizer(model, config.training), Process(0, 1, device)

    def step(batch: Batch) -> None:
        train_step(model, optimizer, [batch], config.training, config.training.lr, bf16, process)

    for batch in batches[:warmup]:
        step(batch)
    timed = batches[warmup:]
    synchronize(device)
    start = time.perf_counter()
    for batch in timed:
        step(batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    tokens = sum(b.src_tokens + b.tgt_tokens for b in timed)
    tgt_tokens = sum(b.tgt_tokens for b in timed)
    return TrainResult(tokens / seconds, tgt_tokens / seconds, 3 * sum(flops[warmup:]) / seconds / 1e9)


def training_batches(data: Encoded, config: Config, vocab: int, count: int) -> tuple[list[Batch], list[float], float]:
    """The first `count` batches of the training plan, their forward FLOPs, and their padding fraction."""
    plan = batch_plan(data, config.training.batch_tokens, config.training.seed, 0)[:count]
    flops = [forward_flops(config, vocab, data.src_lens[b].tolist(), data.tgt_lens[b].tolist()) for b in plan]
    return [collate(data, b) for b in plan], flops, padding_fraction(data, plan)


def time_decoding(
    decode: Callable[[torch.Tensor], list[list[int]]], sources: list[list[int]], batch_size: int, device: torch.device
):
    """Sentences/s and output tokens/s of `decode` over the sources, sorted by length, in batches (the outputs come
    back to the host as lists: the time includes the device's work)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    produced = 0
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        src = pad([sources[j] for j in order[i : i + batch_size]]).to(device)
        produced += sum(len(h) + 1 for h in decode(src))
    seconds = time.perf_counter() - start
    return len(sources) / seconds, produced / seconds


def time_fixed_length(model: Transformer, src: torch.Tensor, length: int, use_cache: bool) -> float:
    """Seconds per sentence to generate exactly `length` pieces (end-of-sentence forbidden until then)."""
    start = time.perf_counter()
    greedy_decode(model, src, Search(max_len_a=0, max_len_b=length, min_len=length, use_cache=use_cache))
    return (time.perf_counter() - start) / src.size(0)


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak resident memory, or on a GPU the most its tensors took there."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- where a step's time goes ------------------------------------------------------------------------------------

MATMUL = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmm_", "aten::_addmm_activation"}
REGIONS = ("data", "optimizer", "loss")  # record_function regions (and the loss's autograd Function) by name


def category(event) -> str:  # noqa: ANN001 (a torch.autograd.profiler FunctionEvent)
    """matmul, attention, loss, optimizer, data or elementwise (everything else: copies, adds, norms, dropout …)
    for one profiled operation: its own name first, then the region it ran in."""
    name = event.name
    if name in MATMUL:
        return "matmul"
    if "scaled_dot_product" in name or name in ("aten::_softmax", "aten::_softmax_backward_data"):
        return "attention"
    while event is not None:
        for region in REGIONS:
            if event.name == region or (region == "loss" and event.name.startswith("ChunkedProjectionLoss")):
                return region
        if "scaled_dot_product" in event.name:
            return "attention"
        event = event.cpu_parent
    return "elementwise"


def profile_split(run: Callable[[], None], steps: int, device: torch.device) -> dict[str, float]:
    """Milliseconds per call of `run` in each category, and `other`: wall time no operation accounts for (Python,
    the autograd engine, waiting). One untimed call first."""
    run()
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as profiler:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            run()
        synchronize(device)
        wall = time.perf_counter() - start
    split = dict.fromkeys(("matmul", "attention", "elementwise", "loss", "optimizer", "data"), 0.0)
    for event in profiler.events():
        split[category(event)] += event.self_cpu_time_total / 1e3 / steps  # µs → ms per call
    split["other"] = max(1e3 * wall / steps - sum(split.values()), 0.0)
    return split


def profile_training(model: Transformer, data: Encoded, plan: list, config: Config, bf16: bool,
                     device: torch.device, steps: int = 5) -> dict[str, float]:  # fmt: skip
    """Split training steps over the first batches of `plan`: what a training step of this config costs where."""
    model.to(device).train()
    optimizer, process, batches = build_optimizer(model, config.training), Process(0, 1, device), iter(plan * 2)

    def step() -> None:
        with record_function("data"):
            batch = collate(data, next(batches)).to(device)
        train_step(model, optimizer, [batch], config.training, config.training.lr, bf16, process)

    return profile_split(step, steps, device)


def profile_decoding(model: Transformer, src: torch.Tensor, search: Search, device: torch.device) -> dict[str, float]:
    """Split a greedy translation of the batch `src`: what decoding costs where."""
    model.to(device).eval()
    return profile_split(lambda: greedy_decode(model, src.to(device), search), 3, device)
