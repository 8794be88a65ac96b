# Reverse sampling loop of Analytic-DPM (docs/semantics-dpm.md §3 means, §4 clips, §6 loop, §8 heads).
# DDPM type: μ = coeff1·x̂_0 + coeff2·x_t; DDIM type (any η): μ = √ᾱ_s x̂_0 + √(β̄_s − λ²)·ε̂ (raw ε̂);
# σ² = λ² + γ²·cov_x0 from a δ table (analytic) or per-element heads (NPR / SN / "eps"), or the
# β_{t|s} / λ² baselines. Coefficients are float64 per step, cast to x's dtype.
# Reference for the later fused tigercore::analytic_step_; tests: tests/test_dpm_sampler.py.
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._compat import renamed_kwargs
from .schedule import NoiseSchedule, call_eps_model
from .trajectory import Trajectory, _path, linear_trajectory, optimal_trajectory, quad_ddim_trajectory
from .variance import DIAG_KINDS, _delta, diag_reverse_variance, lambda_sq, reverse_variance

__all__ = ["AnalyticSampler", "VARIANCES", "split_model_output", "resolve_trajectory", "reverse_step"]

VARIANCES = ("analytic", "npr", "sn", "eps", "beta", "beta_tilde")


def split_model_output(out, variance: str):
    """(ε̂, head) from a model output: a tensor, or a tuple (ε̂, head) for the NPR / SN heads."""
    if isinstance(out, (tuple, list)):
        eps_hat, head = out[0], (out[1] if len(out) > 1 else None)
    else:
        eps_hat, head = out, None
    if variance in ("npr", "sn") and head is None:
        raise ValueError(f"variance={variance!r} needs a model returning (eps_pred, head)")
    return eps_hat, head


# Trajectory names: "even" is the README's and diffusers' word for "linear", "quad" for "quad_ddim".
TRAJECTORY_NAMES = ("linear", "even", "quad_ddim", "quad", "optimal")


def resolve_trajectory(schedule: NoiseSchedule, trajectory, num_inference_steps: Optional[int],
                       one_minus_gamma=None) -> Tensor:
    """A timestep tensor from a name ("linear"/"even", "quad_ddim"/"quad", "optimal") + K, or a
    validated copy of a given path (tensor, list or :class:`Trajectory`)."""
    N = schedule.num_timesteps
    K = num_inference_steps
    if isinstance(trajectory, str):
        if K is None:
            raise ValueError(f"trajectory={trajectory!r} needs num_inference_steps")
        if trajectory in ("linear", "even"):
            return linear_trajectory(N, K).timesteps
        if trajectory in ("quad_ddim", "quad"):
            return quad_ddim_trajectory(N, K).timesteps
        if trajectory == "optimal":
            if one_minus_gamma is None:
                raise ValueError("trajectory='optimal' needs one_minus_gamma")
            return optimal_trajectory(schedule, one_minus_gamma, K).timesteps
        raise ValueError(f"unknown trajectory {trajectory!r} ({', '.join(TRAJECTORY_NAMES)} or a tensor)")
    if trajectory is None:
        return linear_trajectory(N, K if K is not None else N).timesteps
    return _path(schedule, trajectory)


