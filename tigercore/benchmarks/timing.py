"""Timing and memory measurement for benchmarks.

CPU: wall-clock (perf_counter) of repeated calls, reporting the median, with a fixed, reported
thread count. CUDA: CUDA events, with an L2 flush (a 256 MB write) before every repeat.
Transient memory: bytes allocated while a call runs (torch profiler on the CPU,
max_memory_allocated on CUDA).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

import torch


def measure(fn, device: str = "cpu", repeats: int = 10, warmup: int = 2, min_time: float = 0.0) -> dict:
    """Median and min seconds per call of fn()."""
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        flush = torch.empty(64 * 2**20, dtype=torch.float32, device="cuda")
        for _ in range(repeats):
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        t_end = time.perf_counter() + min_time
        while len(times) < repeats or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def interleaved_step_ms(optimizers: dict, rounds: int, warmup: int = 2) -> dict:
    """Median ms per optimizer.step() of each entry, timed round by round (one step of every
    optimizer per round), so that minute-to-minute bandwidth swings of a shared machine hit all
    alike and their ratios stay meaningful. CPU wall clock."""
    for opt in optimizers.values():
        for _ in range(warmup):
            opt.step()
    times = {name: [] for name in optimizers}
    for _ in range(rounds):
        for name, opt in optimizers.items():
            t0 = time.perf_counter()
            opt.step()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler prints start/stop lines on the C level stderr; hide them."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    saved = os.dup(fd)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def transient_bytes(fn, device: str = "cpu") -> int:
    """Bytes allocated by one call of fn() (temporaries; state created on a first call counts too,
    so call fn once before measuring)."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return int(sum(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0))
