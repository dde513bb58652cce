"""Serve a model over HTTP: `mini-transformer serve` from a clone (`--help` for the options; the code is in
transformer/commands/serve.py)."""

from transformer.cli import run
from transformer.commands.serve import main

if __name__ == "__main__":
    run(main)