def _randn(shape, generator, device, dtype) -> Tensor:
    """N(0, I) noise drawn on the generator's device (as diffusers' randn_tensor), moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gdev, dtype=dtype).to(device)


def _mean(schedule: NoiseSchedule, kind: str, x: Tensor, x0: Tensor, eps_hat: Tensor, s: int, t: int,
          lam: float) -> Tensor:
    """μ of the step t → s: DDPM form coeff1·x̂_0 + coeff2·x_t, or DDIM form √ᾱ_s x̂_0 + √(β̄_s − λ²)·ε̂."""
    sch = schedule
    if kind == "ddpm":
        c1 = math.sqrt(float(sch.alpha_bar[s])) * float(sch.skip_beta(s, t)) / float(sch.beta_bar[t])
        c2 = math.sqrt(float(sch.skip_alpha(s, t))) * float(sch.beta_bar[s]) / float(sch.beta_bar[t])
        return c1 * x0 + c2 * x
    ce = math.sqrt(max(float(sch.beta_bar[s]) - lam, 0.0))
    return math.sqrt(float(sch.alpha_bar[s])) * x0 + ce * eps_hat.to(x.dtype)


def scalar_step_variance(schedule: NoiseSchedule, variance: str, s, t, *, eta: float, delta=None,
                         clip_cov: Union[bool, float] = True, clip_pixel: Optional[float] = None,
                         first_step: int = 1) -> Tensor:
    """float64 σ² of steps t → s (s ≥ 1) for the scalar variances "analytic", "beta", "beta_tilde"."""
    if variance == "analytic":
        return reverse_variance(schedule, delta, s, t, eta=eta, clip=clip_cov, clip_pixel=clip_pixel,
                                first_step=first_step)
    if variance == "beta":
        return schedule.skip_beta(s, t)
    if variance == "beta_tilde":
        return lambda_sq(schedule, s, t, eta)
    raise ValueError(f"{variance!r} is not a scalar variance")


def reverse_step(schedule: NoiseSchedule, x: Tensor, eps_hat: Tensor, s: int, t: int, *, kind: str = "ddpm",
                 eta: float = 1.0, variance: str = "analytic", delta: Optional[Tensor] = None,
                 head: Optional[Tensor] = None, step_variance: Optional[float] = None, clip_x0: bool = True,
                 clip_cov: Union[bool, float] = True, clip_pixel: Optional[float] = None, first_step: int = 1,
                 avg_cov: bool = False, noise: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None):
    """One reverse step x_t → x_s of Analytic-DPM (docs/semantics-dpm.md §3, §4, §6); returns (x_s, x̂_0).

    Shared by :class:`AnalyticSampler` and the diffusers scheduler, so both give the same bits.
    x̂_0 = x_t/√ᾱ_t − √(β̄_t/ᾱ_t)·ε̂, clamped to [−1, 1] if ``clip_x0``; μ as in :func:`_mean`;
    s = 0 returns μ without noise. Otherwise x_s = μ + σ·z with σ² = ``step_variance`` if given,
    else the scalar or per-element σ² of ``variance``; z = ``noise`` or N(0, I) from ``generator``.
    """
    sch = schedule
    x0 = sch.predict_x0(x, t, eps_hat)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    lam = float(lambda_sq(sch, s, t, eta))
    mu = _mean(sch, kind, x, x0, eps_hat, s, t, lam)
    if s == 0:
        return mu, x0
    z = noise if noise is not None else _randn(x.shape, generator, x.device, x.dtype)
    if variance in DIAG_KINDS:
        var = diag_reverse_variance(sch, s, t, kind=variance, eps_pred=eps_hat, head=head, eta=eta, clip=clip_cov,
                                    avg_cov=avg_cov, clip_pixel=clip_pixel, first_step=first_step)
        return mu + var.sqrt().to(x.dtype) * z.to(x.dtype), x0
    if step_variance is None:
        step_variance = float(scalar_step_variance(sch, variance, s, t, eta=eta, delta=delta, clip_cov=clip_cov,
                                                   clip_pixel=clip_pixel, first_step=first_step))
    return mu + math.sqrt(float(step_variance)) * z.to(x.dtype), x0


def resolve_eta(kind: str, eta: Optional[float], where: str, stacklevel: int = 3) -> float:
    """η of a reverse process: 1 (DDPM) is the default everywhere; kind='ddim' needs it explicitly."""
    if kind not in ("ddpm", "ddim"):
        raise ValueError(f"kind must be 'ddpm' or 'ddim', got {kind!r}")
    if eta is None:
        if kind == "ddpm":
            return 1.0
        warnings.warn(f"{where}: kind='ddim' without eta uses η = 0 (the old default); pass eta explicitly "
                      "(η defaults to 1, DDPM, everywhere else in tigercore.dpm; omitting it for kind='ddim' "
                      "will become an error)", DeprecationWarning, stacklevel=stacklevel)
        return 0.0
    eta = float(eta)
    if kind == "ddpm" and eta != 1.0:
        raise ValueError("kind='ddpm' has η = 1; use kind='ddim' for other η")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    return eta


class AnalyticSampler:
    """Analytic-DPM sampler over a K-step trajectory (docs/semantics-dpm.md §6).

    Args:
        schedule: the forward process.
        model: ``model(x_t, t) -> ε̂`` (``t`` int64 [B], mapped by ``time_fn``); for
            ``variance="npr"``/``"sn"`` it returns ``(ε̂, head)`` with head g resp. h.
        one_minus_gamma: δ table (tensor [N+1] or :class:`GammaTable`), needed for "analytic".
        trajectory: ascending timesteps in 1..N (tensor, list or :class:`Trajectory`), or
            "linear"/"even", "quad_ddim"/"quad", "optimal" with ``num_inference_steps`` = K.
            Default: linear with K = num_inference_steps or N.
        kind: "ddpm" (η = 1, DDPM mean) or "ddim" (DDIM mean, any η: pass ``eta``).
        eta: λ² = η²β̃(s,t). Default 1 as in :func:`reverse_variance`; ``kind="ddim"`` needs it
            explicitly (omitted: η = 0 with a DeprecationWarning).
        variance: "analytic" (scalar δ table), "npr" / "sn" / "eps" (per element),
            "beta" (σ² = β_{t|s}) or "beta_tilde" (σ² = λ² = η²β̃(s,t), the process's own variance).
        clip_x0: clamp x̂_0 to [−1, 1]; clip_cov: cov_x0 clamp (True = [0, 1], float = [0, v]).
        clip_pixel: y of the σ² clamp on the step landing on x_{τ1} (analytic family only).
        avg_cov: per-sample mean of the per-element covariance (with "eps"/"npr"/"sn").
    """

    @renamed_kwargs(num_steps="num_inference_steps")
    def __init__(self, schedule: NoiseSchedule, model: Callable, *, one_minus_gamma=None,
                 trajectory: Union[str, Sequence[int], Tensor, Trajectory, None] = None,
                 num_inference_steps: Optional[int] = None, kind: str = "ddpm", eta: Optional[float] = None,
                 variance: str = "analytic", clip_x0: bool = True, clip_cov: Union[bool, float] = True,
                 clip_pixel: Optional[float] = None, avg_cov: bool = False,
                 time_fn: Optional[Callable[[Tensor], Tensor]] = None):
        eta = resolve_eta(kind, eta, "AnalyticSampler", stacklevel=4)   # user → renamed_kwargs → __init__
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        if variance == "analytic" and one_minus_gamma is None:
            raise ValueError("variance='analytic' needs one_minus_gamma (a GammaTable or δ tensor)")
        self.schedule, self.model, self.kind, self.eta = schedule, model, kind, float(eta)
        self.variance, self.clip_x0, self.clip_cov = variance, clip_x0, clip_cov
        self.clip_pixel, self.avg_cov, self.time_fn = clip_pixel, avg_cov, time_fn
        self.delta = _delta(one_minus_gamma, schedule) if one_minus_gamma is not None else None
        self.timesteps = resolve_trajectory(schedule, trajectory, num_inference_steps, one_minus_gamma)
        if self.delta is not None and variance == "analytic":
            bad = self.timesteps[torch.isnan(self.delta[self.timesteps])]
            if bad.numel():
                raise ValueError(f"δ is unknown (NaN) at trajectory steps {bad[:8].tolist()}")
        taus = torch.cat([torch.zeros(1, dtype=torch.long), self.timesteps])
        self._s, self._t = taus[:-1], taus[1:]
        self.first_step = int(self.timesteps[0])
        self.step_variances = self._scalar_variances()

    # ------------------------------------------------------------------ coefficients
    def _scalar_variances(self) -> Optional[Tensor]:
        """σ² of every step t → s (s ≥ 1) for the scalar variances; None for per-element ones."""
        s, t = self._s[1:], self._t[1:]
        if s.numel() == 0 or self.variance in DIAG_KINDS:
            return None
        return scalar_step_variance(self.schedule, self.variance, s, t, eta=self.eta, delta=self.delta,
                                    clip_cov=self.clip_cov, clip_pixel=self.clip_pixel, first_step=self.first_step)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, shape: Optional[Sequence[int]] = None, *, x_T: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32,
               progress: bool = False) -> Tensor:
        """Draw samples: start from ``x_T`` or N(0, I) of ``shape`` at t = τ_K, return x̂_0 at s = 0."""
        from tqdm.auto import tqdm

        if x_T is None:
            if shape is None:
                raise ValueError("pass shape or x_T")
            x = _randn(tuple(shape), generator, device, dtype)
        else:
            if not x_T.is_floating_point():
                raise TypeError(f"x_T must be floating, got {x_T.dtype}")
            x = x_T.clone()
        K = self.timesteps.numel()
        for i in tqdm(range(K - 1, -1, -1), disable=not progress, desc="sampling"):
            s, t = int(self._s[i]), int(self._t[i])
            eps_hat, head = split_model_output(call_eps_model(self.model, x, t, self.time_fn), self.variance)
            var = float(self.step_variances[i - 1]) if (self.step_variances is not None and s > 0) else None
            x, _ = reverse_step(self.schedule, x, eps_hat, s, t, kind=self.kind, eta=self.eta,
                                variance=self.variance, delta=self.delta, head=head, step_variance=var,
                                clip_x0=self.clip_x0, clip_cov=self.clip_cov, clip_pixel=self.clip_pixel,
                                first_step=self.first_step, avg_cov=self.avg_cov, generator=generator)
        return x

    _randn = staticmethod(_randn)
