# Independent float64 oracles for the Analytic-DPM reductions (spec analytic_dpm.md §2, §5, §11.5):
# plain sequential sums for eps_stats' columns and exhaustive search over all paths for the DP.
# They share no code with tigercore.reference.dpm or the native kernels. Used by test_dpm_*.py.
import itertools
import math

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
