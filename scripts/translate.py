"""Translate sentences: `mini-transformer translate` from a clone (`--help` for the options; the code is in
transformer/commands/translate.py)."""

from transformer.cli import run
from transformer.commands.translate import main

if __name__ == "__main__":
    run(main)
