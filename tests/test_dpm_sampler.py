# AnalyticSampler and nelbo (docs/semantics-dpm.md §3, §4, §6, §7, §8) on data with exact ε-models:
# Gaussian output distributions against an independent linear-Gaussian recursion, NPR/SN heads vs
# the scalar table, the τ1 clamp, point-mass and Gaussian NELBO terms in closed form, the
# discretized decoder, and input validation.
import math

import pytest
import torch

from tigercore.dpm import (AnalyticSampler, GammaEstimator, NoiseSchedule, log_discretized_normal, nelbo,
                           pixel_clip_bound, trajectory_kl_per_dim)

MU, S2 = 0.2, 0.25


@pytest.fixture(scope="module")
def lin():
    return NoiseSchedule.linear(1000)


def exact_delta(sch, s2=S2):
    return sch.alpha_bar * s2 / (sch.alpha_bar * s2 + sch.beta_bar)


def gaussian_model(sch, mu=MU, s2=S2, head=None):
    """ε*(x_t) = √β̄_t (x_t − √ᾱ_t μ)/v_t; head: None, "npr" (g = δ_t) or "sn" (h = ε̂² + δ_t)."""
    def model(x, t):
        ab = sch.alpha_bar[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        bb = sch.beta_bar[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        v = ab * s2 + bb
        e = bb.sqrt() * (x - ab.sqrt() * mu) / v
        if head is None:
            return e
        g = (ab * s2 / v).expand_as(x)
        return e, (g if head == "npr" else e * e + g)
    return model


def expected_output(sch, steps, kind, mu=MU, s2=S2):
    """Mean and variance of the sampler output for Gaussian data, by propagating N(m, V) through
    the exact reverse conditionals, written from the Gaussian joint (independent of tigercore)."""
    ab = [float(a) for a in sch.alpha_bar]
    bb = [1.0 - a for a in ab]
    v = [a * s2 + b for a, b in zip(ab, bb)]
    m, V = 0.0, 1.0
    taus = [0] + list(steps)
    for s, t in reversed(list(zip(taus[:-1], taus[1:]))):
        post_c = math.sqrt(ab[t]) * s2 / v[t]              # E[x0|x_t] = μ + post_c (x_t − √ᾱ_t μ)
        post_var = s2 * bb[t] / v[t]
        if s == 0:
            return mu + post_c * (m - math.sqrt(ab[t]) * mu), post_c ** 2 * V
        if kind == "ddpm":                                 # Var[x_s|x_t] = β_{t|s} v_s / v_t
            a = math.sqrt(ab[t] / ab[s]) * v[s] / v[t]
            b = math.sqrt(ab[s]) * mu - a * math.sqrt(ab[t]) * mu
            var = (1 - ab[t] / ab[s]) * v[s] / v[t]
        else:                                              # DDIM, λ = 0: √ᾱ_s x̂0 + √(β̄_s/β̄_t)(x_t − √ᾱ_t x̂0)
            k = math.sqrt(bb[s] / bb[t])
            cx0 = math.sqrt(ab[s]) - k * math.sqrt(ab[t])
            a = cx0 * post_c + k
            b = cx0 * (mu - post_c * math.sqrt(ab[t]) * mu)
            var = cx0 ** 2 * post_var
        m, V = a * m + b, a * a * V + var
    raise AssertionError("trajectory must start at 1")


def check_moments(x, m, V, z=4.0):
    n = x.numel()
    assert abs(float(x.mean()) - m) < z * math.sqrt(V / n), (float(x.mean()), m)
    assert abs(float(x.var()) - V) < z * V * math.sqrt(2.0 / n), (float(x.var()), V)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
@pytest.mark.parametrize("traj", ["linear", "optimal"])
def test_gaussian_output_distribution(lin, kind, traj):
    delta = exact_delta(lin)
    smp = AnalyticSampler(lin, gaussian_model(lin), one_minus_gamma=delta, trajectory=traj, num_inference_steps=10,
                          kind=kind, eta=1.0 if kind == "ddpm" else 0.0, clip_x0=False)
    g = torch.Generator().manual_seed(11)
    x = smp.sample((1000, 64), generator=g, dtype=torch.float64)
    m, V = expected_output(lin, smp.timesteps.tolist(), kind)
    assert abs(V - S2) < 2e-3                              # nearly the data distribution
    check_moments(x, m, V)


def test_gaussian_baseline_is_detectably_wrong(lin):
    """Power check: the β̃ baseline with K = 10 misses the variance by far more than 4 SE."""
    smp = AnalyticSampler(lin, gaussian_model(lin), trajectory="linear", num_inference_steps=10, variance="beta_tilde",
                          clip_x0=False)
    x = smp.sample((1000, 64), generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    m, V = expected_output(lin, smp.timesteps.tolist(), "ddpm")
    assert abs(float(x.var()) - V) > 10 * V * math.sqrt(2.0 / x.numel())


@pytest.mark.parametrize("variance", ["npr", "sn"])
def test_heads_reproduce_the_scalar_table(lin, variance):
    """Gaussian data: Var[ε|x_t] = δ_t for every x_t, so NPR (g) and SN (h − ε̂²) equal Analytic."""
    delta = exact_delta(lin)
    kw = dict(trajectory="linear", num_inference_steps=8, clip_x0=False)
    a = AnalyticSampler(lin, gaussian_model(lin), one_minus_gamma=delta, **kw)
    b = AnalyticSampler(lin, gaussian_model(lin, head=variance), variance=variance, **kw)
    xa = a.sample((50, 32), generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    xb = b.sample((50, 32), generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    torch.testing.assert_close(xa, xb, rtol=1e-8, atol=1e-10)


def test_pixel_clip_and_eps_heuristic(lin):
    delta = exact_delta(lin, 1.0)
    smp = AnalyticSampler(lin, gaussian_model(lin, 0.0, 1.0), one_minus_gamma=delta, trajectory="linear",
                          num_inference_steps=10, clip_pixel=2)
    assert float(smp.step_variances[0]) == pytest.approx(pixel_clip_bound(2), rel=1e-15)
    free = AnalyticSampler(lin, gaussian_model(lin, 0.0, 1.0), one_minus_gamma=delta, trajectory="linear",
                           num_inference_steps=10)
    assert float(free.step_variances[0]) > pixel_clip_bound(2)
    torch.testing.assert_close(smp.step_variances[1:], free.step_variances[1:], rtol=0, atol=0)
    heur = AnalyticSampler(lin, gaussian_model(lin), trajectory="linear", num_inference_steps=5, variance="eps",
                           avg_cov=True, clip_pixel=1)
    x = heur.sample((8, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 4, 4) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_sampler_uses_estimated_table(lin):
    """End to end: GammaEstimator on the trajectory steps only, then sample."""
    sch = NoiseSchedule.linear(100, 1e-3, 0.2)
    model = gaussian_model(sch)
    g = torch.Generator().manual_seed(14)
    steps = torch.tensor([1, 30, 60, 100])
    data = [MU + 0.5 * torch.randn(64, 32, generator=g, dtype=torch.float64) for _ in range(2)]
    table = GammaEstimator(sch, "npr").estimate(model, data, timesteps=steps, generator=g, progress=False)
    smp = AnalyticSampler(sch, model, one_minus_gamma=table, trajectory=steps, clip_x0=False)
    x = smp.sample((500, 32), generator=g, dtype=torch.float64)
    m, V = expected_output(sch, steps.tolist(), "ddpm")
    check_moments(x, m, V, z=5.0)
    with pytest.raises(ValueError, match="unknown"):
        AnalyticSampler(sch, model, one_minus_gamma=table, trajectory=[1, 50, 100])


def test_sampler_bad_inputs(lin):
    model = gaussian_model(lin)
    delta = exact_delta(lin)
    with pytest.raises(ValueError, match="η = 1"):
        AnalyticSampler(lin, model, one_minus_gamma=delta, kind="ddpm", eta=0.5)
    with pytest.raises(ValueError, match="needs one_minus_gamma"):
        AnalyticSampler(lin, model)
    with pytest.raises(ValueError, match="rise strictly"):
        AnalyticSampler(lin, model, one_minus_gamma=delta, trajectory=[1, 5, 5, 1000])
    with pytest.raises(ValueError, match="rise strictly"):
        AnalyticSampler(lin, model, one_minus_gamma=delta, trajectory=[0, 5, 1000])
    with pytest.raises(ValueError, match="variance"):
        AnalyticSampler(lin, model, variance="large")
    with pytest.raises(ValueError, match=r"\(1001,\)"):
        AnalyticSampler(lin, model, one_minus_gamma=delta[:-1])
    smp = AnalyticSampler(lin, model, trajectory="linear", num_inference_steps=3, variance="npr")
    with pytest.raises(ValueError, match="head"):
        smp.sample((2, 4))


# ----------------------------------------------------------------------------- likelihood
def approx_cdf(z):
    return 0.5 * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


def test_nelbo_point_mass_closed_form(lin):
    m, d, B = 1.0 / 255.0, 12, 6                            # a grid point (c_128)

    def model(x, t):
        ab = lin.alpha_bar[t].to(x.dtype).view(-1, 1)
        return (x - ab.sqrt() * m) / (1 - ab).sqrt()

    x0 = torch.full((B, d), m, dtype=torch.float64)
    zero = torch.zeros(1001, dtype=torch.float64)
    r = nelbo(lin, model, x0, "linear", num_inference_steps=10, one_minus_gamma=zero,
              generator=torch.Generator().manual_seed(0))
    assert r.terms.shape == (9, B) and r.terms.abs().max() < 1e-9        # σ² = λ², x̂0 = x0
    abN = float(lin.alpha_bar[1000])
    prior = d * 0.5 * ((1 - abN) + abN * m * m - 1 - math.log(1 - abN))
    sig = math.sqrt(float(lin.tilde_beta(1, 2)))
    dec = -d * math.log(approx_cdf(1 / 255 / sig) - approx_cdf(-1 / 255 / sig))
    scale = 1.0 / (d * math.log(2.0))
    torch.testing.assert_close(r.prior, torch.full((B,), prior * scale, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(r.discrete, torch.full((B,), dec * scale, dtype=torch.float64), rtol=1e-9, atol=0)
    torch.testing.assert_close(r.bpd, r.continuous + r.discrete, rtol=1e-15, atol=0)


def test_nelbo_gaussian_terms_match_closed_form_kl(lin):
    """E Σ_k terms = d·½ log(v_1 β̄_N/(v_N β̄_1)) for Analytic-DDPM with the exact model (§5, §11.1)."""
    d, B = 64, 200
    g = torch.Generator().manual_seed(15)
    x0 = MU + 0.5 * torch.randn(B, d, generator=g, dtype=torch.float64)
    delta = exact_delta(lin)
    r = nelbo(lin, gaussian_model(lin), x0, "linear", num_inference_steps=10, one_minus_gamma=delta, clip_x0=False,
              generator=g)
    total = r.in_nats().terms.sum(0)                  # nats per datum
    torch.testing.assert_close(r.continuous, r.prior + r.terms.sum(0), rtol=1e-12, atol=0)   # one unit
    want = d * trajectory_kl_per_dim(lin, delta, r.timesteps)
    ab, bb = lin.alpha_bar, lin.beta_bar
    v = ab * S2 + bb
    assert want == pytest.approx(d * 0.5 * math.log(float(v[1] * bb[1000] / (v[1000] * bb[1]))), rel=1e-9)
    se = float(total.std()) / math.sqrt(B)
    assert abs(float(total.mean()) - want) < 4 * se
    # baselines: β̃ has no log term, β pays for a too large variance; both are worse in expectation
    rb = nelbo(lin, gaussian_model(lin), x0, "linear", num_inference_steps=10, variance="beta_tilde", clip_x0=False,
               generator=g)
    assert (rb.terms >= 0).all()
    assert float(rb.in_nats().terms.sum(0).mean()) > want + 4 * se


def test_discretized_decoder_normalised():
    c = -1.0 + 2.0 * torch.arange(256, dtype=torch.float64) / 255.0
    for mean, var in ((0.0, 1e-2), (0.7, 1e-4), (-0.99, 5.45e-5), (0.3, 2.0)):
        p = log_discretized_normal(c, torch.full_like(c, mean), var).exp()
        assert abs(float(p.sum()) - 1.0) < 1e-9
    lp = log_discretized_normal(torch.tensor([1.0]), torch.tensor([-1.0]), 1e-6)
    assert float(lp) == pytest.approx(math.log(1e-12))                     # clamp before the log


def test_nelbo_bad_inputs(lin):
    with pytest.raises(ValueError, match="variance"):
        nelbo(lin, gaussian_model(lin), torch.zeros(2, 3), "linear", num_inference_steps=3, variance="nope")
    with pytest.raises(ValueError, match="floating"):
        nelbo(lin, gaussian_model(lin), torch.zeros(2, 3, dtype=torch.long), "linear", num_inference_steps=3,
              variance="beta")
    with pytest.raises(ValueError, match="needs one_minus_gamma"):
        nelbo(lin, gaussian_model(lin), torch.zeros(2, 3), "linear", num_inference_steps=3)
