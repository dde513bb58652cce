"""Export a trained model to CTranslate2 for deployment (needs the deploy extra).

mini-transformer export --checkpoint runs/demo --out runs/demo/ct2 [--quantization int8]
mini-transformer translate --engine ctranslate2 --checkpoint runs/demo/ct2 "The black cat sleeps."
"""

import argparse

from transformer.deploy import QUANTIZATIONS, export_ctranslate2


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (uses best.pt)")
    parser.add_argument("--out", required=True, help="directory to write the CTranslate2 model into")
    parser.add_argument("--quantization", default="float32", choices=QUANTIZATIONS, help="weights' type (float32)")
    args = parser.parse_args(argv)
    out = export_ctranslate2(args.checkpoint, args.out, args.quantization)
    print(f"exported {args.checkpoint} to {out} ({args.quantization})")
    return 0
