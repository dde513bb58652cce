"""Translate sentences with a trained model.

python scripts/translate.py --checkpoint runs/demo "The black cat sleeps."
python scripts/translate.py --checkpoint runs/demo --input sentences.en --output sentences.fr
echo "The black cat sleeps." | python scripts/translate.py --checkpoint runs/demo
"""

import argparse
import sys
from pathlib import Path

from transformer.cli import run
from transformer.errors import ToolkitError
from transformer.text import read_lines
from transformer.translator import ATTENTION_KINDS, Translator


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (uses best.pt)")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: --input or standard input)")
    parser.add_argument("--input", help="file with one sentence a line")
    parser.add_argument("--output", help="write translations here instead of standard output")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--show-attention", metavar="PNG", help="draw the first sentence's attention")
    parser.add_argument("--kind", choices=ATTENTION_KINDS, default="cross", help="which attention (default: cross)")
    parser.add_argument("--layer", type=int, default=-1, help="layer to draw (default: the last)")
    parser.add_argument("--head", type=int, help="head to draw (default: the mean over heads)")
    args = parser.parse_args()

    if args.sentences:
        sentences = args.sentences
    elif args.input:
        if not Path(args.input).is_file():
            raise ToolkitError(f"--input: file not found: {args.input}")
        sentences = read_lines(Path(args.input))
    else:
        sentences = read_lines(sys.stdin.buffer)
    translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
    translations = translator.translate(sentences)
    if args.output:
        Path(args.output).write_text("".join(t + "\n" for t in translations), encoding="utf-8")
    else:
        sys.stdout.writelines(t + "\n" for t in translations)
    if args.show_attention and sentences:
        from transformer.plotting import save_attention_heatmap

        attention = translator.attention(sentences[0], args.kind)
        layers, heads = attention.weights.shape[:2]
        if not -layers <= args.layer < layers or (args.head is not None and not 0 <= args.head < heads):
            raise ToolkitError(f"--layer/--head: the model has {layers} {args.kind} layers and {heads} heads")
        save_attention_heatmap(attention, args.show_attention, args.layer, args.head)
        print(f"attention heatmap written to {args.show_attention}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
