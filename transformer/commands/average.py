"""Average the weights of checkpoints of one run: mini-transformer average --out avg.pt RUN/step_*.pt"""

import argparse
from pathlib import Path

from transformer.averaging import average_checkpoints
from transformer.checkpoint import load_checkpoint, save_checkpoint
from transformer.errors import CheckpointError, ToolkitError
from transformer.files import check_output_path


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog, description=__doc__)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint files (or run directories: their best.pt)")
    parser.add_argument("--out", required=True, help="where to write the averaged checkpoint")
    args = parser.parse_args(argv)
    check_output_path(args.out, "--out")
    if Path(args.out).exists():  # a checkpoint is replaced; any other file is the user's
        try:
            load_checkpoint(args.out)
        except CheckpointError:
            raise ToolkitError(
                f"--out {args.out}: exists and is not a checkpoint; averaging would overwrite it"
            ) from None
    save_checkpoint(average_checkpoints(args.checkpoints), args.out)
    print(f"averaged {len(args.checkpoints)} checkpoints into {args.out}")
    return 0
