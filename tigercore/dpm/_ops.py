# The Analytic-DPM dispatcher ops (docs/semantics-dpm.md §9): schemas, fake kernels, the pure-PyTorch
# references (tigercore/reference/dpm.py) as default kernels, and typed wrappers. Imported by
# tigercore/_ops.py, so the ops exist without the extension; the native kernels are
# csrc/cpu/dpm_ops.cpp and csrc/cuda/dpm.cu and win once tigercore._C is loaded.
# Tests: tests/test_dpm_native.py.
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..reference import dpm as _ref

_LIB = torch.library.Library("tigercore", "FRAGMENT")

# Must match the C++ signatures in csrc/cpu/dpm_ops.cpp and csrc/cuda/dpm.cu.
SCHEMAS = {
    "eps_stats": "(Tensor eps_pred, Tensor? eps=None, Tensor? x0=None, Tensor? x0_pred=None) -> Tensor",
    "segment_moments": "(Tensor stats, Tensor timesteps, int num_steps) -> (Tensor, Tensor, Tensor)",
    "minplus_dp": "(Tensor F, int K, int start=1) -> (Tensor, Tensor)",
}
OPS = tuple(SCHEMAS)
_F64 = torch.float64


def _minplus_dp_default(F: Tensor, K: int, start: int = 1) -> Tuple[Tensor, Tensor]:
    return _ref.minplus_dp(F, K, start=start)     # the reference also takes a callable F


def _concrete(*values) -> bool:
    return all(isinstance(v, int) for v in values)


def _eps_stats_fake(eps_pred, eps=None, x0=None, x0_pred=None):
    torch._check(eps_pred.dim() >= 2, lambda: "eps_pred must be [B, ...] with at least 2 dims")
    return eps_pred.new_empty((eps_pred.shape[0], len(_ref.EPS_STATS_COLUMNS)), dtype=_F64)


def _segment_moments_fake(stats, timesteps, num_steps):
    torch._check(stats.dim() == 2, lambda: "stats must be [B, k]")
    if _concrete(num_steps, stats.shape[1]):     # symbolic sizes are not specialised here
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        _ref.check_output_bytes("segment_moments", "num_steps", num_steps,
                                (num_steps + 1, stats.shape[1], stats.shape[1]))
    n1, k = num_steps + 1, stats.shape[1]
    return (stats.new_empty((n1,), dtype=_F64), stats.new_empty((n1, k), dtype=_F64),
            stats.new_empty((n1, k, k), dtype=_F64))


def _minplus_dp_fake(F, K, start=1):
    torch._check(F.dim() == 2 and F.shape[0] == F.shape[1], lambda: "F must be a square [N+1, N+1] matrix")
    if _concrete(K, F.shape[0]):
        if K < 1:
            raise ValueError(f"K must be >= 1, got {K}")
        _ref.check_output_bytes("minplus_dp", "K", K, (K + 1, F.shape[0]))
    return F.new_empty((K + 1, F.shape[0]), dtype=_F64), F.new_empty((K + 1, F.shape[0]), dtype=torch.int64)


_KERNELS = {
    "eps_stats": (_ref.eps_stats, _eps_stats_fake),
    "segment_moments": (_ref.segment_moments, _segment_moments_fake),
    "minplus_dp": (_minplus_dp_default, _minplus_dp_fake),
}
for _name, _schema in SCHEMAS.items():
    _LIB.define(_name + _schema)
    _LIB.impl(_name, _KERNELS[_name][0], "CompositeExplicitAutograd")
    torch.library.register_fake(f"tigercore::{_name}", _KERNELS[_name][1], lib=_LIB)


# ---- typed wrappers: the native kernel of the inputs' device if registered, else the reference
def eps_stats(eps_pred: Tensor, eps: Optional[Tensor] = None, x0: Optional[Tensor] = None,
              x0_pred: Optional[Tensor] = None) -> Tensor:
    """Per-sample float64 [B, 5] (y, c, u, z, w); see tigercore.reference.dpm.eps_stats."""
    return torch.ops.tigercore.eps_stats.default(eps_pred, eps, x0, x0_pred)


def segment_moments(stats: Tensor, timesteps: Tensor, num_steps: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-timestep (count, mean, comoment) in float64; see tigercore.reference.dpm.segment_moments."""
    return torch.ops.tigercore.segment_moments.default(stats, timesteps, int(num_steps))


def minplus_dp(F: Tensor, K: int, start: int = 1) -> Tuple[Tensor, Tensor]:
    """(C, D) of the min-plus DP on a dense [N+1, N+1] cost; see tigercore.reference.dpm.minplus_dp."""
    return torch.ops.tigercore.minplus_dp.default(F, int(K), int(start))
