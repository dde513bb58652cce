"""Export to CTranslate2: `mini-transformer export` from a clone (`--help` for the options; the code is in
transformer/commands/export.py)."""

from transformer.cli import run
from transformer.commands.export import main

if __name__ == "__main__":
    run(main)
