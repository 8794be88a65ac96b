# Pure-torch reference for the Analytic-DPM reductions (docs/semantics-dpm.md §2, §5, §9), float64
# results (eps_stats sums tiles in float32 for non-fp64 inputs, [note: fixed reduction tree]):
# eps_stats (per-sample y, c, u, z, w), segment_moments (per-timestep count/mean/co-moments),
# merge_moments (Chan), minplus_dp (trajectory DP) and the δ-form DP cost of §5.
# Plain tensor signatures so that they can serve as the "default" kernels of the dispatcher ops
# tigercore::eps_stats, tigercore::segment_moments and tigercore::minplus_dp (native: csrc/*/dpm*).
# Tests: tests/test_dpm_estimators.py, tests/test_dpm_exact_cases.py.
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "EPS_STATS_COLUMNS", "eps_stats", "segment_moments", "merge_moments",
    "minplus_dp", "minplus_path", "delta_cost", "delta_cost_matrix", "check_output_bytes",
]

# Columns of eps_stats' output, in order. Per sample, with d = numel of one sample:
#   y = Σ ε̂²/d, c = Σ ε²/d, u = Σ (ε−ε̂)(ε+ε̂)/d (= c − y without cancellation),
#   z = Σ (ε−ε̂)²/d, w = Σ (x0−x̂0)²/d.
EPS_STATS_COLUMNS = ("y", "c", "u", "z", "w")
EPS_STATS_TILE = 1024     # leaf tile of the fixed reduction tree (power of two)
EPS_STATS_ROW = 32        # a tile is summed as rows of this many lanes ([note: fixed reduction tree])
SEGMENT_TILE = 64         # leaf tile of segment_moments' fixed reduction tree (power of two)


# [note: fixed reduction tree]
# Every sum below is a pairwise tree whose shape depends only on the reduced length (zero padding
# to whole tiles / powers of two; adding +0.0 is exact up to the sign of a zero), built from
# element-wise halving adds. Element-wise ops do not depend on the thread count or on the other
# rows of the batch, so results are bitwise reproducible across thread counts and batch splits,
# and a native kernel with the same tile size reproduces them.
# eps_stats (docs/semantics-dpm.md §9) works in a compute type: float32 when the inputs are fp16/bf16/fp32 (and
# mixed ones without fp64), float64 when any input is fp64. Each element is upcast to it (exact),
# the per-element terms are formed there with one rounding per operation, in this order: y = ê·ê,
# c = e·e, u = (e−ê)·(e+ê), z = (e−ê)·(e−ê), w = (x0−x̂0)·(x0−x̂0) (torch's element-wise fp32 ops are
# correctly rounded and never fused, so these are the IEEE values). A row is cut into tiles of
# T = min(1024, pow2(d)) terms (the last one zero-padded). A tile is summed in the compute type in
# address order, as a kernel streams it: viewed as T/32 rows of 32 lanes, adjacent rows are added
# pairwise (row 2i + row 2i+1, lane by lane) down to one row, whose 32 lanes are then halved
# (lane i + lane i+16, ..., i + 1); a tile shorter than 32 is halved directly. The tile sum is
# converted to float64 (exact), the row's partials (zero-padded to a power of two) are halved in
# float64, then / d. Error in the fp32 type: the product (or difference, then
# product) rounds 1–3 times by 2^-24 relative, the tile tree 10 times (5 row and 5 lane levels), the fp64 levels
# are negligible: |error| <= ~13·2^-24 (7.7e-7) of Σ|term| in the worst case, ~1e-7 typically
# (random rounding errors); for y, c, z, w (non-negative terms) that is relative to the result.
# fp16 inputs cannot overflow (65504² < 3.4e38), but |x| > 1.8e19 (bf16/fp32 only) squares to inf
# in fp32. fp64 inputs keep fp64 terms and tiles: ~11·2^-53 of Σ|term|.
def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _pairwise_sum(x: Tensor, dim: int) -> Tensor:
    """Sum over ``dim`` with a balanced binary tree (zero-padded to a power of two)."""
    dim = dim % x.dim()
    n = x.shape[dim]
    p = _pow2_at_least(n)
    if p != n:
        pad_shape = list(x.shape)
        pad_shape[dim] = p - n
        x = torch.cat([x, x.new_zeros(pad_shape)], dim)
    while x.shape[dim] > 1:
        h = x.shape[dim] // 2
        x = x.narrow(dim, 0, h) + x.narrow(dim, h, h)
    return x.squeeze(dim)


