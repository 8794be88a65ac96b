# Negative ELBO of a K-step DDPM-type reverse process in bits/dim (spec analytic_dpm.md §7, §4, §8).
# NELBO = KL(q(x_{τK}|x_0) ‖ N(0,I)) + Σ_{k≥2} [(d/2)(λ²/σ² − 1 + log(σ²/λ²)) + ‖μ̃ − μ‖²/(2σ²)]
#         − log P_dec(x_0 | x_{τ1}),  λ² = β̃(s,t), ‖μ̃ − μ‖² = γ²‖x_0 − clamp(x̂_0)‖², one x_t per term,
# with the discretized Gaussian decoder (tanh-approximated Φ, as the official code) of variance
# β̃(1,2) when τ1 = 1 (β̄_{τ1} otherwise). Float64 throughout; tests: tests/test_dpm_sampler.py.
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from .sampler import VARIANCES, resolve_trajectory, split_model_output
from .schedule import NoiseSchedule, call_eps_model
from .variance import DIAG_KINDS, _delta, diag_reverse_variance, gamma_coef, lambda_sq, reverse_variance

__all__ = ["NelboResult", "nelbo", "approx_std_normal_cdf", "log_discretized_normal"]

_LN2 = math.log(2.0)


@dataclass
class NelboResult:
    """Per-sample NELBO parts in bits/dim (float64 [B]) and the per-step terms in nats.

    ``bpd = continuous + discrete``; ``continuous`` = prior KL + Σ step KLs; ``discrete`` = the
    decoder's −log P; ``prior`` is included in ``continuous``; ``terms`` [K−1, B] are the step KLs
    (nats) for the trajectory pairs (τ_{k−1}, τ_k), k = 2..K, in ascending order.
    """

    bpd: Tensor
    continuous: Tensor
    discrete: Tensor
    prior: Tensor
    terms: Tensor
    timesteps: Tensor

    def mean(self) -> Dict[str, float]:
        return {"bpd": float(self.bpd.mean()), "continuous": float(self.continuous.mean()),
                "discrete": float(self.discrete.mean()), "prior": float(self.prior.mean())}


