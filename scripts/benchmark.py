"""Benchmark training and decoding: `mini-transformer benchmark` from a clone (`--help` for the options; the command is
transformer/commands/benchmark.py, the measuring code transformer/benchmarking.py)."""

from transformer.cli import run
from transformer.commands.benchmark import main

if __name__ == "__main__":
    run(main)
