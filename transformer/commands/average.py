"""Average the weights of checkpoints of one run: mini-transformer average --out avg.pt RUN/step_*.pt"""

import argparse

from transformer.averaging import average_checkpoints
from transformer.checkpoint import save_checkpoint


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog, description=__doc__)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files (or run directories: their best.pt)")
    parser.add_argument("--out", required=True, help="where to write the averaged checkpoint")
    args = parser.parse_args(argv)
    save_checkpoint(average_checkpoints(args.checkpoints), args.out)
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.out}")
    return 0
