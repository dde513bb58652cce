"""How many threads a CPU training uses: every core while the machine is idle, only the free ones while other
programs keep cores busy.

torch splits each matmul over its threads and waits for the slowest, and a thread on a core shared with another busy
program runs at half speed or less: two trainings with two threads each on two cores ran at 0.25× their idle speed
(Zen 4), where one thread each gives about 0.5×. So every few seconds the CPU time the rest of the machine used is
read from /proc/stat, and the cores it keeps busy are left to it. A fixed `training.threads` turns this off.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def busy_cpu_seconds(cpus: set[int], stat: Path = Path("/proc/stat")) -> float | None:
    """CPU seconds all programs have spent on `cpus` since boot (None where /proc/stat is missing: not Linux)."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


def threads_for(cores: int, others_busy: float) -> int:
    """Threads to use on `cores` cores while other programs keep `others_busy` cores' worth busy: a core counts as
    taken once others use half of one."""
    return max(1, min(cores, cores - round(others_busy)))


class ThreadGovernor:
    """Re-decides the thread count every `interval` seconds from what the rest of the machine used meanwhile."""

    def __init__(self, interval: float = 2.0) -> None:
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        self.cores = self.threads = torch.get_num_threads()  # torch's default: the physical cores it may use
        self.interval = interval
        self._mark()

    def _mark(self) -> None:
        """Now: the clock, the CPU seconds of all programs on our cpus, and those of this process (all its threads)."""
        own = os.times()
        self.at, self.busy, self.own = time.perf_counter(), busy_cpu_seconds(self.cpus), own.user + own.system

    def update(self) -> None:
        """Call often (each step): it reads the clock, and /proc/stat only every `interval` seconds."""
        if time.perf_counter() - self.at < self.interval or self.busy is None:
            return
        at, busy, own = self.at, self.busy, self.own
        self._mark()
        if self.busy is None:
            return
        others = max(0.0, (self.busy - busy) - (self.own - own)) / (self.at - at)  # cores' worth used by the rest
        threads = threads_for(self.cores, others)
        if threads != self.threads:
            log.info("other programs keep %.1f of %d cores busy: training on %d threads", others, self.cores, threads)
            torch.set_num_threads(threads)
            self.threads = threads
