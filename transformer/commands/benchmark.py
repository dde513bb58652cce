"""Benchmark training and decoding on a config's real batches, beside torch.nn.Transformer of the same shape.

    mini-transformer benchmark --config configs/multi30k_en_fr.yaml --checkpoint runs/multi30k_en_fr --json bench.json

Every figure comes with the same figure for the baseline, measured in the same run, so ratios survive a noisy
machine. Model FLOPs are counted by hand (see `forward_flops`), on real tokens only: padding is waste, not work.
With --checkpoint, decoding uses the trained model (so outputs stop where a real model stops); without it, an
untrained model of the same shape, which usually runs to the length limit. The JSON records the CPU model, its
flags and the torch version beside the figures.

    mini-transformer benchmark --config configs/multi30k_en_fr.yaml --checkpoint runs/multi30k_en_fr --inference

translates the test split only, text in and text out at batch 64, greedy and beam 5: ours, and through CTranslate2
(the model exported as float32 and int8) when the deploy extra is installed; seconds, sentences/s and BLEU.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from transformer.checkpoint import read_checkpoint
from transformer.config import Config, load_config
from transformer.data import (
    Batch,
    Encoded,
    batch_plan,
    collate,
    encode_batch,
    encode_pairs,
    padding_fraction,
    read_split,
)
from transformer.decoding import beam_search, greedy_decode
from transformer.device import (
    autocast,
    cpu_info,
    device_name,
    resolve_device,
    synchronize,
    tune_cpu_allocator,
    use_bf16,
)
from transformer.errors import ToolkitError
from transformer.layers import PositionalEncoding
from transformer.loss import loss_sum
from transformer.metrics import score
from transformer.model import Transformer
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, pad, until_eos
from transformer.tokenizer import Tokenizer
from transformer.translator import Translator


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
    model: nn.Module,
    batches: list[Batch],
    flops: list[float],
    warmup: int,
    bf16: bool,
    label_smoothing: float,
    device: torch.device,
) -> TrainResult:
    """Full training steps (forward, loss, backward, Adam) over `batches` on `device`, each batch copied there as
    training copies it; the first `warmup` are not timed."""
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)

    def step(batch: Batch) -> None:
        batch = batch.to(device)
        with autocast(device, bf16):
            loss = model(batch.src, batch.tgt_in, batch.tgt_out, label_smoothing)  # summed over target tokens
        (loss / batch.tgt_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

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
    greedy_decode(model, src, max_len_a=0, max_len_b=length, use_cache=use_cache, min_len=length)
    return (time.perf_counter() - start) / src.size(0)


def peak_memory_mb(device: torch.device) -> float:
    """The process's peak resident memory, or on a GPU the most its tensors took there."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def our_greedy(model: Transformer, config: Config, use_cache: bool) -> Callable[[torch.Tensor], list[list[int]]]:
    d = config.decoding
    return lambda src: greedy_decode(model, src, d.max_len_a, d.max_len_b, use_cache=use_cache)


def our_beam(model: Transformer, config: Config, beam_size: int) -> Callable[[torch.Tensor], list[list[int]]]:
    d = config.decoding
    return lambda src: [
        hyps[0].ids for hyps in beam_search(model, src, beam_size, d.length_penalty, 1, d.max_len_a, d.max_len_b)
    ]


