"""Draw training curves: `mini-transformer plot` from a clone (`--help` for the options; the code is in
transformer/commands/plot.py)."""

from transformer.cli import run
from transformer.commands.plot import main

if __name__ == "__main__":
    run(main)
