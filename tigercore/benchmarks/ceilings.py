"""Memory-bandwidth ceilings measured in the same run as the kernels they judge: copy (read +
write), in-place axpy x += a*y (2 reads + 1 write, the pattern of an optimizer step) and read-only
(a max reduction). Reported in GB/s of bytes the operation must move."""
from __future__ import annotations

import torch

from .timing import measure


class Axpy:
    """The in-place axpy x += a·y over numel fp32 (12 B an element) as a .step(), so that it can be
    timed round by round beside an optimizer (benchmarks.optim.lion_vs_axpy)."""

    def __init__(self, numel: int = 1 << 26, device: str = "cpu"):
        self.x = torch.randn(numel, device=device)
        self.y = torch.randn(numel, device=device)
        self.nbytes = 12 * numel

    def step(self):
        self.x.add_(self.y, alpha=1e-12)


def ceilings(numel: int = 1 << 26, device: str = "cpu", repeats: int = 10) -> dict:
    axpy = Axpy(numel, device)
    x, y = axpy.x, axpy.y
    out = {}
    t = measure(lambda: y.copy_(x), device, repeats)["median_s"]
    out["copy"] = 8 * numel / t / 1e9
    t = measure(axpy.step, device, repeats)["median_s"]
    out["axpy"] = axpy.nbytes / t / 1e9
    t = measure(lambda: x.amax(), device, repeats)["median_s"]
    out["read"] = 4 * numel / t / 1e9
    return out
