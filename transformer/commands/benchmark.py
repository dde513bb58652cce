"""Benchmark training and decoding on a config's real batches, beside torch.nn.Transformer of the same shape.

    mini-transformer benchmark --config configs/multi30k_en_fr.yaml --checkpoint runs/multi30k_en_fr --json bench.json

Every figure comes with the same figure for the baseline, measured in the same run, so ratios survive a noisy
machine; model FLOPs count real tokens only (padding is waste, not work). With --checkpoint, decoding uses the trained
model (so outputs stop where a real model stops); without it, an untrained model of the same shape, which usually
runs to the length limit. The JSON records the CPU model, its flags and the torch version beside the figures. With
--profile, the report also splits a training step and a greedy decoding batch into matmul, attention, elementwise,
loss, optimizer, data and other time (what no operation accounts for: Python, autograd, waits).

    mini-transformer benchmark --config configs/multi30k_en_fr.yaml --checkpoint runs/multi30k_en_fr --inference

translates the test split only, text in and text out at batch 64, greedy and beam 5: ours, and through CTranslate2
(the model exported as float32 and int8) when the deploy extra is installed; seconds, sentences/s and BLEU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from transformer.benchmarking import machine, speed_report, timed
from transformer.config import Config, load_config
from transformer.corpora import read_split
from transformer.device import resolve_device, tune_cpu_allocator
from transformer.errors import ToolkitError
from transformer.files import atomic_file, check_output_path
from transformer.metrics import score
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
    for option, low in (("steps", 1), ("warmup", 0), ("single", 1), ("repeats", 1)):
        if getattr(args, option) < low:
            raise ToolkitError(f"--{option}: must be >= {low}, got {getattr(args, option)}")
    if args.json:
        check_output_path(args.json, "--json")
    config = load_config(args.config)
    device = resolve_device(args.device)
    torch.set_num_threads(config.training.threads or torch.get_num_threads())
    tune_cpu_allocator()
    if args.inference:
        if not args.checkpoint:
            raise ToolkitError("--inference needs --checkpoint (a trained model to translate with)")
        report = inference_report(config, args.checkpoint, args.repeats, args.alpha, device)
        print(format_inference(report))
    else:
        bf16 = not args.no_bf16
        report = speed_report(config, args.checkpoint, args.steps, args.warmup, args.single, bf16, args.profile, device)
        print(format_report(report))
    if args.json:
        with atomic_file(args.json) as file:
            file.write(json.dumps(report, indent=2).encode())
    return 0


def inference_report(config: Config, checkpoint: str, repeats: int, alpha: float, device: torch.device) -> dict:
    """Ours against CTranslate2 (float32 and int8, when installed) on the test split, text in and text out, the same
    threads. Ours is timed first, before CTranslate2 is loaded: once CTranslate2 has run in a process, torch in that
    process runs about 30% slower (measured: our beam 5 12.0 s before, 16.0 s after), so interleaving them is unfair.
    Beams use a length penalty: ours GNMT's with `alpha`, CTranslate2 its own default (log-probability / length)."""
    test, threads = read_split(config.data, "test"), torch.get_num_threads()
    ours = Translator.from_checkpoint(checkpoint, device=device.type)
    ours.decoding.batch_size = 64
    seconds: dict[str, list[float]] = {}
    outputs: dict[str, list[str]] = {}

    def time_passes(engines: dict[str, Callable[[list[str]], list[str]]]) -> None:
        for _ in range(repeats):  # engines alternate within each pass: the machine's drift hits them alike
            for name, translate in engines.items():
                outputs[name], took = timed(partial(translate, test.src), device)
                seconds.setdefault(name, []).append(took)

    time_passes({"ours, greedy": ours.translate, "ours, beam 5": ours.with_search(5, alpha).translate})
    try:
        from transformer.deploy import CTranslate2Translator, export_ctranslate2

        exported, engines = Path(tempfile.mkdtemp(prefix="ct2-")), {}
        for quantization in ("float32", "int8"):
            model_dir = export_ctranslate2(checkpoint, exported / quantization, quantization)
            for beam, search, penalty in ((1, "greedy", 0.0), (5, "beam 5", 1.0)):
                engine = CTranslate2Translator(
                    model_dir, beam, batch_size=64, threads=threads, length_penalty=penalty, device=device.type
                )
                engines[f"CTranslate2 {quantization}, {search}"] = engine.translate
        time_passes(engines)
    except (ToolkitError, RuntimeError, ValueError) as error:  # not installed, or built without this device
        print(f"CTranslate2 skipped: {error}", file=sys.stderr)
    rows = {}
    for name, times in seconds.items():
        median, bleu = statistics.median(times), score(outputs[name], test.tgt).bleu
        rate = len(test.src) / median
        rows[name] = {"seconds": median, "sentences_per_s": rate, "bleu": bleu, "all_seconds": times}
        print(f"{name:32s}: {median:6.2f} s, {rate:7.1f} sentences/s, BLEU {bleu:.2f}", file=sys.stderr)
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
