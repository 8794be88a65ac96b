# Negative ELBO of a K-step DDPM-type reverse process in bits/dim (docs/semantics-dpm.md §7, §4, §8).
# NELBO = KL(q(x_{τK}|x_0) ‖ N(0,I)) + Σ_{k≥2} [(d/2)(λ²/σ² − 1 + log(σ²/λ²)) + ‖μ̃ − μ‖²/(2σ²)]
#         − log P_dec(x_0 | x_{τ1}),  λ² = β̃(s,t), ‖μ̃ − μ‖² = γ²‖x_0 − clamp(x̂_0)‖², one x_t per term,
# with the discretized Gaussian decoder (tanh-approximated Φ, as the official code) of variance
# β̃(1,2) when τ1 = 1 (β̄_{τ1} otherwise). Float64 throughout; tests: tests/test_dpm_sampler.py.
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from ._compat import renamed_kwargs
from .sampler import VARIANCES, resolve_trajectory, split_model_output
from .schedule import NoiseSchedule, call_eps_model, iter_x0
from .variance import DIAG_KINDS, _delta, diag_reverse_variance, gamma_coef, lambda_sq, reverse_variance

__all__ = ["NelboResult", "NelboTerms", "nelbo", "nelbo_terms", "approx_std_normal_cdf", "log_discretized_normal"]

_LN2 = math.log(2.0)


@dataclass
class NelboResult:
    """Per-sample NELBO parts, every tensor in the same unit, ``unit`` (docs/semantics-dpm.md §7).

    ``nelbo`` returns bits/dim: the nats of each part divided by d·ln 2. ``bpd`` = ``continuous`` +
    ``discrete``; ``continuous`` = ``prior`` + Σ ``terms``; ``discrete`` = the decoder's −log P;
    ``terms`` [K−1, B] are the step KL terms for the trajectory pairs (τ_{k−1}, τ_k), k = 2..K, in
    ascending order (earlier versions gave ``terms`` in nats). :meth:`in_nats` converts
    everything to nats per datum (summed over the d dimensions); ``dim`` is d.
    """

    bpd: Tensor
    continuous: Tensor
    discrete: Tensor
    prior: Tensor
    terms: Tensor
    timesteps: Tensor
    dim: int = 1
    unit: str = "bits/dim"

    _FIELDS = ("bpd", "continuous", "discrete", "prior")

    def mean(self) -> Dict[str, float]:
        """Means over the samples of bpd, continuous, discrete and prior (in ``unit``)."""
        return {k: float(getattr(self, k).mean()) for k in self._FIELDS}

    def stderr(self) -> Dict[str, float]:
        """Standard errors of those means over the B samples (sample std / √B; NaN for B < 2)."""
        out = {}
        for k in self._FIELDS:
            v = getattr(self, k)
            out[k] = float(v.std(unbiased=True) / math.sqrt(v.numel())) if v.numel() >= 2 else math.nan
        return out

    def in_nats(self) -> "NelboResult":
        """The same result in nats per datum (× d·ln 2 when ``unit`` is bits/dim)."""
        if self.unit == "nats":
            return self
        f = self.dim * _LN2
        return NelboResult(self.bpd * f, self.continuous * f, self.discrete * f, self.prior * f, self.terms * f,
                           self.timesteps, self.dim, "nats")


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


@renamed_kwargs(num_steps="num_inference_steps")
@torch.no_grad()
def nelbo(schedule: NoiseSchedule, model: Callable, x0: Tensor, trajectory: Union[str, Sequence[int], Tensor],
          *, num_inference_steps: Optional[int] = None, variance: str = "analytic", one_minus_gamma=None,
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
    N = sch.num_timesteps
    delta = _delta(one_minus_gamma, sch) if one_minus_gamma is not None else None
    steps = resolve_trajectory(sch, trajectory, num_inference_steps, one_minus_gamma)
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
                       prior=prior * scale, terms=terms_t * scale, timesteps=steps, dim=d, unit="bits/dim")


@dataclass
class NelboTerms:
    """Expected NELBO terms of every step pair: the matrix :func:`dp_vb_trajectory` consumes
    (the official ``get_nelbo_terms``; docs/semantics-dpm.md §5, §7).

    ``F``: float64 [N+1, N+1], nats per datum (summed over the d dimensions, averaged over the
    data): F[s, t] for 1 ≤ s < t = E[L_{s,t}], the KL term of the step t → s; F[0, t] = the decoder
    term −E log p(x_0 | x_t) with variance β̃(1, 2) at t = 1 and β̄_t for t > 1; +inf where s ≥ t.
    ``prior``: E KL(q(x_N | x_0) ‖ N(0, I)) in nats. ``count``: data points averaged; ``dim``: d.
    """

    F: Tensor
    prior: float
    count: int
    dim: int
    variance: str

    def nelbo_bpd(self, trajectory) -> float:
        """(prior + F[0, τ_1] + Σ_k F[τ_{k−1}, τ_k]) / (d·ln 2) for a path τ_1 < … < τ_K = N (a tensor,
        list or Trajectory): the NELBO in bits/dim that these expected terms give that path."""
        t = getattr(trajectory, "timesteps", trajectory)
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
        N = self.F.shape[0] - 1
        if t.numel() < 1 or int(t[-1]) != N or int(t[0]) < 1 or not bool((t[1:] > t[:-1]).all()):
            raise ValueError(f"the path must rise strictly from τ_1 >= 1 to N = {N}")
        path = torch.cat([t.new_zeros(1), t])
        total = self.prior + float(self.F[path[:-1], path[1:]].sum())
        return total / (self.dim * _LN2)


