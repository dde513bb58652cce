"""Train a model: `mini-transformer train` from a clone (`--help` for the options; the code is in
transformer/commands/train.py)."""

from transformer.cli import run
from transformer.commands.train import main

if __name__ == "__main__":
    run(main)
