"""Memory-bandwidth ceilings measured in the same run as the kernels they judge: copy (read +
write), in-place axpy x += a*y (2 reads + 1 write, the pattern of an optimizer step) and read-only
(a max reduction). Reported in GB/s of bytes the operation must move."""
from __future__ import annotations

import torch

from .timing import measure


def ceilings(numel: int = 1 << 26, device: str = "cpu", repeats: int = 10) -> dict:
    x = torch.randn(numel, device=device)
    y = torch.randn(numel, device=device)
    out = {}
    t = measure(lambda: y.copy_(x), device, repeats)["median_s"]
    out["copy"] = 8 * numel / t / 1e9
    t = measure(lambda: x.add_(y, alpha=1e-12), device, repeats)["median_s"]
    out["axpy"] = 12 * numel / t / 1e9
    t = measure(lambda: x.amax(), device, repeats)["median_s"]
    out["read"] = 4 * numel / t / 1e9
    return out
