"""Translate a test set and score it with sacrebleu (BLEU and chrF, cased, detokenized, raw references).

mini-transformer evaluate --checkpoint runs/demo --split test
mini-transformer evaluate --checkpoint runs/demo --src test.en --ref test.fr --json
"""

import argparse
import json
import time
from pathlib import Path

from transformer.checkpoint import read_checkpoint
from transformer.corpora import read_split
from transformer.errors import ToolkitError
from transformer.files import atomic_file, check_output_path
from transformer.metrics import score
from transformer.text import iter_lines
from transformer.translator import Translator


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (uses best.pt)")
    parser.add_argument("--split", choices=["dev", "test"], help="a split of the corpus the model was trained on")
    parser.add_argument("--src", help="source file, one sentence a line")
    parser.add_argument("--ref", help="reference file, line-aligned with --src")
    parser.add_argument("--hyp", help="where to write the translations (default: next to the checkpoint)")
    parser.add_argument("--data-path", help="read the split from this directory instead of the one in the config")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--beam", type=int, help="beam size (default: decoding.beam_size, 1 = greedy)")
    parser.add_argument("--alpha", type=float, help="length penalty alpha (default: decoding.length_penalty)")
    parser.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    args = parser.parse_args(argv)
    if bool(args.split) == bool(args.src or args.ref) or bool(args.src) != bool(args.ref):
        raise ToolkitError("give either --split, or both --src and --ref")

    if args.hyp:
        check_output_path(args.hyp, "--hyp")
    checkpoint = read_checkpoint(args.checkpoint)
    translator = Translator.from_checkpoint(checkpoint, device=args.device).with_search(args.beam, args.alpha)
    if args.split:
        if args.data_path and checkpoint.config.data.corpus in ("demo", "hub"):
            raise ToolkitError(
                f"--data-path: the model's corpus is {checkpoint.config.data.corpus!r}, read from no folder"
            )
        if args.data_path:
            checkpoint.config.data.path = args.data_path
        pairs = read_split(checkpoint.config.data, args.split)
        sources, references, name = pairs.src, pairs.tgt, args.split
    else:
        for path in (args.src, args.ref):
            if not Path(path).is_file():
                raise ToolkitError(
                    f"{path}: a folder, not a file" if Path(path).is_dir() else f"file not found: {path}"
                )
        sources, references = (list(iter_lines(Path(path))) for path in (args.src, args.ref))
        name = Path(args.src).stem
        if len(sources) != len(references):
            raise ToolkitError(f"{args.src} has {len(sources)} lines but {args.ref} has {len(references)}")
        if not sources:
            raise ToolkitError(f"{args.src}: no sentences to score (the file is empty)")

    start = time.perf_counter()
    hypotheses = translator.translate(sources)
    seconds = time.perf_counter() - start
    scores = score(hypotheses, references)
    run_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
    hyp_path = Path(args.hyp or run_dir / f"{name}.hyp")
    with atomic_file(hyp_path) as file:
        file.write("".join(h + "\n" for h in hypotheses).encode("utf-8"))
    result = {
        "bleu": round(scores.bleu, 2),
        "chrf": round(scores.chrf, 2),
        "bleu_signature": scores.bleu_signature,
        "chrf_signature": scores.chrf_signature,
        "beam": translator.decoding.beam_size,
        "alpha": translator.decoding.length_penalty,
        "sentences": len(sources),
        "seconds": round(seconds, 2),
        "hypotheses": str(hyp_path),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"BLEU {result['bleu']:.2f}  ({scores.bleu_signature})")
        print(f"chrF {result['chrf']:.2f}  ({scores.chrf_signature})")
        search = f"beam {result['beam']}, alpha {result['alpha']}" if result["beam"] > 1 else "greedy"
        print(f"{len(sources)} sentences translated ({search}) in {seconds:.1f} s; hypotheses in {hyp_path}")
    return 0
