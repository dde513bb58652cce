"""Average the weights of checkpoints of one run: python scripts/average.py --out avg.pt RUN/step_*.pt"""

import argparse

from transformer.averaging import average_checkpoints
from transformer.checkpoint import save_checkpoint
from transformer.cli import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files (or run directories: their best.pt)")
    parser.add_argument("--out", required=True, help="where to write the averaged checkpoint")
    args = parser.parse_args()
    save_checkpoint(average_checkpoints(args.checkpoints), args.out)
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
