"""Benchmark training and decoding on a config's real batches, beside torch.nn.Transformer of the same shape.

    mini-transformer benchmark --config configs/multi30k_en_fr.yaml --checkpoint runs/multi30k_en_fr --json bench.json

Every figure comes with the same figure for the baseline, measured in the same run, so ratios survive a noisy
machine. Model FLOPs are counted by hand (see `forward_flops`), on real tokens only: padding is waste, not work.
With --checkpoint, decoding uses the trained model (so outputs stop where a real model stops); without it, an
untrained model of the same shape, which usually runs to the length limit. The JSON records the CPU model, its
flags and the torch version beside the figures.

    mini-transformer benchmark --config configs/multi30k_en_fr.yaml --checkpoint runs/multi30k_en_fr --inference

translates the test split only, text in and text out at batch 64, greedy and beam 5: ours, and through CTranslate2
(the model exported as float32 and int8) when the deploy extra is installed; seconds, sentences/s and BLEU. With
--profile, the report also splits a training step and a greedy decoding batch into matmul, attention, elementwise,
loss, optimizer and data time (torch.profiler; `other` is what no operation accounts for: Python, autograd, waits).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from transformer.benchmarking import (
    BaselineTransformer,
    machine,
    matmul_peak,
    peak_memory_mb,
    profile_decoding,
    profile_training,
    time_decoding,
    time_fixed_length,
    time_training,
    training_batches,
)
from transformer.checkpoint import read_checkpoint
from transformer.config import Config, load_config
from transformer.corpora import read_split
from transformer.data import batch_plan, encode_batch, encode_pairs
from transformer.decoding import Search, beam_search, greedy_decode
from transformer.device import native_bf16, resolve_device, tune_cpu_allocator
from transformer.errors import ToolkitError
from transformer.metrics import score
from transformer.model import Transformer
from transformer.specials import PAD_ID, pad, until_eos
from transformer.tokenizer import Tokenizer
from transformer.translator import Translator


def parse_args(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", help="trained run or checkpoint: its tokenizer and, for decoding, its model")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before them")
    parser.add_argument("--single", type=int, default=100, help="dev sentences decoded one at a time")
    parser.add_argument("--no-bf16", action="store_true", help="skip bf16 training (also skipped without native bf16)")
    parser.add_argument("--profile", action="store_true", help="also split a training and a decoding step by kind")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--inference", action="store_true", help="only translate the test split: see below")
    parser.add_argument("--repeats", type=int, default=3, help="with --inference: timed passes, the median is kept")
    parser.add_argument("--alpha", type=float, default=0.6, help="with --inference: our beam's GNMT length penalty")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: the GPU if any")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    config = load_config(args.config)
    device = resolve_device(args.device)
    torch.set_num_threads(config.training.threads or torch.get_num_threads())
    tune_cpu_allocator()
    if args.inference:
        if not args.checkpoint:
            raise ToolkitError("--inference needs --checkpoint (a trained model to translate with)")
        report = inference_report(config, args.checkpoint, args.repeats, args.alpha, device)
        text = format_inference(report)
    else:
        report = speed_report(config, args, device)
        text = format_report(report)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def speed_report(config: Config, args: argparse.Namespace, device: torch.device) -> dict:
    """Training and decoding speed of ours and of the baseline, in one run on the config's real batches."""
    report = {**machine(device), "native_bf16": native_bf16(device)}
    # Without native bf16 a bf16 matmul is emulated (here ~170x slower than fp32): measure it small, train in fp32 only.
    bf16_size = 2048 if report["native_bf16"] else 256
    report["peak_gflops"] = {
        "fp32": matmul_peak(torch.float32, device),
        "bf16": matmul_peak(torch.bfloat16, device, size=bf16_size),
    }
    checkpoint = read_checkpoint(args.checkpoint) if args.checkpoint else None
    train_pairs = read_split(config.data, "train")
    tokenizer = (
        checkpoint.tokenizer if checkpoint else Tokenizer.train([*train_pairs.src, *train_pairs.tgt], config.tokenizer)
    )
    vocab = tokenizer.vocab_size
    data = encode_pairs(train_pairs, tokenizer, config.data.max_len)
    batches, flops, padding = training_batches(data, config, vocab, args.warmup + args.steps)
    report["padding_fraction"] = padding
    report["forward_gflop_per_tgt_token"] = sum(flops) / sum(b.tgt_tokens for b in batches) / 1e9
    report["training"] = {}
    precisions = ["fp32"] if args.no_bf16 or not report["native_bf16"] else ["fp32", "bf16"]
    for precision in precisions:
        for name, build in (("ours", Transformer), ("torch.nn.Transformer", BaselineTransformer)):
            torch.manual_seed(0)
            model = build(config.model if name == "ours" else config, vocab)
            result = time_training(model, batches, flops, args.warmup, precision == "bf16", config, device)
            peak_fraction = result.gflops / report["peak_gflops"][precision]
            report["training"][f"{name} {precision}"] = vars(result) | {"peak_fraction": peak_fraction}
            print(f"train {name:22s} {precision}: {result.tgt_tokens_per_s:8.0f} target tokens/s", file=sys.stderr)
    dev, test = (encode_batch(vars(read_split(config.data, role)), tokenizer)["src"] for role in ("dev", "test"))
    torch.manual_seed(0)
    model = (checkpoint.build_model() if checkpoint else Transformer(config.model, vocab)).to(device).eval()
    report |= decoding_report(model, config, dev, test, args.single, device)
    if args.profile:
        torch.manual_seed(0)
        plan = batch_plan(data, config.training.batch_tokens, config.training.seed, 0)[: args.warmup + args.steps]
        src = pad(dev[: config.decoding.batch_size])
        report["profile"] = {
            "training step": profile_training(Transformer(config.model, vocab), data, plan, config, False, device),
            f"greedy decoding, batch {src.size(0)}": profile_decoding(model, src, Search.of(config.decoding), device),
        }
    report["peak_memory_mb"] = peak_memory_mb(device)
    return report


