"""The command lines, one module a command: each has `main(argv, prog)` with its own argparse parser.

`mini-transformer COMMAND` (transformer/cli.py) imports only the module it runs, so a command that needs an extra
(serve, export) costs the others nothing; `python scripts/COMMAND.py` in a clone runs the same `main`.
"""
