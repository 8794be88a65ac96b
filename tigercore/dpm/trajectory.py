# Sampling trajectories 1 = τ_1 < … < τ_K = N (docs/semantics-dpm.md §5).
# optimal_trajectory: min-plus DP of the δ-form cost F[s,t] = log(α_{t|s}β̄_s + β_{t|s}δ_t) − log β̄_t
# (KL-optimal for Analytic-DDPM); dp_seg: the official tail-splitting heuristic on naive Γ tables;
# dp_vb: the likelihood DP on a Monte Carlo NLL matrix; linear / quad_ddim: fixed spacings.
# DP core: the tigercore::minplus_dp op (native, or tigercore/reference/dpm.py); tests:
# tests/test_dpm_trajectory.py, tests/test_dpm_native.py.
from __future__ import annotations

import math
import warnings
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..reference.dpm import delta_cost, delta_cost_matrix, minplus_dp as _ref_minplus_dp, minplus_path
from ._compat import renamed_kwargs
from ._ops import minplus_dp
from .gamma import GammaTable
from .schedule import NoiseSchedule
from .variance import _delta

__all__ = ["Trajectory", "linear_trajectory", "quad_ddim_trajectory", "optimal_trajectory", "trajectory_cost",
           "trajectory_kl_per_dim", "dp_seg_trajectory", "dp_vb_trajectory"]


class Trajectory(NamedTuple):
    """What every trajectory function returns (docs/semantics-dpm.md §5).

    ``timesteps``: int64 [K], strictly ascending in 1..N (τ_1 … τ_K). ``cost``: the objective the
    function minimised for this path, as a float: Σ F (the δ-form cost, :func:`trajectory_cost`)
    for ``optimal`` and ``dp_seg``, the summed expected NLL terms in nats per datum (prior
    excluded) for ``dp_vb``, and NaN for the fixed spacings ``linear`` and ``quad_ddim``.
    ``timesteps, cost = optimal_trajectory(...)`` unpacks it; every function of tigercore.dpm that
    takes a trajectory also accepts a Trajectory.
    """

    timesteps: Tensor
    cost: float


def _check_k(num_timesteps: int, K: int) -> Tuple[int, int]:
    N, K = int(num_timesteps), int(K)
    if not 1 <= K <= N:
        raise ValueError(f"the number of steps K must lie in 1..N = 1..{N}, got {K}")
    if K == 1 and N != 1:
        raise ValueError("K = 1 is only possible for N = 1 (a trajectory runs from 1 to N)")
    return N, K


@renamed_kwargs(num_steps="num_timesteps", K="num_inference_steps")
def linear_trajectory(num_timesteps: int, num_inference_steps: int) -> Trajectory:
    """Even spacing (the official code's): Python ``round`` (half to even) of the running float
    1, 1 + (N−1)/(K−1), …; N = ``num_timesteps``, K = ``num_inference_steps``; cost NaN."""
    N, K = _check_k(num_timesteps, num_inference_steps)
    if K == 1:
        return Trajectory(torch.ones(1, dtype=torch.long), math.nan)
    step, x, out = (N - 1) / (K - 1), 1.0, []
    for _ in range(K):
        out.append(round(x))
        x += step
    return Trajectory(_validated(out, N), math.nan)


@renamed_kwargs(num_steps="num_timesteps", K="num_inference_steps")
def quad_ddim_trajectory(num_timesteps: int, num_inference_steps: int) -> Trajectory:
    """DDIM quadratic spacing: int(linspace(0, √(0.8N), K)²) + 1 (ends below N by design); cost NaN."""
    N, K = _check_k(num_timesteps, num_inference_steps)
    out = (np.linspace(0.0, math.sqrt(0.8 * N), K) ** 2).astype(np.int64) + 1
    t = torch.from_numpy(out)
    if K > 1 and not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"quad_ddim gives repeated timesteps for N={N}, K={K}; use fewer steps")
    return Trajectory(t, math.nan)


def _validated(steps, N: int) -> Tensor:
    t = torch.as_tensor(steps, dtype=torch.long)
    if t[0] != 1 or t[-1] != N or (t.numel() > 1 and not bool((t[1:] > t[:-1]).all())):
        raise ValueError(f"invalid trajectory {t.tolist()[:8]}... (must rise strictly from 1 to N={N})")
    return t


def _delta_fn(schedule: NoiseSchedule, delta: Tensor):
    if bool(torch.isnan(delta[1:]).any()):
        raise ValueError("one_minus_gamma has NaN entries (timesteps without samples); the DP needs all n")
    if bool((delta[1:] < 0).any()):
        raise ValueError("one_minus_gamma must be >= 0 (clip it; GammaTable does)")
    la = schedule.log_alpha_bar
    return lambda s, t: delta_cost(la, delta, s, t)


# Largest dense float64 cost table the DP builds (N ≈ 11,585); beyond it the reference DP evaluates
# F block by block instead (slower, but without the (N+1)² table).
_DENSE_BYTES = 1 << 30