def decoding_report(
    model: Transformer, config: Config, dev: list[list[int]], test: list[list[int]], single: int, device: torch.device
) -> dict:
    """Greedy (cached or not, batched or one at a time) and beam decoding, beside the baseline's greedy."""
    baseline = BaselineTransformer(config, model.embedding.num_embeddings).to(device).eval()
    size = config.decoding.batch_size
    runs = [
        (f"ours, cache, batch {size}", our_greedy(model, config, True), dev, size),
        (f"ours, no cache, batch {size}", our_greedy(model, config, False), dev, size),
        ("ours, cache, one at a time", our_greedy(model, config, True), dev[:single], 1),
        ("ours, no cache, one at a time", our_greedy(model, config, False), dev[:single], 1),
        (f"torch.nn.Transformer, batch {size}", baseline_greedy(baseline, config), dev, size),
        ("torch.nn.Transformer, one at a time", baseline_greedy(baseline, config), dev[:single], 1),
        (f"ours, cache, batch {size}, test split", our_greedy(model, config, True), test, size),
        (f"ours, beam 5, batch {size}, test split", our_beam(model, config, 5), test, size),
    ]
    if size != 64:  # also the batch size most toolkits default to
        runs.append(("ours, cache, batch 64, test split", our_greedy(model, config, True), test, 64))
    decoding = {}
    for name, decode, sources, batch_size in runs:
        sentences_s, tokens_s = time_decoding(decode, sources, batch_size, device)
        decoding[name] = {"sentences_per_s": sentences_s, "tokens_per_s": tokens_s, "sentences": len(sources)}
        print(f"decode {name:34s}: {sentences_s:7.1f} sentences/s", file=sys.stderr)
    src = pad([dev[len(dev) // 2]]).to(device)  # (1, src_len)
    by_length = {
        str(length): {
            "cache": min(time_fixed_length(model, src, length, True) for _ in range(3)),
            "no_cache": min(time_fixed_length(model, src, length, False) for _ in range(3)),
        }
        for length in (10, 20, 40, 80)
    }
    return {"decoding": decoding, "seconds_per_sentence_by_length": by_length}


def our_greedy(model: Transformer, config: Config, use_cache: bool) -> Callable[[torch.Tensor], list[list[int]]]:
    d = config.decoding
    return lambda src: greedy_decode(model, src, Search(d.max_len_a, d.max_len_b, use_cache=use_cache))


def our_beam(model: Transformer, config: Config, beam_size: int) -> Callable[[torch.Tensor], list[list[int]]]:
    d = config.decoding
    return lambda src: [hyps[0].ids for hyps in beam_search(model, src, beam_size, d.length_penalty, 1, Search.of(d))]


def baseline_greedy(model: BaselineTransformer, config: Config) -> Callable[[torch.Tensor], list[list[int]]]:
    d = config.decoding

    def decode(src: torch.Tensor) -> list[list[int]]:
        steps = int((src != PAD_ID).sum(1).max() * d.max_len_a + d.max_len_b)
        rows = model.greedy(src, steps)[:, 1:].tolist()
        return [until_eos(r) for r in rows]

    return decode


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
    return {**machine(device), "sentences": len(test.src), "batch_size": 64, "repeats": repeats, "engines": rows}


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
    for name, split in r.get("profile", {}).items():
        total = sum(split.values())
        lines += ["", f"| {name}: where the time goes | ms | share |", "|---|---:|---:|"]
        lines += [f"| {kind} | {ms:.1f} | {100 * ms / total:.0f}% |" for kind, ms in split.items()]
    where = "GPU memory allocated" if r["device"] == "cuda" else "resident memory"
    lines.append(f"\npeak {where}: {r['peak_memory_mb']:,.0f} MB")
    return "\n".join(lines)
