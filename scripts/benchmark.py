"""Benchmark training and decoding on a config's real batches, beside torch.nn.Transformer of the same shape.

    python scripts/benchmark.py --config configs/multi30k_en_fr.yaml --checkpoint runs/multi30k_en_fr --json bench.json

With --checkpoint, decoding uses the trained model (so outputs stop where a real model stops); without it, an
untrained model of the same shape, which usually runs to the length limit.
"""

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import torch

from transformer import benchmark as bench
from transformer.checkpoint import load_checkpoint, tensor_to_tokenizer
from transformer.cli import run
from transformer.config import load_config
from transformer.data import encode_pairs, read_split
from transformer.device import cpu_has_bf16, tune_cpu_allocator
from transformer.model import Transformer
from transformer.tokenizer import Tokenizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", help="trained run or checkpoint: its tokenizer and, for decoding, its model")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before them")
    parser.add_argument("--single", type=int, default=100, help="dev sentences decoded one at a time")
    parser.add_argument("--no-bf16", action="store_true", help="skip bf16 training (also skipped without native bf16)")
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()
    config = load_config(args.config)
    torch.set_num_threads(config.training.threads or torch.get_num_threads())
    tune_cpu_allocator()
    report: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "native_bf16": cpu_has_bf16(),
    }

    # Without native bf16 a bf16 matmul is emulated (here ~170x slower than fp32): measure it small, train in fp32 only.
    bf16_size = 2048 if report["native_bf16"] else 256
    report["peak_gflops"] = {
        "fp32": bench.matmul_peak(torch.float32),
        "bf16": bench.matmul_peak(torch.bfloat16, size=bf16_size),
    }
    state = load_checkpoint(args.checkpoint) if args.checkpoint else None
    train_pairs = read_split(config.data, "train")
    if state is not None:
        tokenizer = Tokenizer(tensor_to_tokenizer(state["tokenizer"]))
    else:
        tokenizer = Tokenizer.train([*train_pairs.src, *train_pairs.tgt], config.tokenizer)
    vocab = tokenizer.vocab_size
    data = encode_pairs(train_pairs, tokenizer, config.data.max_len)
    batches, flops, padding = bench.training_batches(data, config, vocab, args.warmup + args.steps)
    report["padding_fraction"] = padding
    report["forward_gflop_per_tgt_token"] = sum(flops) / sum(b.tgt_tokens for b in batches) / 1e9

    training = {}
    precisions = ["fp32"] if args.no_bf16 or not report["native_bf16"] else ["fp32", "bf16"]
    for precision in precisions:
        for name, build in (("ours", Transformer), ("torch.nn.Transformer", bench.BaselineTransformer)):
            torch.manual_seed(0)
            model = build(config.model if name == "ours" else config, vocab)
            result = bench.time_training(
                model, batches, flops, args.warmup, precision == "bf16", config.training.label_smoothing
            )
            peak_fraction = result.gflops / report["peak_gflops"][precision]
            training[f"{name} {precision}"] = vars(result) | {"peak_fraction": peak_fraction}
            print(f"train {name:22s} {precision}: {result.tgt_tokens_per_s:8.0f} target tokens/s", file=sys.stderr)
    report["training"] = training

    torch.manual_seed(0)
    model = Transformer(config.model, vocab)
    if state is not None:
        model.load_state_dict(state["model"])
    model.eval()
    baseline = bench.BaselineTransformer(config, vocab).eval()
    dev = encode_pairs(read_split(config.data, "dev"), tokenizer).src
    test = encode_pairs(read_split(config.data, "test"), tokenizer).src
    size = config.decoding.batch_size
    decoding = {}
    runs = [
        (f"ours, cache, batch {size}", bench.our_greedy(model, config, True), dev, size),
        (f"ours, no cache, batch {size}", bench.our_greedy(model, config, False), dev, size),
        ("ours, cache, one at a time", bench.our_greedy(model, config, True), dev[: args.single], 1),
        ("ours, no cache, one at a time", bench.our_greedy(model, config, False), dev[: args.single], 1),
        (f"torch.nn.Transformer, batch {size}", bench.baseline_greedy(baseline, config), dev, size),
        ("torch.nn.Transformer, one at a time", bench.baseline_greedy(baseline, config), dev[: args.single], 1),
        (f"ours, cache, batch {size}, test split", bench.our_greedy(model, config, True), test, size),
        ("ours, cache, batch 64, test split", bench.our_greedy(model, config, True), test, 64),
    ]
    for name, decode, sources, batch_size in runs:
        sentences_s, tokens_s = bench.time_decoding(decode, sources, batch_size)
        decoding[name] = {"sentences_per_s": sentences_s, "tokens_per_s": tokens_s, "sentences": len(sources)}
        print(f"decode {name:34s}: {sentences_s:7.1f} sentences/s", file=sys.stderr)
    report["decoding"] = decoding

    src = bench.pad([dev[len(dev) // 2]])
    report["seconds_per_sentence_by_length"] = {
        str(length): {
            "cache": min(bench.time_fixed_length(model, src, length, True) for _ in range(3)),
            "no_cache": min(bench.time_fixed_length(model, src, length, False) for _ in range(3)),
        }
        for length in (10, 20, 40, 80)
    }
    report["peak_memory_mb"] = bench.peak_memory_mb()

    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def format_report(r: dict) -> str:
    peak = r["peak_gflops"]
    lines = [
        f"machine: {r['machine']}, torch {r['torch']}, native bf16: {r['native_bf16']}",
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
    lines.append(f"\npeak resident memory: {r['peak_memory_mb']:,.0f} MB")
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
