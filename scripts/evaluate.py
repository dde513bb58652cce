"""Score a model on a test set: `mini-transformer evaluate` from a clone (`--help` for the options; the code is in
transformer/commands/evaluate.py)."""

from transformer.cli import run
from transformer.commands.evaluate import main

if __name__ == "__main__":
    run(main)
