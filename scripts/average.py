"""Average checkpoints: `mini-transformer average` from a clone (`--help` for the options; the code is in
transformer/commands/average.py)."""

from transformer.cli import run
from transformer.commands.average import main

if __name__ == "__main__":
    run(main)
