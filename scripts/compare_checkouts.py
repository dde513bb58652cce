"""Old vs new on this machine: training steps and cached decoder steps of two checkouts, alternating, medians.

    python scripts/compare_checkouts.py OLD_CHECKOUT NEW_CHECKOUT --rounds 3

Each checkout is a directory holding a `transformer/` package (a clone, a `git worktree`, or a copy). Every round runs
each checkout in a fresh process, old then new, so slow drifts of a shared machine hit both; the figures are the
medians over the rounds. The model is the Multi30k shape with an 8,000-piece vocabulary and random weights, trained in
fp32 on four fixed random batches of about 6,000 tokens shaped like Multi30k's (ms per step: forward, loss, backward,
fused Adam), and decoded with the key/value cache at batch 256 for 30 steps, batch 64 for 80 and 1,280 rows (beam 5 over
256 sentences) for 30 (ms for the steps). With --bf16, all of it under bf16 autocast, as `precision: bf16` runs it.
Only the model's public interface is used (`Transformer(ModelConfig, vocab)`, `encode`, `decode`, the training
forward), so checkouts from different commits compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def measure() -> dict[str, float]:
    """Runs inside a checkout (its package first on sys.path): one round of every figure."""
    import torch

    import transformer
    from transformer.config import ModelConfig
    from transformer.layers import DecoderCache
    from transformer.model import Transformer

    checkout, bf16 = os.environ["PYTHONPATH"], os.environ.get("COMPARE_BF16") == "1"
    if not os.path.abspath(transformer.__file__).startswith(checkout + os.sep):
        sys.exit(f"{checkout}: imported {transformer.__file__} instead (no transformer/ package there?)")
    torch.manual_seed(0)
    model = Transformer(ModelConfig(max_positions=256), 8000).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    g = torch.Generator().manual_seed(1)
    batches = []
    for n, src_len, tgt_len in [(190, 14, 16), (160, 17, 19), (230, 12, 13), (120, 22, 25)]:
        src = torch.randint(4, 8000, (n, src_len), generator=g)
        tgt = torch.randint(4, 8000, (n, tgt_len + 1), generator=g)
        src[: n // 3, -2:], tgt[: n // 4, -3:] = 0, 0  # some padding, as real batches have
        batches.append((src, tgt[:, :-1], tgt[:, 1:]))

    def train() -> None:
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(*batch, 0.1)
            (loss / 3000).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def decode(batch: int, steps: int) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            encoded, cache = model.encode(torch.randint(4, 8000, (batch, 14), generator=g)), DecoderCache()
            ids = torch.full((batch, 1), 2)
            for _ in range(steps):
                ids = model.decode(ids, encoded, cache).logits[:, -1].argmax(-1, keepdim=True)

    def ms(run, *args) -> float:
        start = time.perf_counter()
        run(*args)
        return 1000 * (time.perf_counter() - start)

    train()  # warm-up
    figures = {"train ms/step": ms(train) / len(batches)}
    model.eval()
    for batch, steps in [(256, 30), (64, 80), (1280, 30)]:
        decode(batch, 5)
        figures[f"decode batch {batch}, {steps} steps, ms"] = ms(decode, batch, steps)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bf16", action="store_true", help="train and decode under bf16 autocast")
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, float]]] = {args.old: [], args.new: []}
    for r in range(args.rounds):
        for checkout in (args.old, args.new):
            env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout), "OMP_NUM_THREADS": str(args.threads),
                   "COMPARE_BF16": "1" if args.bf16 else "0"}  # fmt: skip
            out = subprocess.run([sys.executable, __file__, "--measure"], env=env, check=True, capture_output=True)
            rounds[checkout].append(json.loads(out.stdout))
            print(f"round {r + 1} {checkout}: {rounds[checkout][-1]}", file=sys.stderr)
    print(f"| figure (median of {args.rounds}) | old | new | old / new |\n|---|---:|---:|---:|")
    for name in rounds[args.old][0]:
        old, new = (statistics.median(x[name] for x in rounds[c]) for c in (args.old, args.new))
        print(f"| {name} | {old:,.0f} | {new:,.0f} | {old / new:.2f}× |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        print(json.dumps(measure()))
    else:
        main()