def _tile_sum(x: Tensor) -> Tensor:
    """Sum over the last dim (a power of two T) by the tile tree: for T > EPS_STATS_ROW, rows of
    EPS_STATS_ROW lanes are added in adjacent pairs down to one row; then its lanes are halved."""
    t = x.shape[-1]
    if t > EPS_STATS_ROW:
        x = x.reshape(*x.shape[:-1], t // EPS_STATS_ROW, EPS_STATS_ROW)
        while x.shape[-2] > 1:
            x = x[..., 0::2, :] + x[..., 1::2, :]
        x = x.squeeze(-2)
    return _pairwise_sum(x, -1)


def _row_sum(x: Tensor) -> Tensor:
    """Deterministic float64 sum of a [B, D] tensor over D: tiles of EPS_STATS_TILE summed in x's
    dtype (the compute type) by _tile_sum, the tile partials converted to float64 and halved there."""
    b, d = x.shape
    tile = min(EPS_STATS_TILE, _pow2_at_least(d))
    ntiles = -(-d // tile)
    if ntiles * tile != d:
        x = torch.cat([x, x.new_zeros(b, ntiles * tile - d)], 1)
    partial = _tile_sum(x.reshape(b, ntiles, tile)).to(torch.float64)   # [B, ntiles], exact
    return _pairwise_sum(partial, 1)


def eps_stats_compute_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    """eps_stats' compute type: float64 if any given input is float64, else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_float(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (fp16/bf16/fp32/fp64), got {t.dtype}")


def eps_stats(eps_pred: Tensor, eps: Optional[Tensor] = None, x0: Optional[Tensor] = None,
              x0_pred: Optional[Tensor] = None) -> Tensor:
    """Per-sample statistics of a network output, float64 [B, 5] in EPS_STATS_COLUMNS order.

    ``eps_pred`` is [B, ...] (any floating dtype, at least 2-D; reduced over all non-batch dims).
    Columns c, u, z need ``eps`` (same shape) and w needs both ``x0`` and ``x0_pred``; columns whose
    inputs are absent are NaN. Every element is upcast to the compute type (float32, or float64 if
    an input is float64) before squaring (no fp16 overflow), tiles of 1024 terms are summed by a
    fixed tree in that type and the tile partials in float64 ([note: fixed reduction tree]); 1/d
    is applied at the end.
    """
    _check_float("eps_pred", eps_pred)
    if eps_pred.dim() < 2:
        raise ValueError(f"eps_pred must be [B, ...] with at least 2 dims, got shape {tuple(eps_pred.shape)}")
    shape = eps_pred.shape
    for name, t in (("eps", eps), ("x0", x0), ("x0_pred", x0_pred)):
        if t is not None:
            _check_float(name, t)
            if t.shape != shape:
                raise ValueError(f"{name} must have the shape of eps_pred {tuple(shape)}, got {tuple(t.shape)}")
            if t.device != eps_pred.device:
                raise ValueError(f"{name} is on {t.device} but eps_pred is on {eps_pred.device}")
    if (x0 is None) != (x0_pred is None):
        raise ValueError("x0 and x0_pred must be given together")
    b = shape[0]
    d = eps_pred[0].numel() if b else math.prod(shape[1:])
    if d == 0:
        raise ValueError("eps_pred has no elements per sample")
    ct = eps_stats_compute_dtype(eps_pred, eps, x0, x0_pred)
    up = lambda t: t.reshape(b, d).to(ct)               # noqa: E731  (exact upcast)
    e_hat = up(eps_pred)
    sq = lambda t: t * t                                 # noqa: E731  (one rounded product)
    cols = {"y": lambda: sq(e_hat)}                      # terms are formed one column at a time
    if eps is not None:
        e = up(eps)
        cols["c"] = lambda: sq(e)
        cols["u"] = lambda: (e - e_hat) * (e + e_hat)
        cols["z"] = lambda: sq(e - e_hat)
    if x0 is not None:
        x, xh = up(x0), up(x0_pred)
        cols["w"] = lambda: sq(x - xh)
    out = torch.full((b, len(EPS_STATS_COLUMNS)), math.nan, dtype=torch.float64, device=eps_pred.device)
    if b == 0:
        return out
    for k, make in cols.items():
        out[:, EPS_STATS_COLUMNS.index(k)] = _row_sum(make()) / d
    return out


# ---------------------------------------------------------------------------- output sizes

_INT64_MAX = (1 << 63) - 1


def check_output_bytes(op: str, name: str, value: int, shape) -> None:
    """Refuse ``value`` (num_steps or K) when an output of ``shape`` (dims formed from it, each
    counted as at least 1) would need more than 2^63 − 1 bytes of 8-byte elements: the rule of the
    native entries' overflow-checked sizes (csrc/host/dpm_plan.h [note: checked output sizes]), so every
    backend fails alike, before any allocation, for 2^62 or 2^63 − 1 (docs/semantics-dpm.md §9)."""
    nbytes = 8
    for d in shape:
        nbytes *= max(int(d), 1)
    if nbytes > _INT64_MAX:
        dims = ", ".join(str(d) for d in shape)
        raise ValueError(f"tigercore::{op}: {name} = {value} is too large: an output of shape [{dims}] "
                         "of 8-byte elements would exceed 2^63 - 1 bytes")


# ---------------------------------------------------------------------------- segment moments

def _segment_sum(v: Tensor, seg: Tensor, nseg: int) -> Tensor:
    """Σ of rows of ``v`` [B, ...] per segment id ``seg`` [B] (non-decreasing), as [nseg, ...].

    Rows of one segment are summed in sample order by a fixed tree: chunks of SEGMENT_TILE
    consecutive rows are reduced pairwise, then the chunk sums of each segment, and so on.
    """
    while True:
        counts = torch.bincount(seg, minlength=nseg)
        if v.shape[0] == 0 or int(counts.max()) <= 1:
            out = v.new_zeros((nseg,) + tuple(v.shape[1:]))
            out[seg] = v
            return out
        start = torch.cumsum(counts, 0) - counts
        pos = torch.arange(v.shape[0], device=v.device) - start[seg]
        rows_per_seg = -(-counts // SEGMENT_TILE)
        row_start = torch.cumsum(rows_per_seg, 0) - rows_per_seg
        row = row_start[seg] + pos // SEGMENT_TILE
        nrows = int(rows_per_seg.sum())
        dense = v.new_zeros((nrows, SEGMENT_TILE) + tuple(v.shape[1:]))
        dense[row, pos % SEGMENT_TILE] = v
        v = _pairwise_sum(dense, 1)
        seg = seg.new_zeros(nrows).index_put_((row,), seg)   # all writers of a row agree


def segment_moments(stats: Tensor, timesteps: Tensor, num_steps: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-timestep moments of per-sample statistics (two-pass, float64).

    Args: ``stats`` [B, k] floating, ``timesteps`` [B] integer in 1..num_steps (mixed allowed).
    Returns ``(count, mean, comoment)``: count [N+1] float64, mean [N+1, k] float64 and
    comoment [N+1, k, k] float64 = Σ_i (x_i − mean)(x_i − mean)ᵀ over the samples of each n, whose
    diagonal is the M2 of each column and whose [y, c] entry is the C_yc of docs/semantics-dpm.md §9. Timesteps
    without samples (and index 0) have count 0, mean 0, comoment 0. NaN columns stay NaN.
    """
    _check_float("stats", stats)
    if stats.dim() != 2:
        raise ValueError(f"stats must be [B, k], got shape {tuple(stats.shape)}")
    if not isinstance(timesteps, Tensor) or timesteps.is_floating_point() or timesteps.is_complex() \
            or timesteps.dtype == torch.bool:
        raise TypeError("timesteps must be an integer tensor")
    if timesteps.shape != stats.shape[:1]:
        raise ValueError(f"timesteps must be [B] = [{stats.shape[0]}], got shape {tuple(timesteps.shape)}")
    num_steps = int(num_steps)
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    k = stats.shape[1]
    check_output_bytes("segment_moments", "num_steps", num_steps, (num_steps + 1, k, k))
    ts = timesteps.to(device=stats.device, dtype=torch.long)
    if ts.numel() and (int(ts.min()) < 1 or int(ts.max()) > num_steps):
        raise ValueError(f"timesteps must lie in 1..{num_steps}, got range [{int(ts.min())}, {int(ts.max())}]")
    nseg = num_steps + 1
    order = torch.sort(ts, stable=True).indices
    ts = ts[order]
    x = stats[order].to(torch.float64)
    count = torch.bincount(ts, minlength=nseg).to(torch.float64)
    mean = _segment_sum(x, ts, nseg) / count.clamp(min=1).unsqueeze(1)
    xc = x - mean[ts]
    comoment = _segment_sum(xc.unsqueeze(2) * xc.unsqueeze(1), ts, nseg)
    return count, mean, comoment


def merge_moments(a: Tuple[Tensor, Tensor, Tensor], b: Tuple[Tensor, Tensor, Tensor]
                  ) -> Tuple[Tensor, Tensor, Tensor]:
    """Chan et al. merge of two ``(count, mean, comoment)`` states (shapes as segment_moments').

    n = n_a + n_b, Δ = μ_b − μ_a, μ = μ_a + Δ·n_b/n, C = C_a + C_b + ΔΔᵀ·n_a·n_b/n (docs/semantics-dpm.md §9).
    Rows with n = 0 stay zero.
    """
    na, ma, ca = a
    nb, mb, cb = b
    n = na + nb
    safe = n.clamp(min=1)
    delta = mb - ma
    wb = (nb / safe).unsqueeze(-1)
    mean = ma + delta * wb
    w = (na * nb / safe).reshape(-1, *([1] * (ca.dim() - 1)))
    com = ca + cb + delta.unsqueeze(-1) * delta.unsqueeze(-2) * w
    empty = n == 0
    if bool(empty.any()):
        mean = torch.where(empty.unsqueeze(-1), torch.zeros_like(mean), mean)
        com = torch.where(empty.reshape(-1, *([1] * (ca.dim() - 1))), torch.zeros_like(com), com)
    return n, mean, com


# ---------------------------------------------------------------------------- trajectory DP

CostLike = Union[Tensor, Callable[[Tensor, Tensor], Tensor]]


def delta_cost(log_alpha_bar: Tensor, delta: Tensor, s: Tensor, t: Tensor) -> Tensor:
    """δ-form DP cost F[s,t] = log(α_{t|s} β̄_s + β_{t|s} δ_t) − log β̄_t (docs/semantics-dpm.md §5), outer over s, t.

    ``s`` [S] and ``t`` [T] are integer index tensors (1 ≤ s); returns [S, T] float64 with +inf
    where s ≥ t. Finite for every δ_t ≥ 0 because α_{t|s} β̄_s > 0 for s ≥ 1.
    """
    la = log_alpha_bar.to(torch.float64)
    ls, lt = la[s].unsqueeze(1), la[t].unsqueeze(0)
    dl = (lt - ls).clamp(max=0.0)
    val = torch.log(torch.exp(dl) * -torch.expm1(ls) + -torch.expm1(dl) * delta.to(torch.float64)[t].unsqueeze(0)) \
        - torch.log(-torch.expm1(lt))
    return val.masked_fill(s.unsqueeze(1) >= t.unsqueeze(0), math.inf)


def delta_cost_matrix(log_alpha_bar: Tensor, delta: Tensor, chunk_elems: int = 1 << 22) -> Tensor:
    """Dense [N+1, N+1] float64 δ-form cost (row/column 0 and s ≥ t are +inf), built in column blocks."""
    n1 = log_alpha_bar.numel()
    F = torch.full((n1, n1), math.inf, dtype=torch.float64)
    s = torch.arange(1, n1)
    step = max(1, chunk_elems // max(1, n1))
    for t0 in range(1, n1, step):
        t = torch.arange(t0, min(n1, t0 + step))
        F[1:, t0:t0 + t.numel()] = delta_cost(log_alpha_bar, delta, s, t)
    return F


def minplus_dp(F: CostLike, K: int, num_steps: Optional[int] = None, *, start: int = 1,
               chunk_elems: int = 1 << 18, max_dense_bytes: int = 1 << 30) -> Tuple[Tensor, Tensor]:
    """Min-plus dynamic programme over increasing paths start = τ_1 < τ_2 < … < τ_k.

    C[1, start] = 0 and C[k, t] = min_{start ≤ s < t} C[k−1, s] + F[s, t] for k = 2..K, with the
    arg-min in D[k, t] (the smallest such s on ties, i.e. ``np.argmin`` order); unreachable entries
    are C = +inf, D = −1. The best K-point path ending at N is C[K, N] (see :func:`minplus_path`).

    ``F`` is a dense [N+1, N+1] floating tensor (entries with s ≥ t are ignored) or a callable
    ``F(s, t) -> [S, T]`` on int64 index tensors (``num_steps`` required). A callable is tabulated
    once when the (N+1)² float64 table fits in ``max_dense_bytes``, else re-evaluated block by
    block for every k. Work is O(K·N²), row by row over k, each row in t-blocks of at most about
    ``chunk_elems`` candidates. Returns C [K+1, N+1] float64 and D [K+1, N+1] int64 on F's device
    (CPU for a callable); rows 0 and 1 hold the initial state.
    """
    # [note: minplus_dp layout] The table is stored transposed, FT[t, s], with +inf for s ≥ t, so
    # the candidates of one t are contiguous; numpy's add (into a reused, cache-sized buffer) and
    # argmin over the last axis are several times faster than torch's broadcast add + dim-0 min on
    # the CPU. This loop is the reference; the tigercore::minplus_dp op's native kernels
    # (csrc/cpu/dpm_kernels.h [note: minplus blocking], csrc/cuda/dpm.cu) give the same C and D.
    device = torch.device("cpu")
    if isinstance(F, Tensor):
        _check_float("F", F)
        if F.dim() != 2 or F.shape[0] != F.shape[1]:
            raise ValueError(f"F must be a square [N+1, N+1] matrix, got shape {tuple(F.shape)}")
        if num_steps is not None and int(num_steps) != F.shape[0] - 1:
            raise ValueError(f"num_steps={num_steps} does not match F of shape {tuple(F.shape)}")
        num_steps, device = F.shape[0] - 1, F.device
        if bool(torch.isnan(F).any()):
            raise ValueError("F contains NaN")
        FT = np.ascontiguousarray(F.detach().to("cpu", torch.float64).numpy().T)
        idx = np.arange(FT.shape[0])
        FT[idx[:, None] <= idx[None, :]] = np.inf             # s >= t: never a candidate
        fn = None
    elif callable(F):
        if num_steps is None:
            raise ValueError("num_steps is required when F is a callable")
        fn, FT = F, None
    else:
        raise TypeError("F must be a [N+1, N+1] tensor or a callable F(s, t)")
    N, K, start = int(num_steps), int(K), int(start)
    if not 0 <= start <= N:
        raise ValueError(f"start must lie in 0..{N}, got {start}")
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    check_output_bytes("minplus_dp", "K", K, (K + 1, N + 1))

    def block_T(s_lo: int, s_hi: int, t_lo: int, t_hi: int) -> np.ndarray:
        """FT[t_lo:t_hi, s_lo:s_hi] with +inf where s >= t (callable path)."""
        s_idx, t_idx = torch.arange(s_lo, s_hi), torch.arange(t_lo, t_hi)
        blk = fn(s_idx, t_idx).detach().to("cpu", torch.float64)
        if blk.shape != (s_hi - s_lo, t_hi - t_lo):
            raise ValueError(f"F(s, t) must return [{s_hi - s_lo}, {t_hi - t_lo}], got {tuple(blk.shape)}")
        blk = blk.masked_fill(s_idx.unsqueeze(1) >= t_idx.unsqueeze(0), math.inf)
        return blk.numpy().T

    if FT is None and (N + 1) ** 2 * 8 <= max_dense_bytes:
        FT = np.full((N + 1, N + 1), np.inf)
        step = max(1, chunk_elems // (N + 1))
        for t0 in range(start + 1, N + 1, step):
            t1 = min(N + 1, t0 + step)
            FT[t0:t1, start:t1 - 1] = block_T(start, t1 - 1, t0, t1)

    C = np.full((K + 1, N + 1), np.inf)
    D = np.full((K + 1, N + 1), -1, dtype=np.int64)
    C[1, start] = 0.0
    buf = np.empty(2 * chunk_elems + 2 * (N + 1))
    for k in range(2, K + 1):
        lo = start + k - 2                  # smallest s with C[k-1, s] < inf
        if lo + 1 > N:
            break
        prev = C[k - 1]
        neg_inf = bool(np.isneginf(prev).any())
        t0 = lo + 1
        while t0 <= N:
            # rows t in [t0, t1), candidates s in [lo, t1-1): (a + w)·w <= chunk_elems, a = t0-lo-1
            a = t0 - lo - 1
            width = min(N + 1 - t0, max(1, int((math.sqrt(a * a + 4.0 * chunk_elems) - a) / 2)))
            t1 = t0 + width
            blk = FT[t0:t1, lo:t1 - 1] if FT is not None else block_T(lo, t1 - 1, t0, t1)
            cand = buf[:blk.size].reshape(blk.shape)
            np.add(blk, prev[lo:t1 - 1], out=cand)
            if neg_inf:   # -inf + the +inf of an s >= t entry is NaN, but s >= t is no candidate
                cand[np.arange(t0, t1)[:, None] <= np.arange(lo, t1 - 1)[None, :]] = np.inf
            arg = np.argmin(cand, axis=1)   # first minimum on ties
            val = cand[np.arange(width), arg]
            if np.isnan(val).any():
                raise ValueError(f"F is NaN for a candidate of some t in [{t0}, {t1})")
            C[k, t0:t1] = val
            D[k, t0:t1] = np.where(np.isfinite(val), arg + lo, -1)
            t0 = t1
    return torch.from_numpy(C).to(device), torch.from_numpy(D).to(device)


def minplus_path(D: Tensor, K: int, end: int) -> Tensor:
    """Backtrack the K-point path ending at ``end`` from minplus_dp's D; returns ascending int64."""
    path = [int(end)]
    for k in range(int(K), 1, -1):
        prev = int(D[k, path[-1]])
        if prev < 0:
            raise ValueError(f"no {K}-point path ends at {end}")
        path.append(prev)
    return torch.tensor(path[::-1], dtype=torch.long)
