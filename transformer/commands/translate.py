"""Translate sentences with a trained model.

mini-transformer translate --checkpoint runs/demo "The black cat sleeps."
mini-transformer translate --checkpoint runs/demo --input sentences.en --output sentences.fr --beam 5
echo "The black cat sleeps." | mini-transformer translate --checkpoint runs/demo
mini-transformer translate --checkpoint runs/demo --input mono.en --temperature 0.8 --top-k 20 --seed 1

Standard input and --input are translated in chunks as lines arrive, each chunk written as soon as it is done: a
line typed at a terminal is answered at once, and a file of millions of lines never sits in memory whole.
With --n-best N, each sentence gives N lines `INDEX ||| TRANSLATION ||| LOG_PROB ||| SCORE`, best first: INDEX counts
input lines from 0, LOG_PROB is the model's log-probability of the translation (its EOS included), SCORE the
length-penalized rank key; an empty input line gives one line with an empty translation and zeros.
With --temperature T > 0, each piece is drawn from the model's distribution instead (e.g. for back-translation):
--top-k and --top-p narrow what it draws from, and the same --seed, input and decoding.batch_size draw the same.
"""

import argparse
import gzip
import os
import sys
from pathlib import Path

from tqdm import tqdm

from transformer.errors import ToolkitError
from transformer.files import check_output_path
from transformer.text import check_gzip, read_chunks
from transformer.translator import ATTENTION_KINDS, Translator, check_search


def parse_args(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (uses best.pt)")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: --input or standard input)")
    parser.add_argument("--input", help="file with one sentence a line (.gz read as gzip)")
    parser.add_argument("--output", help="write translations here instead of standard output")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--engine", default="torch", choices=["torch", "ctranslate2"],
                        help="ctranslate2: --checkpoint is a directory written by mini-transformer export")  # fmt: skip
    parser.add_argument("--beam", type=int, help="beam size (default: decoding.beam_size, 1 = greedy)")
    parser.add_argument("--alpha", type=float, help="length penalty alpha (default: decoding.length_penalty)")
    parser.add_argument("--n-best", type=int, default=0, help="print the N best translations with their scores")
    parser.add_argument("--temperature", type=float, help="> 0: sample at T instead (default: decoding.temperature)")
    parser.add_argument("--top-k", type=int, help="sample among the K likeliest pieces (default: decoding.top_k)")
    parser.add_argument("--top-p", type=float, help="then within the top-P nucleus (default: decoding.top_p, 1 = all)")
    parser.add_argument("--seed", type=int, help="the seed of sampling (default: decoding.seed)")
    parser.add_argument("--show-attention", metavar="PNG", help="draw the first sentence's attention")
    parser.add_argument("--kind", choices=ATTENTION_KINDS, default="cross", help="which attention (default: cross)")
    parser.add_argument("--layer", type=int, default=-1, help="layer to draw (default: the last)")
    parser.add_argument("--head", type=int, help="head to draw (default: the mean over heads)")
    return parser.parse_args(argv)


def check_paths(args: argparse.Namespace) -> None:
    """What reading --input or writing --output and --show-attention could only fail at, said before the work."""
    if "" in (args.input, args.output):
        raise ToolkitError(
            f"--{'input' if args.input == '' else 'output'}: an empty path; leave it out for the terminal"
        )
    if args.input and not Path(args.input).is_file():
        raise ToolkitError(f"--input {args.input}: a folder, not a file" if Path(args.input).is_dir() else
                           f"--input: file not found: {args.input}")  # fmt: skip
    if args.output:
        check_output_path(args.output, "--output")
        if args.input and Path(args.output).exists() and os.path.samefile(args.input, args.output):
            raise ToolkitError(f"--output {args.output}: the --input file; writing it would destroy what is read")
    if args.input and args.input.endswith(".gz"):
        check_gzip(Path(args.input))  # whole, before any output: a broken file must not leave half a translation
    if args.show_attention:
        from transformer.plotting import check_figure_path

        check_figure_path(args.show_attention, "--show-attention")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    check_paths(args)
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed}
    check_search(beam_size=args.beam, length_penalty=args.alpha, **sampling)  # for either engine
    if args.n_best < 0 or (args.beam and args.n_best > args.beam):
        raise ToolkitError(f"--n-best {args.n_best}: must be between 1 and the beam size (--beam {args.beam})")
    if args.engine == "ctranslate2":
        if args.n_best or args.show_attention or any(v is not None for v in sampling.values()):
            raise ToolkitError("--engine ctranslate2 translates only: no --n-best, --show-attention or sampling")
        from transformer.deploy import CTranslate2Translator

        alpha = args.alpha or 0.0  # CTranslate2's own penalty: log-probability / length^alpha
        translator = CTranslate2Translator(args.checkpoint, beam_size=args.beam or 1, length_penalty=alpha)
        chunk_lines = 8 * translator.batch_size
    else:
        translator = Translator.from_checkpoint(args.checkpoint, device=args.device)
        translator = translator.with_search(args.beam, args.alpha, **sampling)
        if args.n_best and translator.decoding.temperature > 0:
            raise ToolkitError("--n-best: sampling draws one translation a sentence, without a score")
        chunk_lines = 8 * translator.decoding.batch_size  # enough sentences to batch by length
        model = translator.model.config
        layers = model.encoder_layers if args.kind == "encoder" else model.decoder_layers
        if args.show_attention and not (-layers <= args.layer < layers and 0 <= (args.head or 0) < model.heads):
            raise ToolkitError(f"--layer/--head: the model has {layers} {args.kind} layers and {model.heads} heads")
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    bar = None
    try:
        if args.sentences:
            chunks = iter([args.sentences])
        elif args.input:
            raw = open(args.input, "rb")  # noqa: SIM115  (closed with the process; its position drives the bar)
            stream = gzip.GzipFile(fileobj=raw) if args.input.endswith(".gz") else raw
            chunks = read_chunks(stream, chunk_lines)
            bar = tqdm(total=os.path.getsize(args.input), unit="B", unit_scale=True, desc="translating")
        else:
            chunks = read_chunks(sys.stdin.buffer, chunk_lines)
        first, index = None, 0
        for chunk in chunks:
            first = chunk[0] if first is None else first
            if args.n_best:
                for n_best in translator.translate_n_best(chunk, args.n_best):
                    out.writelines(f"{index} ||| {t} ||| {h.log_prob:.4f} ||| {h.score:.4f}\n" for t, h in n_best)
                    index += 1
            else:
                out.writelines(t + "\n" for t in translator.translate(chunk))
            out.flush()
            if bar is not None:
                bar.update(raw.tell() - bar.n)
    finally:
        if bar is not None:
            bar.close()
        if args.output:
            out.close()
    if args.show_attention and first is not None:
        draw_attention(translator, first, args)
    return 0


def draw_attention(translator: Translator, sentence: str, args: argparse.Namespace) -> None:
    """--show-attention: the heatmap of one layer (and head) of the first sentence's attention of --kind."""
    from transformer.plotting import save_attention_heatmap

    attention = translator.attention(sentence, args.kind)  # --layer and --head were checked before translating
    save_attention_heatmap(attention, args.show_attention, args.layer, args.head)
    print(f"attention heatmap written to {args.show_attention}", file=sys.stderr)
