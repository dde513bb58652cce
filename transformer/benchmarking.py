"""Measuring speed: the matmul peak, model FLOPs, timed training steps and decoding, a profile of where a step's time
goes, and `torch.nn.Transformer` of the same shape as the baseline. `mini-transformer benchmark` reports them."""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.profiler import record_function

from transformer.checkpoint import read_checkpoint
from transformer.config import Config, ModelConfig
from transformer.corpora import read_split
from transformer.data import Batch, Encoded, batch_plan, collate, encode_batch, encode_pairs, padding_fraction
from transformer.decoding import Search, beam_search, greedy_decode
from transformer.device import cpu_info, device_name, native_bf16, synchronize
from transformer.distributed import Process
from transformer.layers import PositionalEncoding
from transformer.loss import loss_sum
from transformer.model import Transformer
from transformer.optimization import build_optimizer, train_step
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, pad, until_eos
from transformer.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def machine(device: torch.device) -> dict:
    """What every report says about where it ran: the device, its name (and threads on a CPU), the CPU, torch."""
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    return {
        "device": device.type,
        "machine": device_name(device) + threads,
        "cpu": cpu_info(),
        "torch": torch.__version__,
    }


def timed(run: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """What `run()` returns, and the seconds it took, the work it queued on `device` included."""
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return result, time.perf_counter() - start


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


def forward_flops(model: ModelConfig, vocab: int, batch: Batch) -> int:
    """FLOPs of one forward pass over `batch`: 2 per multiply-add of every matmul, embeddings free, real tokens only
    (padding is waste, not work). Attention scores and weighted sums count each sentence's full (len × len) square,
    causal or not."""
    d, ff = model.d_model, model.d_ff
    flops = 0
    src_lens, tgt_lens = ((ids != PAD_ID).sum(1).tolist() for ids in (batch.src, batch.tgt_out))
    for s, t in zip(src_lens, tgt_lens, strict=True):  # one sentence's source and target lengths
        encoder = 2 * (4 * d * d * s + 2 * d * ff * s + 2 * d * s * s)
        self_attention = 4 * d * d * t + 2 * d * t * t  # q, k, v, out projections; scores and weighted sum
        cross_attention = 2 * d * d * t + 2 * d * d * s + 2 * d * s * t  # q, out on the target; k, v on the source
        decoder = 2 * (self_attention + cross_attention + 2 * d * ff * t)
        flops += model.encoder_layers * encoder + model.decoder_layers * decoder + 2 * d * vocab * t
    return flops


class BaselineTransformer(nn.Module):
    """What a user would pick instead: `torch.nn.Transformer` with the same shape, embeddings and tied output."""

    def __init__(self, config: ModelConfig, vocab: int) -> None:
        super().__init__()
        self.d_model = config.d_model
        self.embedding = nn.Embedding(vocab, config.d_model, padding_idx=PAD_ID)
        self.positions = PositionalEncoding(config.d_model, config.max_positions)
        self.core = nn.Transformer(
            config.d_model, config.heads, config.encoder_layers, config.decoder_layers, config.d_ff, config.dropout,
            batch_first=True, norm_first=config.norm == "pre",
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
    def greedy(self, src: torch.Tensor, search: Search) -> list[list[int]]:
        """`greedy_decode` without a key/value cache: every step runs the decoder over the whole prefix."""
        steps = int((src != PAD_ID).sum(1).max() * search.max_len_a + search.max_len_b)
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
        return [until_eos(row) for row in prefix[:, 1:].tolist()]


def training_step(model: nn.Module, config: Config, bf16: bool, device: torch.device) -> Callable[[Batch], Any]:
    """A training step on one batch as training makes it (`train_step`: forward, loss, backward, clipping, Adam)."""
    model.to(device).train()
    optimizer, process = build_optimizer(model, config.training), Process(0, 1, device)
    return lambda batch: train_step(model, optimizer, [batch], config.training, config.training.lr, bf16, process)


def time_training(
    model: nn.Module, batches: list[Batch], warmup: int, bf16: bool, config: Config, device: torch.device
) -> dict[str, float]:
    """Tokens/s (source + target, and target only) and model GFLOP/s (3 × forward) of training steps over `batches`
    on `device`, each batch copied there as training copies it; the first `warmup` are not timed."""
    step = training_step(model, config, bf16, device)
    for batch in batches[:warmup]:
        step(batch)
    measured = batches[warmup:]
    _, seconds = timed(lambda: [step(batch) for batch in measured], device)
    flops = 3 * sum(forward_flops(config.model, model.embedding.num_embeddings, b) for b in measured)
    return {
        "tokens_per_s": sum(b.src_tokens + b.tgt_tokens for b in measured) / seconds,
        "tgt_tokens_per_s": sum(b.tgt_tokens for b in measured) / seconds,
        "gflops": flops / seconds / 1e9,
    }


def time_decoding(
    decode: Callable[[torch.Tensor], list[list[int]]], sources: list[list[int]], batch_size: int, device: torch.device
) -> dict[str, float]:
    """Sentences/s and output tokens/s (EOS included) of `decode` over the sources, sorted by length, in batches (the
    outputs come back to the host as lists: the time includes the device's work)."""
    ordered = sorted(sources, key=len)
    batches = [pad(ordered[i : i + batch_size]) for i in range(0, len(ordered), batch_size)]
    outputs, seconds = timed(lambda: [out for src in batches for out in decode(src.to(device))], device)
    tokens = sum(len(out) + 1 for out in outputs)
    return {"sentences_per_s": len(sources) / seconds, "tokens_per_s": tokens / seconds, "sentences": len(sources)}


def time_fixed_length(model: Transformer, src: torch.Tensor, length: int, use_cache: bool) -> float:
    """Seconds per sentence to generate exactly `length` pieces (end-of-sentence forbidden until then), best of 3."""
    search = Search(max_len_a=0, max_len_b=length, min_len=length, use_cache=use_cache)
    return min(timed(lambda: greedy_decode(model, src, search), src.device)[1] for _ in range(3)) / src.size(0)


def decoding_report(
    model: Transformer, config: Config, dev: list[list[int]], test: list[list[int]], single: int, device: torch.device
) -> dict:
    """Greedy (cached or not, batched or one at a time) and beam decoding, beside the baseline's greedy; and how the
    time of one sentence grows with its length."""
    baseline = BaselineTransformer(config.model, model.embedding.num_embeddings).to(device).eval()
    search, size = Search.of(config.decoding), config.decoding.batch_size
    cached = partial(greedy_decode, model, search=search)
    uncached = partial(greedy_decode, model, search=replace(search, use_cache=False))
    recomputed = partial(baseline.greedy, search=search)

    def beam(src: torch.Tensor) -> list[list[int]]:
        return [hyps[0].ids for hyps in beam_search(model, src, 5, config.decoding.length_penalty, search=search)]

    runs = {
        f"ours, cache, batch {size}": (cached, dev, size),
        f"ours, no cache, batch {size}": (uncached, dev, size),
        "ours, cache, one at a time": (cached, dev[:single], 1),
        "ours, no cache, one at a time": (uncached, dev[:single], 1),
        f"torch.nn.Transformer, batch {size}": (recomputed, dev, size),
        "torch.nn.Transformer, one at a time": (recomputed, dev[:single], 1),
        f"ours, cache, batch {size}, test split": (cached, test, size),
        f"ours, beam 5, batch {size}, test split": (beam, test, size),
        "ours, cache, batch 64, test split": (cached, test, 64),  # most toolkits' default (one row if it is ours)
    }
    decoding = {}
    for name, (decode, sources, batch_size) in runs.items():
        decoding[name] = time_decoding(decode, sources, batch_size, device)
        log.info("decode %-34s: %7.1f sentences/s", name, decoding[name]["sentences_per_s"])
    src = pad([dev[len(dev) // 2]]).to(device)  # (1, src_len)
    by_length = {
        str(n): {"cache": time_fixed_length(model, src, n, True), "no_cache": time_fixed_length(model, src, n, False)}
        for n in (10, 20, 40, 80)
    }
    return {"decoding": decoding, "seconds_per_sentence_by_length": by_length}


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
    if event.name in MATMUL:
        return "matmul"
    if event.name in ("aten::_softmax", "aten::_softmax_backward_data"):
        return "attention"
    while event is not None:
        if "scaled_dot_product" in event.name:
            return "attention"
        for region in REGIONS:
            if event.name == region or (region == "loss" and event.name.startswith("ChunkedProjectionLoss")):
                return region
        event = event.cpu_parent
    return "elementwise"


def profile(run: Callable[[], Any], steps: int, device: torch.device) -> dict[str, float]:
    """Milliseconds per call of `run` in each category, and `other`: wall time no operation accounts for (Python,
    the autograd engine, waiting). One untimed call first."""
    run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        _, wall = timed(lambda: [run() for _ in range(steps)], device)
    split = dict.fromkeys(("matmul", "attention", "elementwise", "loss", "optimizer", "data"), 0.0)
    for event in profiler.events():
        split[category(event)] += event.self_cpu_time_total / 1e3 / steps  # µs → ms per call
    split["other"] = max(1e3 * wall / steps - sum(split.values()), 0.0)
    return split


def profile_report(
    model: Transformer, data: Encoded, plan: list, dev: list[list[int]], config: Config, device: torch.device
) -> dict[str, dict[str, float]]:
    """`profile` of fp32 training steps of a new model over the first batches of `plan` (each collated as the step's
    `data`), and of `model` translating a batch of `dev` greedily."""
    torch.manual_seed(0)
    step = training_step(Transformer(config.model, model.embedding.num_embeddings), config, False, device)
    batches = iter(plan * 2)

    def collate_and_step() -> None:
        with record_function("data"):
            batch = collate(data, next(batches)).to(device)
        step(batch)

    src = pad(dev[: config.decoding.batch_size])
    return {
        "training step": profile(collate_and_step, 5, device),
        f"greedy decoding, batch {src.size(0)}": profile(
            lambda: greedy_decode(model, src.to(device), Search.of(config.decoding)), 3, device
        ),
    }


def speed_report(
    config: Config, checkpoint: str | None, steps: int, warmup: int, single: int, bf16: bool, profiling: bool,
    device: torch.device,
) -> dict:  # fmt: skip
    """Training and decoding speed of ours and of the baseline, in one run on the config's real batches: `steps`
    timed training steps after `warmup` untimed ones, in fp32 (and bf16 with `bf16`, where it is native), `single`
    dev sentences decoded one at a time; with `profiling`, where a training step and a decoding batch spend it."""
    report = {**machine(device), "native_bf16": native_bf16(device)}
    # Without native bf16 a bf16 matmul is emulated (here ~170x slower than fp32): measure it small, train in fp32 only.
    bf16_size = 2048 if report["native_bf16"] else 256
    peak = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device, size=bf16_size)}
    report["peak_gflops"] = peak
    trained = read_checkpoint(checkpoint) if checkpoint else None
    train_pairs = read_split(config.data, "train")
    tokenizer = (
        trained.tokenizer if trained else Tokenizer.train([*train_pairs.src, *train_pairs.tgt], config.tokenizer)
    )
    vocab = tokenizer.vocab_size
    data = encode_pairs(train_pairs, tokenizer, config.data.max_len)
    plan = batch_plan(data, config.training.batch_tokens, config.training.seed, 0)[: warmup + steps]
    batches = [collate(data, b) for b in plan]
    report["padding_fraction"] = padding_fraction(data, plan)
    flops = sum(forward_flops(config.model, vocab, b) for b in batches)
    report["forward_gflop_per_tgt_token"] = flops / sum(b.tgt_tokens for b in batches) / 1e9
    report["training"] = {}
    for precision in ["fp32", "bf16"] if bf16 and report["native_bf16"] else ["fp32"]:
        for name, build in (("ours", Transformer), ("torch.nn.Transformer", BaselineTransformer)):
            torch.manual_seed(0)
            result = time_training(build(config.model, vocab), batches, warmup, precision == "bf16", config, device)
            report["training"][f"{name} {precision}"] = result | {"peak_fraction": result["gflops"] / peak[precision]}
            log.info("train %-22s %s: %8.0f target tokens/s", name, precision, result["tgt_tokens_per_s"])
    dev, test = (encode_batch(vars(read_split(config.data, role)), tokenizer)["src"] for role in ("dev", "test"))
    torch.manual_seed(0)
    model = (trained.build_model() if trained else Transformer(config.model, vocab)).to(device).eval()
    report |= decoding_report(model, config, dev, test, single, device)
    if profiling:
        report["profile"] = profile_report(model, data, plan, dev, config, device)
    report["peak_memory_mb"] = peak_memory_mb(device)
    return report