def approx_std_normal_cdf(z: Tensor) -> Tensor:
    """Φ(z) ≈ ½(1 + tanh(√(2/π)(z + 0.044715 z³))), the approximation of the official code."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z.pow(3))))


def log_discretized_normal(x: Tensor, mean: Tensor, var: Union[float, Tensor]) -> Tensor:
    """Element-wise log P of 8-bit bins (width 2/255) of N(mean, var) at x ∈ [−1, 1] (§7).

    Φ(upper) for x < −0.999, 1 − Φ(lower) for x > 0.999, Φ(upper) − Φ(lower) otherwise, clamped
    at 1e−12 before the log.
    """
    x, mean = x.to(torch.float64), mean.to(torch.float64)
    inv = torch.rsqrt(torch.as_tensor(var, dtype=torch.float64, device=x.device))
    c = x - mean
    cdf_up = approx_std_normal_cdf((c + 1.0 / 255.0) * inv)
    cdf_lo = approx_std_normal_cdf((c - 1.0 / 255.0) * inv)
    p = torch.where(x < -0.999, cdf_up, torch.where(x > 0.999, 1.0 - cdf_lo, cdf_up - cdf_lo))
    return torch.log(p.clamp(min=1e-12))


@torch.no_grad()
def nelbo(schedule: NoiseSchedule, model: Callable, x0: Tensor, trajectory: Union[str, Sequence[int], Tensor],
          *, num_steps: Optional[int] = None, variance: str = "analytic", one_minus_gamma=None,
          clip_x0: bool = True, clip_cov: Union[bool, float] = True, avg_cov: bool = False,
          decoder_variance: Optional[float] = None, time_fn: Optional[Callable[[Tensor], Tensor]] = None,
          generator: Optional[torch.Generator] = None) -> NelboResult:
    """Monte Carlo NELBO of x0 [B, ...] (data in [−1, 1], 8-bit grid) under the DDPM-type reverse
    process (λ² = β̃) on ``trajectory`` (as in :class:`AnalyticSampler`), with σ² from ``variance``
    ("analytic" needs ``one_minus_gamma``; "npr"/"sn" need a model returning (ε̂, head); "beta" and
    "beta_tilde" are the baselines). One x_t = √ᾱ_t x_0 + √β̄_t ε per term, ε from ``generator``.
    The σ² clamp on the step landing on x_{τ1} (``clip_pixel``) is a sampling device and not applied.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 2:
        raise ValueError("x0 must be a floating [B, ...] tensor with at least 2 dims")
    if variance == "analytic" and one_minus_gamma is None:
        raise ValueError("variance='analytic' needs one_minus_gamma")
    sch = schedule
    N = sch.num_steps
    delta = _delta(one_minus_gamma, sch) if one_minus_gamma is not None else None
    steps = resolve_trajectory(sch, trajectory, num_steps, one_minus_gamma)
    B, d = x0.shape[0], x0[0].numel()
    x0_64 = x0.to(torch.float64)
    dims = tuple(range(1, x0.dim()))

    def draw(t: int):
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64,
                          device=generator.device if generator is not None else x0.device).to(x0.device)
        x_t = sch.marginal(x0_64, t, eps).to(x0.dtype)
        eps_hat, head = split_model_output(call_eps_model(model, x_t, t, time_fn), variance)
        xh = sch.predict_x0(x_t.to(torch.float64), t, eps_hat.to(torch.float64))
        return (xh.clamp(-1.0, 1.0) if clip_x0 else xh), eps_hat, head

    # prior KL(N(√ᾱ x0, β̄) ‖ N(0, 1)) at τ_K, summed over dims
    tK = int(steps[-1])
    ab, bb = float(sch.alpha_bar[tK]), float(sch.beta_bar[tK])
    prior = 0.5 * (bb + ab * x0_64.pow(2) - 1.0 - math.log(bb)).sum(dims)

    terms = []
    for s, t in zip(steps[:-1].tolist(), steps[1:].tolist()):
        x0_hat, eps_hat, head = draw(t)
        lam = float(lambda_sq(sch, s, t, 1.0))
        g = float(gamma_coef(sch, s, t, torch.tensor(lam, dtype=torch.float64)))
        if variance in DIAG_KINDS:
            var = diag_reverse_variance(sch, s, t, kind=variance, eps_pred=eps_hat.to(torch.float64),
                                        head=None if head is None else head.to(torch.float64),
                                        clip=clip_cov, avg_cov=avg_cov).to(torch.float64)
        else:
            if variance == "analytic":
                v = reverse_variance(sch, delta, s, t, clip=clip_cov)
            elif variance == "beta":
                v = sch.skip_beta(s, t)
            else:
                v = torch.tensor(lam, dtype=torch.float64)
            var = torch.full_like(x0_64, float(v))
        r = lam / var
        kl = 0.5 * (r - 1.0 - torch.log(r)).sum(dims)
        mse = (g * (x0_64 - x0_hat)).pow(2) / (2.0 * var)
        terms.append(kl + mse.sum(dims))
    terms_t = torch.stack(terms) if terms else x0_64.new_zeros(0, B)

    t1 = int(steps[0])
    if decoder_variance is None:
        if t1 == 1:
            if N < 2:
                raise ValueError("the default decoder variance β̃(1,2) needs N >= 2; pass decoder_variance")
            decoder_variance = float(sch.tilde_beta(1, 2))
        else:
            decoder_variance = float(sch.beta_bar[t1])
    x0_hat, _, _ = draw(t1)
    discrete = -log_discretized_normal(x0_64, x0_hat, decoder_variance).sum(dims)

    scale = 1.0 / (d * _LN2)
    cont = prior + terms_t.sum(0)
    return NelboResult(bpd=(cont + discrete) * scale, continuous=cont * scale, discrete=discrete * scale,
                       prior=prior * scale, terms=terms_t, timesteps=steps)
