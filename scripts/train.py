"""Train a Transformer from a YAML config: python scripts/train.py --config configs/demo.yaml [--out runs/demo]"""

import argparse
from pathlib import Path

from transformer.cli import run
from transformer.config import load_config
from transformer.distributed import setup_process
from transformer.prepare import prepare_run
from transformer.trainer import Trainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--out", help="run directory (default: runs/<config name>)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    out = args.out or f"runs/{Path(args.config).stem}"
    process = setup_process(config.training)
    summary = Trainer(prepare_run(config, out, process, resume=args.resume, overrides=args.set)).train()
    if process.is_main:
        print(
            f"best dev BLEU {summary['best_bleu']:.2f} after {summary['step']} steps, {summary['minutes']:.1f} min; "
            f"checkpoints in {out}"
        )
    return 0


if __name__ == "__main__":
    run(main)
