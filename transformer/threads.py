"""How many threads a CPU training uses: every core while the machine is idle, only the free ones while other
programs keep cores busy.

torch splits each matmul over its threads and waits for the slowest. On a core shared with another busy program a
thread runs at half speed or less, so the whole step does; two trainings with two threads each on two cores ran at
0.25× their idle speed each (a Zen 4; 0.08× on a Zen 1), where one thread each would give about 0.5×. So, every few
seconds, the CPU time the rest of the machine used is read from /proc/stat, and the cores it keeps busy are left to
it. A fixed `training.threads` turns this off.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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
    return ticks / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU seconds this process has spent, all its threads together."""
    times = os.times()
    return times.user + times.system


def threads_for(cores: int, others_busy: float) -> int:
    """Threads to use on `cores` cores while other programs keep `others_busy` cores' worth busy: a core counts as
    taken once others use half of one."""
    return max(1, min(cores, cores - round(others_busy)))


class ThreadGovernor:
    """Re-decides the thread count every `interval` seconds from what the rest of the machine used meanwhile."""

    def __init__(self, interval: float = 2.0) -> None:
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        self.cores = torch.get_num_threads()  # torch's default: the physical cores it may use
        self.interval = interval
        self.threads = self.cores
        self._mark()

    def _mark(self) -> None:
        self.at, self.busy, self.own = time.perf_counter(), busy_cpu_seconds(self.cpus), own_cpu_seconds()

    def update(self) -> None:
        """Call often (each step): it reads the clock, and /proc/stat only every `interval` seconds."""
        now = time.perf_counter()
        if now - self.at < self.interval or self.busy is None:
            return
        wall, busy, own = now - self.at, busy_cpu_seconds(self.cpus), own_cpu_seconds()
        if busy is None:
            return
        others = max(0.0, (busy - self.busy) - (own - self.own)) / wall  # cores' worth used by everything else
        threads = threads_for(self.cores, others)
        if threads != self.threads:
            log.info("other programs keep %.1f of %d cores busy: training on %d threads", others, self.cores, threads)
            torch.set_num_threads(threads)
            self.threads = threads
        self._mark()
