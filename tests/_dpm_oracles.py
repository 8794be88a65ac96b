# Independent float64 oracles for the Analytic-DPM reductions (docs/semantics-dpm.md §2, §5, §11.5):
# plain float64 sums for eps_stats' columns (with the error bound of its fp32 tiles, and a numpy
# model of the fp32 tile tree) and exhaustive search over all paths for the DP. They share no code
# with tigercore.reference.dpm or the native kernels. Used by test_dpm_*.py.
import itertools
import math

import numpy as np
import torch


def naive_stats(e_hat, e, x0=None, x0h=None):
    """eps_stats' columns y, c, u, z, w as torch float64 sums over each sample (w NaN without x0)."""
    d = e_hat[0].numel()
    f = lambda t: t.reshape(t.shape[0], -1).double()            # noqa: E731
    eh, ee = f(e_hat), f(e)
    out = [(eh ** 2).sum(1) / d, (ee ** 2).sum(1) / d, ((ee - eh) * (ee + eh)).sum(1) / d,
           ((ee - eh) ** 2).sum(1) / d]
    out.append(((f(x0) - f(x0h)) ** 2).sum(1) / d if x0 is not None else torch.full_like(out[0], math.nan))
    return torch.stack(out, 1)


def brute_force(F, N, K, start=1):
    """All paths start < τ_2 < … < τ_K = N; cost summed left to right as the DP does; among the
    optimal ones the DP's back-pointers pick the smallest τ_{K−1}, then the smallest τ_{K−2}, …"""
    best = None
    for mid in itertools.combinations(range(start + 1, N), K - 2):
        path = (start,) + mid + (N,)
        cost = 0.0
        for s, t in zip(path[:-1], path[1:]):
            cost = cost + float(F[s, t])
        key = (cost, tuple(reversed(path)))
        if best is None or key < best:
            best = key
    return best[0], list(reversed(best[1]))


# ---- eps_stats accuracy: the error bound stated in [note: fixed reduction tree]
def _terms_abs(e_hat, e=None, x0=None, x0h=None):
    """Per column Σ|term|/d in float64 (NaN where the inputs are absent), from the exact inputs."""
    d = e_hat[0].numel()
    f = lambda t: t.reshape(t.shape[0], -1).double()            # noqa: E731
    eh = f(e_hat)
    nan = torch.full((eh.shape[0],), math.nan, dtype=torch.float64)
    cols = [(eh * eh).sum(1) / d]
    if e is not None:
        ee = f(e)
        cols += [(ee * ee).sum(1) / d, ((ee - eh) * (ee + eh)).abs().sum(1) / d, ((ee - eh) ** 2).sum(1) / d]
    else:
        cols += [nan, nan, nan]
    cols.append(((f(x0) - f(x0h)) ** 2).sum(1) / d if x0 is not None else nan)
    return torch.stack(cols, 1)


def eps_stats_error_bound(e_hat, e=None, x0=None, x0h=None):
    """Worst-case |native − exact| per entry: 13 roundings of the compute type (2^-24 for fp32,
    2^-53 when an input is fp64: up to 3 in a term, 10 in a 1024-tile's tree) times
    Σ|term|/d, plus fp64 slack for the tile-partial levels and the oracle's own sums."""
    fp64 = any(t is not None and t.dtype == torch.float64 for t in (e_hat, e, x0, x0h))
    unit = 2.0 ** -53 if fp64 else 2.0 ** -24
    return (13 * unit + 64 * 2.0 ** -53) * _terms_abs(e_hat, e, x0, x0h)


def assert_eps_stats_accurate(got, e_hat, e=None, x0=None, x0h=None):
    """got (an eps_stats result) within eps_stats_error_bound of the sequential fp64 oracle."""
    exact = naive_stats(e_hat, e if e is not None else e_hat, x0, x0h)
    bound = eps_stats_error_bound(e_hat, e, x0, x0h)
    have = ~torch.isnan(bound)
    err = (got - exact).abs()
    assert torch.isnan(got[~have]).all()
    assert bool((err[have] <= bound[have]).all()), f"max err/bound {float((err[have] / bound[have]).max()):.3g}"


def fp32_tile_tree(terms, tile=1024):
    """numpy: the eps_stats tree of [B, d] float32 terms (independent of the reference): a tile
    of T > 32 terms as T/32 rows of 32 lanes, adjacent rows added pairwise to one row; then the 32
    (or T < 32) lanes halved in float32; partials halved in float64. Returns float64 [B] sums (not
    divided by d)."""
    t = np.asarray(terms, dtype=np.float32)
    b, d = t.shape
    T = min(tile, 1 << max(0, (d - 1).bit_length()))
    nt = -(-d // T)
    t = np.concatenate([t, np.zeros((b, nt * T - d), np.float32)], 1).reshape(b, nt, T)
    if T > 32:
        t = t.reshape(b, nt, T // 32, 32)
        while t.shape[2] > 1:   # rows (2i, 2i+1) are neighbours in a (…, rows/2, 2, 32) view
            pairs = t.reshape(b, nt, t.shape[2] // 2, 2, 32)
            t = (pairs[:, :, :, 0, :] + pairs[:, :, :, 1, :]).astype(np.float32)
        t = t[:, :, 0, :]
    while t.shape[2] > 1:
        h = t.shape[2] // 2
        t = (t[:, :, :h] + t[:, :, h:]).astype(np.float32)
    p = t[:, :, 0].astype(np.float64)
    w = 1 << max(0, (nt - 1).bit_length())
    p = np.concatenate([p, np.zeros((b, w - nt))], 1)
    while p.shape[1] > 1:
        h = p.shape[1] // 2
        p = p[:, :h] + p[:, h:]
    return p[:, 0]
