"""Where and in what precision to compute: `auto` picks CUDA when present, bf16 where the hardware has it."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from transformer.errors import ConfigError

log = logging.getLogger(__name__)


def tune_cpu_allocator() -> None:
    """Keep freed memory in the process: glibc unmaps large tensors on free, so each step would page-fault its
    activations in afresh; raising the mmap and trim thresholds removes most of that system time."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


@functools.cache
def cpu_info() -> dict[str, str | bool]:
    """The CPU's model name and the instruction sets that decide the fast paths (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name":
                model = value.strip()
            elif name.strip() == "flags":
                flags = set(value.split())
    return {"model": model, **{flag: flag in flags for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}}


def native_bf16(device: torch.device) -> bool:
    """True when the device computes bf16 natively (a CPU with AVX-512 BF16 or AMX; most GPUs): emulated bf16 is
    slower than fp32. The one capability question; `choose_bf16` makes the decision."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    info = cpu_info()
    return bool(info["avx512_bf16"] or info["amx_bf16"])


def choose_bf16(
    precision: str, device: torch.device, seconds: Callable[[bool], float] | None = None
) -> tuple[bool, str]:
    """Compute in bf16 or not, and why. `auto` picks bf16 where it is native and, given a timed trial `seconds(bf16)`
    (training: one step of this model), where it is faster: a small model's matmuls are too small to pay for the casts
    (seen on a Zen 4 and a Xeon). Translation passes no trial: the hardware decides."""
    if precision != "auto":
        if precision == "bf16" and not native_bf16(device):
            log.warning("precision bf16: this %s has no native bf16; it will be slow", device.type)
        return precision == "bf16", "as configured"
    if not native_bf16(device):
        return False, f"auto: this {device.type} has no native bf16"
    if seconds is None:
        return True, f"auto: this {device.type} has native bf16"
    fp32, bf16 = seconds(False), seconds(True)
    faster = "bf16" if bf16 < fp32 else "fp32"
    return bf16 < fp32, f"auto: a training step took {1e3 * bf16:.0f} ms in bf16, {1e3 * fp32:.0f} ms in fp32: {faster}"


AUTO_COMPILE_MINUTES = 10  # shorter budgets cannot earn back compiling (about a minute, paid COMPILES times)
COMPILES = 3  # compiles a run with compile: auto pays: the trial's, the run's own model, and when batch shapes vary


def compiler_problem(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` (e.g. no C++ compiler for a CPU, no Triton for a GPU), in one line;
    None if it can. Why: a model's compile fails only at its first step, in a traceback of a hundred lines; compiling
    a tiny function shows the same failure in seconds."""
    try:
        torch.compile(torch.neg)(torch.ones(2, device=device))
    except Exception as e:  # whatever the toolchain raises: the message says what is missing
        return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    return None


def choose_compile(
    setting: bool | str, device: torch.device, budget: Callable[[float], float], seconds: Callable[..., list[float]]
) -> tuple[bool, str]:
    """Compile the model or not, and why. `seconds(compiled=...)` times training steps (the first compiled one includes
    compiling); `budget(step_seconds)` is the run's length in seconds at that speed. `auto` compiles where the
    seconds a compiled step saves, over the budget, exceed COMPILES compiles; on a CPU it does not try: on the CPUs
    measured (a Zen 2, a Zen 4: docs/benchmarks.md) compiled steps were no faster, after about a minute of compiling."""
    if setting is False:
        return False, "as configured"
    if setting == "auto" and device.type == "cpu":
        return False, "auto: compiled steps were no faster on the CPUs measured (docs/benchmarks.md)"
    if (problem := compiler_problem(device)) is not None:
        return False, f"torch.compile cannot run here: {problem}"
    if setting is True:
        return True, "as configured"
    eager = min(seconds(compiled=False)[1:])
    if budget(eager) < 60 * AUTO_COMPILE_MINUTES:
        return False, f"auto: a budget under {AUTO_COMPILE_MINUTES} minutes cannot earn back compiling"
    first, *rest = seconds(compiled=True)
    compiled, compiling = min(rest), first - min(rest)
    saved = (eager - compiled) * budget(compiled) / compiled  # seconds the run's compiled steps would save
    pays = saved > COMPILES * compiling
    return pays, (
        f"auto: a training step took {1e3 * compiled:.0f} ms compiled, {1e3 * eager:.0f} ms eager; compiling took "
        f"{compiling:.0f} s: {'compiled' if pays else 'eager'}"
    )


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a GPU (it runs behind the host), so that a timer measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """What a report calls the device: the GPU's name, or the CPU's model."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(cpu_info()["model"])


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast for matmuls; weights stay fp32 (the master copy the optimizer updates)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)
