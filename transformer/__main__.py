"""`python -m transformer COMMAND ...` is `mini-transformer COMMAND ...` where the scripts are not on PATH."""

from transformer.cli import main

main()