def _delta_dp(schedule: NoiseSchedule, delta: Tensor, K: int, N: int) -> Tuple[Tensor, Tensor]:
    """C, D of the δ-form DP on [1, N] with K points: the tigercore::minplus_dp op on the dense F."""
    fn = _delta_fn(schedule, delta)                    # validates δ
    if (N + 1) ** 2 * 8 > _DENSE_BYTES:
        return _ref_minplus_dp(fn, K, N, start=1)
    return minplus_dp(delta_cost_matrix(schedule.log_alpha_bar[:N + 1], delta[:N + 1]), K, 1)


@renamed_kwargs(num_steps="num_inference_steps")
def optimal_trajectory(schedule: NoiseSchedule, one_minus_gamma, num_inference_steps: int) -> Trajectory:
    """KL-optimal K-step trajectory for Analytic-DDPM by the δ-form DP on the full range [1, N].

    Returns a :class:`Trajectory` (timesteps, cost): ascending int64 [K] from 1 to N, and
    C[K, N] = Σ_k F[τ_{k−1}, τ_k].
    Ties go to the smallest predecessor (``np.argmin`` order). The KL per dimension of the path is
    ½(cost + log(β̄_N/(α_{N|1}β̄_1))), see :func:`trajectory_kl_per_dim`.
    """
    delta = _delta(one_minus_gamma, schedule)
    N, K = _check_k(schedule.num_timesteps, num_inference_steps)
    if K == 1:
        return Trajectory(torch.ones(1, dtype=torch.long), 0.0)
    C, D = _delta_dp(schedule, delta, K, N)
    path = minplus_path(D, K, N)
    if isinstance(one_minus_gamma, GammaTable):
        # [note: clipped zeros attract the DP] δ̂ = 0 from the lower clip (Monte Carlo noise above δ)
        # makes cov_x0(t) = 0, so a long jump onto such t looks free (cost as for a point mass).
        hit = path[1:][(one_minus_gamma.clipped & (one_minus_gamma.one_minus_gamma == 0))[path[1:]]]
        if hit.numel():
            warnings.warn(f"optimal_trajectory: the path lands on timesteps {hit[:6].tolist()} where δ̂ was "
                          "clipped to 0; the DP treats them as (nearly) free. Estimate δ with more samples "
                          "or estimator='npr', or check the path.", RuntimeWarning, stacklevel=3)
    return Trajectory(path, float(C[K, N]))


def _path(schedule: NoiseSchedule, timesteps) -> Tensor:
    if isinstance(timesteps, Trajectory):
        timesteps = timesteps.timesteps
    t = torch.as_tensor(timesteps)
    if t.is_floating_point() or t.dim() != 1 or t.numel() < 1:
        raise ValueError("timesteps must be a non-empty 1-D integer sequence")
    t = t.to("cpu", torch.long)
    if int(t.min()) < 1 or int(t.max()) > schedule.num_timesteps or not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"timesteps must rise strictly within 1..{schedule.num_timesteps}")
    return t


def trajectory_cost(schedule: NoiseSchedule, one_minus_gamma, timesteps) -> float:
    """Σ_k F[τ_{k−1}, τ_k] of any increasing path in 1..N (a tensor, list or Trajectory), summed left to right like the DP
    (equal to C[K, N] up to the rounding of F's element-wise evaluation)."""
    delta = _delta(one_minus_gamma, schedule)
    t = _path(schedule, timesteps)
    fn, f = _delta_fn(schedule, delta), []
    for i in range(0, t.numel() - 1, 256):       # F on the path's pairs, in blocks of the outer form
        f += fn(t[i:i + 256], t[i + 1:i + 257]).diagonal().tolist()
    total = 0.0
    for v in f:
        total = total + v
    return total


def trajectory_kl_per_dim(schedule: NoiseSchedule, one_minus_gamma, timesteps) -> float:
    """Σ_{k≥2} E KL(q(x_s|x_t,x_0) ‖ p(x_s|x_t))/d = ½ Σ J(s,t) for Analytic-DDPM with the exact mean
    (docs/semantics-dpm.md §5): ½(Σ F + log(β̄_{τK} / (α_{τK|τ1} β̄_{τ1}))), the log term being Σ log(β̄_t/(α_{t|s}β̄_s))."""
    t = _path(schedule, timesteps)
    a, b = int(t[0]), int(t[-1])
    const = float(schedule.log_beta_bar[b] - schedule.log_skip_alpha(a, b) - schedule.log_beta_bar[a])
    return 0.5 * (trajectory_cost(schedule, one_minus_gamma, t) + const)


