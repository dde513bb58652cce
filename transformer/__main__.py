"""`python -m transformer COMMAND ...` is `mini-transformer COMMAND ...`, for an environment whose scripts are not on
PATH."""

from transformer.cli import main

main()
