"""The `mini-transformer` command and what every command shares: logging to stderr, user mistakes as one line with
exit code 2. `mini-transformer train` runs `transformer.commands.train.main` (`scripts/train.py` too, through `run`);
only the chosen command's module is imported, so `--help` and `train` work without the serve or deploy extras."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from transformer.errors import ToolkitError

# Each command is transformer/commands/NAME.py; the line is what `mini-transformer --help` says of it.
COMMANDS = {
    "train": "train a model from a YAML config, or a shipped one (--config demo)",
    "translate": "translate sentences, a file or standard input",
    "evaluate": "translate a test set and score it (BLEU, chrF)",
    "average": "average the weights of checkpoints of one run",
    "plot": "draw the training curves of runs (the plot extra)",
    "export": "export a model to CTranslate2 (the deploy extra)",
    "serve": "serve a model over HTTP, with a page that shows attention (the serve extra)",
    "benchmark": "measure training and decoding speed beside torch.nn.Transformer",
}


def main() -> NoReturn:
    """The console script `mini-transformer` (pyproject.toml's [project.scripts])."""
    run(lambda: dispatch(sys.argv[1:]))


def dispatch(argv: list[str]) -> int:
    """Run the command named by the first argument with the rest; anything else is help or a usage error."""
    if argv and argv[0] in COMMANDS:
        command = importlib.import_module(f"transformer.commands.{argv[0]}")
        return command.main(argv[1:], prog=f"mini-transformer {argv[0]}")
    listing = "".join(f"\n  {name:<10} {summary}" for name, summary in COMMANDS.items())
    parser = argparse.ArgumentParser(
        "mini-transformer",
        usage="mini-transformer [-h] COMMAND [OPTIONS]",
        description="Train, translate with, score and serve encoder-decoder Transformer translation models.",
        epilog=f"commands:{listing}\n\n`mini-transformer COMMAND --help` gives the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", metavar="COMMAND", choices=COMMANDS, help="a command below, then its options")
    parser.parse_args(argv)  # prints the help, or the usage and an error, and exits
    return 2


def run(main: Callable[[], int | None]) -> NoReturn:
    """Call a command's `main`; a ToolkitError prints `error: ...` and exits 2, without a traceback."""
    # Our own progress at INFO; other libraries only when they warn (matplotlib's INFO lines are not a user's concern).
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("transformer").setLevel(logging.INFO)
    try:
        code = main()
    except ToolkitError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # the file system refused (disk full, no permission): not a bug of ours
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