@renamed_kwargs(num_steps="num_inference_steps")
def dp_seg_trajectory(schedule: NoiseSchedule, table, num_inference_steps: int) -> Trajectory:
    """Official ``dp_seg`` (docs/semantics-dpm.md §5): cut the tail where the naive Γ̂ exceeds 1,
    DP on the head. The cost of the returned :class:`Trajectory` is Σ F over the whole path.

    ``table``: a :class:`GammaTable` (Γ̂ > 1 ⇔ ``clipped & (δ == 0)``, as after ``from_ms_eps``) or a
    raw Γ vector of length N + 1. idx = first n with Γ̂_n > 1 (N + 1 if none), num_bad = 2(N − idx + 1),
    N1 = N − num_bad, K1 = ceil((1 − 0.8·num_bad/N)·K), K2 = K − K1; then K1 ≤ N1, K2 ≤ num_bad and
    K2 ≥ 1 if num_bad > 0 (each adjustment moves the difference to the other part). The DP runs on
    [1, N1] with K1 points and round(N − k(N − N1)/K2), k = K2−1..0, is appended.

    [note: dp_seg order] The caps are applied in the order listed (docs/semantics-dpm.md §5).
    """
    N, K = _check_k(schedule.num_timesteps, num_inference_steps)
    if isinstance(table, GammaTable):
        delta = table.one_minus_gamma
        bad = table.clipped & (delta == 0)
    else:
        g = torch.as_tensor(table, dtype=torch.float64)
        if g.shape != (N + 1,):
            raise ValueError(f"Γ must have shape ({N + 1},), got {tuple(g.shape)}")
        bad = g > 1
        delta = (1.0 - g).clamp(0.0, 1.0)
    bad_idx = torch.nonzero(bad[1:]).flatten()
    idx = int(bad_idx[0]) + 1 if bad_idx.numel() else N + 1
    num_bad = 2 * (N - idx + 1)
    N1 = N - num_bad
    K1 = math.ceil((1.0 - 0.8 * num_bad / N) * K)
    K2 = K - K1
    if K1 > N1:
        K1, K2 = N1, K - N1
    if K2 > num_bad:
        K2, K1 = num_bad, K - num_bad
    if num_bad > 0 and K2 < 1:
        K2, K1 = 1, K - 1
    if N1 < 1 or not 1 <= K1 <= N1 or (K1 == 1 and N1 != 1):
        raise ValueError(f"dp_seg: the tail cut leaves [1, {N1}] for {K1} steps (idx={idx}, num_bad={num_bad})")
    head = _delta(delta, schedule)
    if K1 == 1:
        path = torch.ones(1, dtype=torch.long)
    else:
        C, D = _delta_dp(schedule, head, K1, N1)
        path = minplus_path(D, K1, N1)
    tail = [round(N - k * (N - N1) / K2) for k in range(K2 - 1, -1, -1)]
    steps = _validated(path.tolist() + tail, N)
    return Trajectory(steps, trajectory_cost(schedule, delta, steps))


@renamed_kwargs(num_steps="num_inference_steps")
def dp_vb_trajectory(cost, num_inference_steps: int, *, first_step: Optional[int] = None) -> Trajectory:
    """Likelihood DP (``dp_vb``, docs/semantics-dpm.md §5, §7) on an [N+1, N+1] matrix of expected NLL
    terms in nats, as built by :func:`tigercore.dpm.nelbo_terms` (pass its result or its ``.F``).

    ``cost[s, t]`` (0 < s < t) is E[L_{s,t}] of the step t → s and ``cost[0, t]`` the decoder term
    −E log p(x_0 | x_t); entries with s ≥ t are ignored. The path runs 0 → τ_1 → … → τ_K = N.
    ``first_step=None`` leaves τ_1 free (the official ``dp_vb``); ``first_step=1`` forces τ_1 = 1
    (any other value likewise), by treating cost[0, t] as +inf for t ≠ first_step. Returns a
    :class:`Trajectory` (timesteps [K] ascending, without the leading 0; cost C[K+1, N] in nats).
    """
    cost = getattr(cost, "F", cost)
    if not isinstance(cost, Tensor) or cost.dim() != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError("cost must be a square [N+1, N+1] tensor (or a NelboTerms)")
    N, K = cost.shape[0] - 1, int(num_inference_steps)
    if not 1 <= K <= N:
        raise ValueError(f"the number of steps K must lie in 1..N = 1..{N}, got {K}")
    if first_step is not None:
        if not 1 <= int(first_step) <= N - K + 1:
            raise ValueError(f"first_step must lie in 1..N − K + 1 = 1..{N - K + 1}, got {first_step}")
        cost = cost.clone()
        keep = cost[0, int(first_step)].clone()
        cost[0, 1:] = math.inf
        cost[0, int(first_step)] = keep
    C, D = minplus_dp(cost, K + 1, 0)
    if not math.isfinite(float(C[K + 1, N])):
        raise ValueError(f"no finite {K}-step path to N = {N} in cost (is cost[·, N] filled?)")
    path = minplus_path(D, K + 1, N)
    return Trajectory(path[1:], float(C[K + 1, N]))
