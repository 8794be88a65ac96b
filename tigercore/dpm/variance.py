# Optimal reverse variances of Analytic-DPM (docs/semantics-dpm.md §3, §4, §8; [ADPM] Thm 1/2).
# σ²_{s,t} = λ² + γ_{s,t}²·cov_x0(t), λ² = η²β̃(s,t), cov_x0(t) = (β̄_t/ᾱ_t)·δ_t clamped to the data
# range, γ in the cancellation-free form γ = (ᾱ_s β_{t|s} + λ²ᾱ_t)/(β̄_t(√ᾱ_s + √((β̄_s−λ²)ᾱ_t/β̄_t))).
# diag_reverse_variance is the per-element NPR / SN / "eps"-heuristic version of §8.
# Float64 for the scalar tables; tests: tests/test_dpm_exact_cases.py (T1, T2, §11.3 heads).
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from .gamma import GammaTable
from .schedule import IndexLike, NoiseSchedule

__all__ = ["lambda_sq", "gamma_coef", "cov_x0", "pixel_clip_bound", "reverse_variance",
           "diag_reverse_variance", "DIAG_KINDS"]

DIAG_KINDS = ("npr", "sn", "eps")
ClipLike = Union[bool, float]


def lambda_sq(schedule: NoiseSchedule, s: IndexLike, t: IndexLike, eta: float = 1.0) -> Tensor:
    """λ² = η²·β̃(s,t), the variance of the λ-family q_λ(x_s | x_t, x_0) (η = 1 DDPM, η = 0 DDIM)."""
    return float(eta) ** 2 * schedule.tilde_beta(s, t)


def gamma_coef(schedule: NoiseSchedule, s: IndexLike, t: IndexLike, lam_sq: Tensor) -> Tensor:
    """γ_{s,t} = √ᾱ_s − √((β̄_s − λ²)ᾱ_t/β̄_t), the x_0-coefficient of μ̃, in the stable form (§3).

    [note: stable gamma] Multiplying by the conjugate and using ᾱ_s β̄_t − β̄_s ᾱ_t = ᾱ_s β_{t|s}
    avoids subtracting two numbers close to √ᾱ_s; β̄_s − λ² is clamped at 0 before the root.
    """
    s_, t_ = schedule._pair(s, t)
    ab_s, ab_t = schedule.alpha_bar[s_], schedule.alpha_bar[t_]
    bb_s, bb_t = schedule.beta_bar[s_], schedule.beta_bar[t_]
    lam = torch.as_tensor(lam_sq, dtype=torch.float64)
    root = torch.sqrt((bb_s - lam).clamp(min=0.0) * ab_t / bb_t)
    return (ab_s * schedule.skip_beta(s_, t_) + lam * ab_t) / (bb_t * (torch.sqrt(ab_s) + root))


def _cov_max(clip: ClipLike) -> Optional[float]:
    """[note: cov clip] True → 1 (data in [−1, 1], ((b−a)/2)² = 1, the official clamp); a float →
    that bound (((b−a)/2)² for data in [a, b]); False → no clamp."""
    if clip is True:
        return 1.0
    if clip is False or clip is None:
        return None
    v = float(clip)
    if not v > 0:
        raise ValueError(f"clip must be True, False or a positive bound, got {clip!r}")
    return v


def _delta(one_minus_gamma, schedule: NoiseSchedule) -> Tensor:
    d = one_minus_gamma.one_minus_gamma if isinstance(one_minus_gamma, GammaTable) else one_minus_gamma
    d = torch.as_tensor(d)
    if not d.is_floating_point():
        raise TypeError(f"one_minus_gamma must be floating (float64 recommended), got {d.dtype}")
    if d.shape != (schedule.num_timesteps + 1,):
        raise ValueError(f"one_minus_gamma must have shape ({schedule.num_timesteps + 1},) "
                         f"(index 0 unused), got {tuple(d.shape)}")
    return d.detach().to("cpu", torch.float64)


def cov_x0(schedule: NoiseSchedule, one_minus_gamma, t: IndexLike, clip: ClipLike = True) -> Tensor:
    """cov_x0(t) = (β̄_t/ᾱ_t)·δ_t, clamped to [0, bound] (see [note: cov clip]); float64."""
    d = _delta(one_minus_gamma, schedule)
    t_ = schedule._idx(t, "t")
    if t_.numel() and int(t_.min()) < 1:
        raise ValueError("cov_x0 needs t >= 1")
    dt = d[t_]
    if bool(torch.isnan(dt).any()):
        raise ValueError(f"one_minus_gamma is NaN (not estimated) at some of the timesteps {t_.unique()[:8].tolist()}")
    # β̄/ᾱ = expm1(−log ᾱ), accurate for small t as well
    cov = torch.expm1(-schedule.log_alpha_bar[t_]) * dt
    hi = _cov_max(clip)
    return cov if hi is None else cov.clamp(0.0, hi)


def pixel_clip_bound(y: float) -> float:
    """(y·(2/255)·√(π/2))²: the σ² bound of the step landing on x_{τ1}, E|σz| ≤ y pixel bins (§4)."""
    return (float(y) * 2.0 / 255.0 * math.sqrt(math.pi / 2.0)) ** 2


