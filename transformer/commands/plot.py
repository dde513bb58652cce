"""Overlay the training curves of runs: mini-transformer plot runs/a runs/b --out curves.png"""

import argparse
from pathlib import Path

from transformer.errors import ToolkitError
from transformer.plotting import check_figure_path, read_metrics, save_curves


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog, description=__doc__)
    parser.add_argument("runs", nargs="+", help="run directories (each with its metrics.jsonl)")
    parser.add_argument("--out", required=True, help="image to write (.png, .svg or .pdf)")
    args = parser.parse_args(argv)
    check_figure_path(args.out, "--out")
    runs = {Path(r).name or r: read_metrics(r) for r in args.runs}
    for run, records in zip(args.runs, runs.values(), strict=False):
        if not records:
            raise ToolkitError(f"{run}: its metrics.jsonl holds no training record yet")
    save_curves(runs, args.out)
    print(f"drew {len(args.runs)} runs into {args.out}")
    return 0
