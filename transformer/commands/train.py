"""Train a Transformer from a YAML config, or a shipped one by name.

mini-transformer train --config demo [--out runs/demo]
mini-transformer train --config configs/multi30k_en_fr.yaml --set training.max_minutes=60
mini-transformer train --config my_data.yaml --init-from runs/multi30k_en_fr --out runs/tuned
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformer.config import load_config
from transformer.distributed import setup_process
from transformer.errors import ToolkitError
from transformer.prepare import prepare_run
from transformer.trainer import Trainer


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file, or a shipped config's name (demo)")
    parser.add_argument("--out", help="run directory (default: runs/<config name>)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument(
        "--init-from",
        metavar="RUN_OR_CHECKPOINT",
        help="start a new run from a trained model: its weights, shape and tokenizer; the rest from --config",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    if args.out == "":
        raise ToolkitError("--out: an empty path; leave --out out for runs/<config name>")
    out = args.out or f"runs/{Path(args.config).stem}"
    process = setup_process(config.training)
    run = prepare_run(config, out, process, resume=args.resume, overrides=args.set, init_from=args.init_from)
    summary = Trainer(run).train()
    if process.is_main:
        print(
            f"best dev BLEU {summary['best_bleu']:.2f} after {summary['step']} steps, {summary['minutes']:.1f} min; "
            f"checkpoints in {out}"
        )
    return 0
