"""Build a large synthetic corpus from a small one, to measure how memory and start time grow with corpus size.

    python scripts/make_large_corpus.py --source ../shared/data/multi30k --repeat 69 --out /tmp/m30k_2m

writes train.en.gz / train.fr.gz (the source's training split repeated N times: 29,000 × 69 = 2,001,000 pairs) and
copies the other splits, so that `--set data.path=/tmp/m30k_2m` trains on it with any multi30k-style config.
The repeats add no information: this corpus is for measuring, never for judging quality. Never commit it.
"""

import argparse
import gzip
import shutil
from pathlib import Path

from transformer.cli import run
from transformer.errors import ToolkitError
from transformer.text import iter_lines


def make_large_corpus(source: Path, out: Path, repeat: int, split: str, langs: tuple[str, ...]) -> int:
    """Write `split` repeated `repeat` times into `out` (gzip level 1: fast), copy the other splits; return pairs."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for lang in langs:
        found = [p for p in (source / f"{split}.{lang}.gz", source / f"{split}.{lang}") if p.is_file()]
        if not found:
            raise ToolkitError(f"--source: no {split}.{lang}(.gz) in {source}")
        block = ("\n".join(iter_lines(found[0])) + "\n").encode()
        with gzip.open(out / f"{split}.{lang}.gz", "wb", compresslevel=1) as f:
            for _ in range(repeat):
                f.write(block)
        count = block.count(b"\n") * repeat
    for lang in langs:  # the other splits (dev, test) as they are
        for path in [*source.glob(f"*.{lang}"), *source.glob(f"*.{lang}.gz")]:
            if not path.name.startswith(f"{split}."):
                shutil.copyfile(path, out / path.name)
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="directory with SPLIT.LANG(.gz) files")
    parser.add_argument("--out", required=True, type=Path, help="directory to write the large corpus into")
    parser.add_argument("--repeat", required=True, type=int, help="how many times to repeat the training split")
    parser.add_argument("--split", default="train", help="the split to repeat (train)")
    parser.add_argument("--langs", default="en,fr", help="language suffixes (en,fr)")
    args = parser.parse_args()
    if args.repeat < 1:
        raise ToolkitError(f"--repeat must be >= 1, got {args.repeat}")
    pairs = make_large_corpus(args.source, args.out, args.repeat, args.split, tuple(args.langs.split(",")))
    print(f"wrote {pairs} pairs to {args.out}")
    return 0


if __name__ == "__main__":
    run(main)