@torch.no_grad()
def nelbo_terms(schedule: NoiseSchedule, model: Callable, data: Iterable, *, variance: str = "analytic",
                one_minus_gamma=None, clip_x0: bool = True, clip_cov: Union[bool, float] = True,
                time_fn: Optional[Callable[[Tensor], Tensor]] = None, generator: Optional[torch.Generator] = None,
                device=None, max_batches: Optional[int] = None, progress: bool = True) -> NelboTerms:
    """Monte Carlo estimate of every NELBO term E[L_{s,t}], 0 ≤ s < t ≤ N, for the DDPM-type
    process (λ² = β̃(s,t)) with a scalar σ² ("analytic", "beta" or "beta_tilde"); see
    :class:`NelboTerms`. One model call per (batch, t): for each batch of ``data`` (x_0 tensors in
    [−1, 1], or tuples whose first item is x_0) and each t = 1..N in order, ε ~ N(0, I) from
    ``generator`` (float64, x_0's shape), x_t = √ᾱ_t x_0 + √β̄_t ε, x̂_0 = clamp(x̂_0(x_t)) if
    ``clip_x0``. Since σ² does not depend on x_t, every s < t follows from E‖x_0 − x̂_0‖²:
    F[s, t] = (d/2)(r − 1 − log r) + ᾱ_s β_{t|s}²/(2β̄_t²σ²)·E‖x_0 − x̂_0‖², r = β̃(s,t)/σ²(s,t).
    Cost: N model calls per batch. Then ``dp_vb_trajectory(terms, K)`` gives the likelihood-optimal
    path (``first_step=1`` forces τ_1 = 1) and ``terms.nelbo_bpd(path)`` its NELBO.
    """
    from tqdm.auto import tqdm

    from .sampler import scalar_step_variance

    if variance not in ("analytic", "beta", "beta_tilde"):
        raise ValueError(f"nelbo_terms supports the scalar variances analytic, beta, beta_tilde; got {variance!r}")
    if variance == "analytic" and one_minus_gamma is None:
        raise ValueError("variance='analytic' needs one_minus_gamma")
    sch = schedule
    N = sch.num_timesteps
    if N < 2:
        raise ValueError("nelbo_terms needs N >= 2 (the decoder variance β̃(1, 2))")
    delta = _delta(one_minus_gamma, sch) if one_minus_gamma is not None else None
    sum_err = torch.zeros(N + 1, dtype=torch.float64)
    sum_dec = torch.zeros(N + 1, dtype=torch.float64)
    prior_sum, count, d = 0.0, 0, None
    dec_var = torch.cat([torch.zeros(1, dtype=torch.float64), sch.tilde_beta(1, 2).reshape(1), sch.beta_bar[2:]])
    total = None
    if hasattr(data, "__len__"):
        total = N * (len(data) if max_batches is None else min(len(data), max_batches))
    bar = tqdm(total=total, disable=not progress, desc="NELBO terms", unit="call")
    try:
        for x0 in iter_x0(data, max_batches, device):
            if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 2:
                raise ValueError("data must yield floating [B, ...] tensors x_0 with at least 2 dims")
            B, dims = x0.shape[0], tuple(range(1, x0.dim()))
            if d is None:
                d = x0[0].numel()
            elif x0[0].numel() != d:
                raise ValueError(f"all data must have the same dimension d = {d}")
            x64 = x0.to(torch.float64)
            ab, bb = float(sch.alpha_bar[N]), float(sch.beta_bar[N])
            prior_sum += float((0.5 * (bb + ab * x64.pow(2) - 1.0 - math.log(bb))).sum())
            for t in range(1, N + 1):
                eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64,
                                  device=generator.device if generator is not None else x0.device).to(x0.device)
                x_t = sch.marginal(x64, t, eps).to(x0.dtype)
                eps_hat, _ = split_model_output(call_eps_model(model, x_t, t, time_fn), variance)
                xh = sch.predict_x0(x_t.to(torch.float64), t, eps_hat.to(torch.float64))
                if clip_x0:
                    xh = xh.clamp(-1.0, 1.0)
                sum_err[t] += float((x64 - xh).pow(2).sum())
                sum_dec[t] += float(-log_discretized_normal(x64, xh, float(dec_var[t])).sum())
                bar.update(1)
            count += B
    finally:
        bar.close()
    if count == 0:
        raise ValueError("data yielded no samples")
    F = torch.full((N + 1, N + 1), math.inf, dtype=torch.float64)
    F[0, 1:] = sum_dec[1:] / count
    s, t = torch.triu_indices(N + 1, N + 1, offset=1)
    keep = s >= 1
    s, t = s[keep], t[keep]
    var = scalar_step_variance(sch, variance, s, t, eta=1.0, delta=delta, clip_cov=clip_cov)
    r = sch.tilde_beta(s, t) / var
    coeff = 0.5 * sch.alpha_bar[s] * sch.skip_beta(s, t).pow(2) / sch.beta_bar[t].pow(2)
    F[s, t] = 0.5 * d * (r - 1.0 - torch.log(r)) + coeff * (sum_err[t] / count) / var
    return NelboTerms(F=F, prior=prior_sum / count, count=count, dim=int(d), variance=variance)
