"""Export a trained model to CTranslate2 for deployment (needs `pip install -e ".[deploy]"`).

python scripts/export.py --checkpoint runs/demo --out runs/demo/ct2 [--quantization int8]
python scripts/translate.py --engine ctranslate2 --checkpoint runs/demo/ct2 "The black cat sleeps."
"""

import argparse

from transformer.cli import run
from transformer.deploy import QUANTIZATIONS, export_ctranslate2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (uses best.pt)")
    parser.add_argument("--out", required=True, help="directory to write the CTranslate2 model into")
    parser.add_argument("--quantization", default="float32", choices=QUANTIZATIONS, help="weights' type (float32)")
    args = parser.parse_args()
    out = export_ctranslate2(args.checkpoint, args.out, args.quantization)
    print(f"exported {args.checkpoint} to {out} ({args.quantization})")
    return 0


if __name__ == "__main__":
    run(main)