def baseline_greedy(model: BaselineTransformer, config: Config) -> Callable[[torch.Tensor], list[list[int]]]:
    d = config.decoding

    def decode(src: torch.Tensor) -> list[list[int]]:
        steps = int((src != PAD_ID).sum(1).max() * d.max_len_a + d.max_len_b)
        rows = model.greedy(src, steps)[:, 1:].tolist()
        return [until_eos(r) for r in rows]

    return decode


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", help="trained run or checkpoint: its tokenizer and, for decoding, its model")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before them")
    parser.add_argument("--single", type=int, default=100, help="dev sentences decoded one at a time")
    parser.add_argument("--no-bf16", action="store_true", help="skip bf16 training (also skipped without native bf16)")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--inference", action="store_true", help="only translate the test split: see below")
    parser.add_argument("--repeats", type=int, default=3, help="with --inference: timed passes, the median is kept")
    parser.add_argument("--alpha", type=float, default=0.6, help="with --inference: our beam's GNMT length penalty")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: the GPU if any")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    device = resolve_device(args.device)
    torch.set_num_threads(config.training.threads or torch.get_num_threads())
    tune_cpu_allocator()
    if args.inference:
        if not args.checkpoint:
            raise ToolkitError("--inference needs --checkpoint (a trained model to translate with)")
        report = inference_report(config, args.checkpoint, args.repeats, args.alpha, device)
        print(format_inference(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return 0
    report: dict = {
        "device": device.type,
        "machine": f"{device_name(device)}" + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""),
        "cpu": cpu_info(),
        "torch": torch.__version__,
        "native_bf16": use_bf16("auto", device),
    }

    # Without native bf16 a bf16 matmul is emulated (here ~170x slower than fp32): measure it small, train in fp32 only.
    bf16_size = 2048 if report["native_bf16"] else 256
    report["peak_gflops"] = {
        "fp32": matmul_peak(torch.float32, device),
        "bf16": matmul_peak(torch.bfloat16, device, size=bf16_size),
    }
    checkpoint = read_checkpoint(args.checkpoint) if args.checkpoint else None
    train_pairs = read_split(config.data, "train")
    if checkpoint is not None:
        tokenizer = checkpoint.tokenizer
    else:
        tokenizer = Tokenizer.train([*train_pairs.src, *train_pairs.tgt], config.tokenizer)
    vocab = tokenizer.vocab_size
    data = encode_pairs(train_pairs, tokenizer, config.data.max_len)
    batches, flops, padding = training_batches(data, config, vocab, args.warmup + args.steps)
    report["padding_fraction"] = padding
    report["forward_gflop_per_tgt_token"] = sum(flops) / sum(b.tgt_tokens for b in batches) / 1e9

    training = {}
    precisions = ["fp32"] if args.no_bf16 or not report["native_bf16"] else ["fp32", "bf16"]
    for precision in precisions:
        for name, build in (("ours", Transformer), ("torch.nn.Transformer", BaselineTransformer)):
            torch.manual_seed(0)
            model = build(config.model if name == "ours" else config, vocab)
            result = time_training(
                model, batches, flops, args.warmup, precision == "bf16", config.training.label_smoothing, device
            )
            peak_fraction = result.gflops / report["peak_gflops"][precision]
            training[f"{name} {precision}"] = vars(result) | {"peak_fraction": peak_fraction}
            print(f"train {name:22s} {precision}: {result.tgt_tokens_per_s:8.0f} target tokens/s", file=sys.stderr)
    report["training"] = training

    torch.manual_seed(0)
    model = checkpoint.build_model() if checkpoint is not None else Transformer(config.model, vocab)
    model.to(device).eval()
    baseline = BaselineTransformer(config, vocab).to(device).eval()
    dev, test = (encode_batch(vars(read_split(config.data, role)), tokenizer)["src"] for role in ("dev", "test"))
    size = config.decoding.batch_size
    decoding = {}
    runs = [
        (f"ours, cache, batch {size}", our_greedy(model, config, True), dev, size),
        (f"ours, no cache, batch {size}", our_greedy(model, config, False), dev, size),
        ("ours, cache, one at a time", our_greedy(model, config, True), dev[: args.single], 1),
        ("ours, no cache, one at a time", our_greedy(model, config, False), dev[: args.single], 1),
        (f"torch.nn.Transformer, batch {size}", baseline_greedy(baseline, config), dev, size),
        ("torch.nn.Transformer, one at a time", baseline_greedy(baseline, config), dev[: args.single], 1),
        (f"ours, cache, batch {size}, test split", our_greedy(model, config, True), test, size),
        (f"ours, beam 5, batch {size}, test split", our_beam(model, config, 5), test, size),
    ]
    if size != 64:  # also the batch size most toolkits default to
        runs.append(("ours, cache, batch 64, test split", our_greedy(model, config, True), test, 64))
    for name, decode, sources, batch_size in runs:
        sentences_s, tokens_s = time_decoding(decode, sources, batch_size, device)
        decoding[name] = {"sentences_per_s": sentences_s, "tokens_per_s": tokens_s, "sentences": len(sources)}
        print(f"decode {name:34s}: {sentences_s:7.1f} sentences/s", file=sys.stderr)
    report["decoding"] = decoding

    src = pad([dev[len(dev) // 2]]).to(device)  # (1, src_len)
    report["seconds_per_sentence_by_length"] = {
        str(length): {
            "cache": min(time_fixed_length(model, src, length, True) for _ in range(3)),
            "no_cache": min(time_fixed_length(model, src, length, False) for _ in range(3)),
        }
        for length in (10, 20, 40, 80)
    }
    report["peak_memory_mb"] = peak_memory_mb(device)

    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def inference_report(config: Config, checkpoint: str, repeats: int, alpha: float, device: torch.device) -> dict:
    """Ours against CTranslate2 (float32 and int8, when installed) on the test split, text in and text out, the same
    threads. Ours is timed first, before CTranslate2 is loaded: once CTranslate2 has run in a process, torch in that
    process runs about 30% slower (measured: our beam 5 12.0 s before, 16.0 s after), so interleaving them is unfair.
    Beams use a length penalty: ours GNMT's with `alpha`, CTranslate2 its own default (log-probability / length)."""
    test = read_split(config.data, "test")
    threads = torch.get_num_threads()
    ours = Translator.from_checkpoint(checkpoint, device=device.type)
    ours.decoding.batch_size = 64
    seconds: dict[str, list[float]] = {}
    outputs: dict[str, list[str]] = {}

    def time_passes(engines: dict[str, Callable[[list[str]], list[str]]]) -> None:
        for _ in range(repeats):  # engines alternate within each pass: the machine's drift hits them alike
            for name, translate in engines.items():
                start = time.perf_counter()
                outputs[name] = translate(test.src)
                seconds.setdefault(name, []).append(time.perf_counter() - start)

    time_passes({"ours, greedy": ours.translate, "ours, beam 5": ours.with_search(5, alpha).translate})
    try:
        from transformer.deploy import CTranslate2Translator, export_ctranslate2

        exported, engines = Path(tempfile.mkdtemp(prefix="ct2-")), {}
        for quantization in ("float32", "int8"):
            model_dir = export_ctranslate2(checkpoint, exported / quantization, quantization)
            for beam in (1, 5):
                penalty = 0.0 if beam == 1 else 1.0
                engine = CTranslate2Translator(
                    model_dir, beam, batch_size=64, threads=threads, length_penalty=penalty, device=device.type
                )
                engines[f"CTranslate2 {quantization}, {'greedy' if beam == 1 else 'beam 5'}"] = engine.translate
        time_passes(engines)
    except (ToolkitError, RuntimeError, ValueError) as error:  # not installed, or built without this device
        print(f"CTranslate2 skipped: {error}", file=sys.stderr)
    rows = {}
    for name in seconds:
        median = statistics.median(seconds[name])
        bleu = score(outputs[name], test.tgt).bleu
        rows[name] = {"seconds": median, "sentences_per_s": len(test.src) / median, "bleu": bleu}
        rows[name]["all_seconds"] = seconds[name]
        print(
            f"{name:32s}: {median:6.2f} s, {len(test.src) / median:7.1f} sentences/s, BLEU {bleu:.2f}", file=sys.stderr
        )
    machine = device_name(device) + (f", {threads} threads" if device.type == "cpu" else "")
    return {"device": device.type, "machine": machine, "cpu": cpu_info(), "torch": torch.__version__,
            "sentences": len(test.src), "batch_size": 64, "repeats": repeats, "engines": rows}  # fmt: skip


def format_inference(r: dict) -> str:
    lines = [
        f"device: {r['device']}, {r['machine']}, torch {r['torch']}; test split, {r['sentences']} sentences, batch 64, "
        f"median of {r['repeats']} passes",
        "",
        "| engine | seconds | sentences/s | BLEU |",
        "|---|---:|---:|---:|",
    ]
    for name, e in r["engines"].items():
        lines.append(f"| {name} | {e['seconds']:.2f} | {e['sentences_per_s']:,.1f} | {e['bleu']:.2f} |")
    return "\n".join(lines)


def format_report(r: dict) -> str:
    peak = r["peak_gflops"]
    lines = [
        f"device: {r['device']}, {r['machine']}, torch {r['torch']}, native bf16: {r['native_bf16']}",
        "cpu flags: " + ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if r["cpu"][f]),
        f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s",
        f"padding: {100 * r['padding_fraction']:.1f}% of token slots; "
        f"model: {r['forward_gflop_per_tgt_token'] * 1e3:.1f} MFLOP forward per target token",
        "",
        "| training | tokens/s (src+tgt) | target tokens/s | model GFLOP/s | of peak |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, t in r["training"].items():
        lines.append(
            f"| {name} | {t['tokens_per_s']:,.0f} | {t['tgt_tokens_per_s']:,.0f} | {t['gflops']:.0f} | "
            f"{100 * t['peak_fraction']:.0f}% |"
        )
    lines += ["", "| greedy decoding | sentences/s | tokens/s |", "|---|---:|---:|"]
    for name, d in r["decoding"].items():
        rates = f"{d['sentences_per_s']:,.1f} | {d['tokens_per_s']:,.0f}"
        lines.append(f"| {name} ({d['sentences']} sentences) | {rates} |")
    lines += ["", "| output length | ms/sentence, cache | ms/sentence, no cache |", "|---:|---:|---:|"]
    for length, t in r["seconds_per_sentence_by_length"].items():
        lines.append(f"| {length} | {1e3 * t['cache']:.1f} | {1e3 * t['no_cache']:.1f} |")
    where = "GPU memory allocated" if r["device"] == "cuda" else "resident memory"
    lines.append(f"\npeak {where}: {r['peak_memory_mb']:,.0f} MB")
    return "\n".join(lines)
