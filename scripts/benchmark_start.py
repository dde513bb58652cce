"""How long training takes to start, and how much memory it holds, cold (empty cache) and warm (second start).

    python scripts/benchmark_start.py --config configs/multi30k_en_fr.yaml --set data.path=/tmp/m30k_2m

runs `train.py` twice for two steps with a fresh data.cache_dir: first cold, then warm, as a user would. For each it
reports the seconds from launch to the end of the first training step, and the peak resident memory: of train.py
itself (the kernel's high-water mark of its resident set; the largest of its processes), and of all its processes
together, shared pages counted once (their summed PSS, sampled 10 times a second): encoding runs in several.
Make large corpora with scripts/make_large_corpus.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from transformer.cli import run

SCRIPTS = Path(__file__).resolve().parent
STEPS = ["training.max_steps=2", "training.log_every=1", "training.eval_sentences=16", "training.max_minutes=0"]


def process_tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def proportional_mb(pids: list[int]) -> float:
    """Resident memory of these processes, pages they share counted once (the sum of their PSS)."""
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
        total += int(match.group(1)) if match else 0
    return total / 1024


def start_train(config: str, overrides: list[str], out: Path) -> dict[str, float | int | str]:
    """Run train.py for two steps; time to its first step, its peak memory, and what its log said about the data."""
    command = [sys.executable, str(SCRIPTS / "train.py"), "--config", config, "--out", str(out)]
    command += [arg for item in [*overrides, *STEPS] for arg in ("--set", item)]
    launched = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: dict[str, float | str] = {}
    lines: list[str] = []

    def read_log() -> None:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("step 1 ") and "first_step_s" not in seen:
                seen["first_step_s"] = time.perf_counter() - launched
            if match := re.match(r"train: (\d+) pairs, dev", line):
                seen["pairs"] = int(match.group(1))

    reader = threading.Thread(target=read_log)
    reader.start()
    peak_tree = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # the kernel's peak RSS of train.py comes with it
        if pid:
            break
        peak_tree = max(peak_tree, proportional_mb(process_tree(proc.pid)))
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if proc.returncode != 0 or "first_step_s" not in seen:
        sys.stderr.writelines(lines[-20:])
        raise SystemExit(f"train.py failed (exit {proc.returncode})")
    log = [line.strip() for line in lines if re.search("cache|read |encoded|tokenizer", line)]
    return {**seen, "peak_mb": usage.ru_maxrss / 1024, "peak_tree_mb": peak_tree, "log": log}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = [f"data.cache_dir={tmp}/cache"]
        for name in ("cold", "warm"):
            figures = start_train(args.config, [*args.set, *cache], Path(tmp) / name)
            figures["cache_mb"] = sum(f.stat().st_size for f in Path(tmp, "cache").rglob("*") if f.is_file()) / 2**20
            report[name] = figures
            print(
                f"{name}: {figures['pairs']} pairs, first step after {figures['first_step_s']:.1f} s, "
                f"peak memory {figures['peak_mb']:.0f} MB (train.py), {figures['peak_tree_mb']:.0f} MB (all "
                f"processes), cache {figures['cache_mb']:.0f} MB",
                file=sys.stderr,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    run(main)