def _pixel_clip(var: Tensor, s: Tensor, clip_pixel: Optional[float], first_step: int) -> Tensor:
    if clip_pixel is None:
        return var
    s = s.to(var.device)
    while s.dim() < var.dim():
        s = s.unsqueeze(-1)
    bound = torch.as_tensor(pixel_clip_bound(clip_pixel), dtype=var.dtype, device=var.device)
    return torch.where(s == int(first_step), torch.minimum(var, bound), var)


def reverse_variance(schedule: NoiseSchedule, one_minus_gamma, s: IndexLike, t: IndexLike,
                     eta: float = 1.0, clip: ClipLike = True, clip_pixel: Optional[float] = None,
                     first_step: int = 1) -> Tensor:
    """Analytic-DPM σ² of the reverse step t → s (Theorem 1, skip-step form), float64.

    ``one_minus_gamma``: δ = 1 − Γ as a float64 [N+1] tensor or a :class:`GammaTable`. ``s``, ``t``:
    ints or integer tensors (broadcast) with 0 ≤ s < t ≤ N. ``eta`` sets λ² = η²β̃(s,t) (1: DDPM,
    0: DDIM). ``clip``: clamp of cov_x0 (True = [0, 1], data in [−1, 1]; a float = [0, value];
    False = none). ``clip_pixel`` = y applies σ² ≤ (y·2/255·√(π/2))² to steps with s == ``first_step``
    (τ_1; 1 for every built-in trajectory), for sampling only.
    """
    s_, t_ = schedule._pair(s, t)
    if s_.numel() and bool(torch.any(s_ >= t_)):
        raise ValueError("reverse_variance needs s < t")
    lam = lambda_sq(schedule, s_, t_, eta)
    g = gamma_coef(schedule, s_, t_, lam)
    var = lam + g * g * cov_x0(schedule, one_minus_gamma, t_, clip)
    return _pixel_clip(var, s_, clip_pixel, first_step)


def diag_reverse_variance(schedule: NoiseSchedule, s: IndexLike, t: IndexLike, *, kind: str,
                          eps_pred: Optional[Tensor] = None, head: Optional[Tensor] = None,
                          eta: float = 1.0, clip: ClipLike = True, avg_cov: bool = False,
                          clip_pixel: Optional[float] = None, first_step: int = 1) -> Tensor:
    """Per-element σ²(x_t) = λ² + γ²·ĉov_x0(x_t) for NPR-, SN-DPM and the "eps" heuristic (§8).

    ``kind="npr"``: ĉov = (β̄_t/ᾱ_t)·g with ``head`` = g ≈ E[(ε−ε̂)² | x_t];
    ``kind="sn"``: ĉov = (β̄_t/ᾱ_t)(h − ε̂²) with ``head`` = h ≈ E[ε² | x_t] and ``eps_pred`` = ε̂;
    ``kind="eps"``: ĉov = (β̄_t/ᾱ_t)(1 − ε̂²) from ``eps_pred`` alone.
    ``avg_cov`` replaces ĉov by its per-sample mean over the non-batch dims; ``clip`` clamps ĉov
    element-wise (as in :func:`reverse_variance`). ``s``, ``t`` are ints or [B] tensors (per
    sample). Computed in the inputs' dtype promoted to at least float32; returns their shape.
    """
    if kind not in DIAG_KINDS:
        raise ValueError(f"kind must be one of {DIAG_KINDS}, got {kind!r}")
    need_eps, need_head = kind in ("sn", "eps"), kind in ("npr", "sn")
    if need_eps and eps_pred is None:
        raise ValueError(f"kind={kind!r} needs eps_pred")
    if need_head and head is None:
        raise ValueError(f"kind={kind!r} needs head (g for npr, h for sn)")
    ref = head if need_head else eps_pred
    for name, x in (("eps_pred", eps_pred), ("head", head)):
        if x is not None:
            if not x.is_floating_point():
                raise TypeError(f"{name} must be floating, got {x.dtype}")
            if x.shape != ref.shape:
                raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(ref.shape)}")
    dtype = torch.promote_types(ref.dtype, torch.float32)
    s_, t_ = schedule._pair(s, t)
    if s_.numel() and bool(torch.any(s_ >= t_)):
        raise ValueError("diag_reverse_variance needs s < t")
    if s_.dim() > 1 or (s_.dim() == 1 and s_.shape[0] != ref.shape[0]):
        raise ValueError("s and t must be ints or [B] tensors matching the batch")
    lam = lambda_sq(schedule, s_, t_, eta)
    g = gamma_coef(schedule, s_, t_, lam)
    ratio = torch.expm1(-schedule.log_alpha_bar[t_])          # β̄_t/ᾱ_t

    def col(v: Tensor) -> Tensor:                             # [B] or [] → broadcastable
        v = v.to(device=ref.device, dtype=dtype)
        return v.reshape(-1, *([1] * (ref.dim() - 1))) if v.dim() == 1 else v

    if kind == "npr":
        core = head.to(dtype)
    elif kind == "sn":
        e = eps_pred.to(dtype)
        core = head.to(dtype) - e * e
    else:
        e = eps_pred.to(dtype)
        core = 1.0 - e * e
    if avg_cov:
        dims = tuple(range(1, ref.dim()))
        core = core.mean(dim=dims, keepdim=True).expand_as(ref) if dims else core
    cov = col(ratio) * core
    hi = _cov_max(clip)
    if hi is not None:
        cov = cov.clamp(0.0, hi)
    var = col(lam) + col(g * g) * cov
    return _pixel_clip(var, s_.to(ref.device), clip_pixel, first_step) if clip_pixel is not None else var
