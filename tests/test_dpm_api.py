# API consistency of tigercore.dpm (issue 15 item 3; docs/semantics-dpm.md §12): the renamed N / K
# keywords (old ones warn and give the same result), one Trajectory type, GammaTable.raw() /
# to_ms_eps() export, nelbo_terms + dp_vb_trajectory (against a literal per-(s, t) loop in the
# official style and brute force over all paths, with τ_1 free or forced to 1), one unit in
# NelboResult, and the η defaults.
import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from tigercore.dpm import (AnalyticSampler, GammaTable, NoiseSchedule, Trajectory, dp_seg_trajectory,
                           dp_vb_trajectory, linear_trajectory, log_discretized_normal, nelbo, nelbo_terms,
                           optimal_trajectory, quad_ddim_trajectory, reverse_variance, trajectory_cost)


def gaussian_model(sch, mu=0.0, s2=0.25):
    """The exact ε-model for x_0 ~ N(mu, s2 I): ε* = √β̄ (x − √ᾱ mu)/(ᾱ s2 + β̄)."""
    def model(x, n):
        ab = sch.coef("alpha_bar", n, x)
        bb = sch.coef("beta_bar", n, x)
        return bb.sqrt() * (x - ab.sqrt() * mu) / (ab * s2 + bb)
    return model


@pytest.fixture
def small():
    return NoiseSchedule.linear(12, 1e-3, 0.2)


def delta_of(sch):
    d = (sch.alpha_bar * 0.25 / (sch.alpha_bar * 0.25 + sch.beta_bar)).clone()
    d[0] = 0.0
    return d


def test_old_keywords_warn_and_agree(small):
    d = delta_of(small)
    with pytest.warns(DeprecationWarning, match="num_steps"):
        a = NoiseSchedule.linear(num_steps=50)
    assert torch.equal(a.betas, NoiseSchedule.linear(num_timesteps=50).betas)
    with pytest.warns(DeprecationWarning, match="num_steps"):
        assert a.num_steps == a.num_timesteps == 50
    with pytest.warns(DeprecationWarning):
        old = linear_trajectory(num_steps=30, K=7)
    assert torch.equal(old.timesteps, linear_trajectory(num_timesteps=30, num_inference_steps=7).timesteps)
    with pytest.warns(DeprecationWarning, match="num_inference_steps"):
        old = optimal_trajectory(small, d, num_steps=4)
    new = optimal_trajectory(small, d, num_inference_steps=4)
    assert torch.equal(old.timesteps, new.timesteps) and old.cost == new.cost
    with pytest.warns(DeprecationWarning):
        smp = AnalyticSampler(small, gaussian_model(small), one_minus_gamma=d, trajectory="linear", num_steps=4)
    assert smp.timesteps.tolist() == linear_trajectory(12, 4).timesteps.tolist()
    with pytest.raises(TypeError, match="both"):
        optimal_trajectory(small, d, num_steps=4, num_inference_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # the new names never warn
        optimal_trajectory(small, d, num_inference_steps=4)
        AnalyticSampler(small, gaussian_model(small), one_minus_gamma=d, trajectory="even", num_inference_steps=4)


def test_every_trajectory_function_returns_trajectory(small):
    d = delta_of(small)
    got = [linear_trajectory(12, 4), quad_ddim_trajectory(12, 3), optimal_trajectory(small, d, 4),
           dp_seg_trajectory(small, GammaTable.from_one_minus_gamma(d), 4)]
    F = torch.rand(13, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got.append(dp_vb_trajectory(F, 4))
    for tr in got:
        assert isinstance(tr, Trajectory) and tr.timesteps.dtype == torch.long and isinstance(tr.cost, float)
    assert math.isnan(got[0].cost) and math.isnan(got[1].cost)
    assert got[2].cost == pytest.approx(trajectory_cost(small, d, got[2]), abs=1e-12)
    assert got[3].cost == pytest.approx(trajectory_cost(small, d, got[3].timesteps), abs=1e-12)
    # a Trajectory is accepted wherever a path is
    smp = AnalyticSampler(small, gaussian_model(small), one_minus_gamma=d, trajectory=got[2])
    assert torch.equal(smp.timesteps, got[2].timesteps)


def test_raw_and_ms_eps_round_trip(tmp_path):
    raw = torch.tensor([0.0, 0.5, -0.02, 1.3, 1e-7, math.nan], dtype=torch.float64)
    t = GammaTable.from_one_minus_gamma(raw)
    assert torch.equal(t.raw()[:5], raw[:5]) and math.isnan(float(t.raw()[5]))
    assert t.one_minus_gamma[2] == 0 and t.one_minus_gamma[3] == 1 and bool(t.clipped[2] & t.clipped[3])
    g = t.to_ms_eps(tmp_path / "x.ms_eps.pth")
    assert g.dtype == np.float32 and g[0] == 0
    assert np.array_equal(g[1:5], (1.0 - raw[1:5].numpy()).astype(np.float32))     # Γ̂ = 1 − δ̂, Γ̂ > 1 kept
    back = GammaTable.from_ms_eps(tmp_path / "x.ms_eps.pth")
    assert np.array_equal(back.to_ms_eps(), g, equal_nan=True)
    t.save(tmp_path / "t.pt")
    assert torch.equal(GammaTable.load(tmp_path / "t.pt").raw().nan_to_num(7), t.raw().nan_to_num(7))
    with pytest.raises(ValueError, match="clipped"):
        GammaTable(torch.tensor([0.0, 0.5]), torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.bool),
                   raw_one_minus_gamma=torch.tensor([0.0, 0.4]))


def official_terms(sch, model, x0, variance, delta, seed):
    """The official get_nelbo_terms loop written out (per t one x_t draw, then every s < t)."""
    N = sch.num_timesteps
    g = torch.Generator().manual_seed(seed)
    F = np.full((N + 1, N + 1), np.inf)
    b = sch.betas.numpy()
    ab = np.cumprod(1 - b)
    x = x0.to(torch.float64)
    d = x[0].numel()
    for t in range(1, N + 1):
        eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
        xt = math.sqrt(ab[t]) * x + math.sqrt(1 - ab[t]) * eps
        x0p = (xt / math.sqrt(ab[t]) - math.sqrt(1 / ab[t] - 1) * model(xt, torch.full((x.shape[0],), t))).clamp(-1, 1)
        err = (x - x0p).pow(2).flatten(1).sum(1)
        var_dec = (1 - ab[2] / ab[1]) * (1 - ab[1]) / (1 - ab[2]) if t == 1 else 1 - ab[t]
        F[0, t] = float(-log_discretized_normal(x, x0p, var_dec).flatten(1).sum(1).mean())
        for s in range(1, t):
            skip_b = 1 - ab[t] / ab[s]
            tilde = skip_b * (1 - ab[s]) / (1 - ab[t])
            if variance == "analytic":
                cov = min(max((1 - ab[t]) / ab[t] * float(delta[t]), 0.0), 1.0)
                sigma2 = tilde + ab[s] * skip_b ** 2 / (1 - ab[t]) ** 2 * cov
            else:
                sigma2 = skip_b
            ratio = tilde / sigma2
            coeff = 0.5 * ab[s] * skip_b ** 2 / (1 - ab[t]) ** 2
            F[s, t] = float((0.5 * (ratio - math.log(ratio) - 1) * d + coeff * err / sigma2).mean())
    return torch.from_numpy(F)


@pytest.mark.parametrize("variance", ["analytic", "beta"])
def test_nelbo_terms_match_the_official_loop(small, variance):
    sch = small
    d = delta_of(sch)
    x0 = (torch.rand(8, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1).mul(127.5).round().div(127.5)
    terms = nelbo_terms(sch, gaussian_model(sch), [x0], variance=variance, one_minus_gamma=d,
                        generator=torch.Generator().manual_seed(4), progress=False)
    want = official_terms(sch, gaussian_model(sch), x0, variance, d, seed=4)
    torch.testing.assert_close(terms.F, want, rtol=1e-10, atol=1e-10)
    ab, bb = float(sch.alpha_bar[-1]), float(sch.beta_bar[-1])
    prior = float((0.5 * (bb + ab * x0.double() ** 2 - 1 - math.log(bb))).sum(1).mean())
    assert terms.prior == pytest.approx(prior, rel=1e-12) and terms.count == 8 and terms.dim == 6


def brute(F, K, N, first=None):
    best = (math.inf, None)
    for mid in itertools.combinations(range(1, N), K - 1):
        path = list(mid) + [N]
        if first is not None and path[0] != first:
            continue
        c = float(F[0, path[0]]) + sum(float(F[a, b]) for a, b in zip(path, path[1:]))
        if c < best[0]:
            best = (c, path)
    return best


def test_dp_vb_against_brute_force_free_and_forced_first_step(small):
    d = delta_of(small)
    x0 = (torch.rand(16, 4, generator=torch.Generator().manual_seed(2)) * 2 - 1).mul(127.5).round().div(127.5)
    terms = nelbo_terms(small, gaussian_model(small, 0.3), [x0], variance="analytic", one_minus_gamma=d,
                        generator=torch.Generator().manual_seed(3), progress=False)
    N = small.num_timesteps
    for K in (2, 3, 5):
        tr = dp_vb_trajectory(terms, K)
        cost, path = brute(terms.F, K, N)
        assert tr.timesteps.tolist() == path and tr.cost == pytest.approx(cost, rel=1e-12)
        forced = dp_vb_trajectory(terms.F, K, first_step=1)
        cost1, path1 = brute(terms.F, K, N, first=1)
        assert forced.timesteps.tolist() == path1 and forced.timesteps[0] == 1
        assert forced.cost == pytest.approx(cost1, rel=1e-12) and forced.cost >= tr.cost
        nb = terms.nelbo_bpd(forced)
        assert nb == pytest.approx((terms.prior + cost1) / (4 * math.log(2)), rel=1e-12)


def test_nelbo_units_are_consistent(small):
    d = delta_of(small)
    x0 = (torch.rand(32, 5, generator=torch.Generator().manual_seed(6)) * 2 - 1)
    r = nelbo(small, gaussian_model(small), x0, "even", num_inference_steps=4, one_minus_gamma=d,
              generator=torch.Generator().manual_seed(7))
    assert r.unit == "bits/dim" and r.dim == 5
    torch.testing.assert_close(r.continuous, r.prior + r.terms.sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.bpd, r.continuous + r.discrete, rtol=1e-12, atol=1e-12)
    n = r.in_nats()
    torch.testing.assert_close(n.terms, r.terms * 5 * math.log(2), rtol=1e-14, atol=0)
    assert n.unit == "nats" and n.in_nats() is n
    se = r.stderr()["bpd"]
    assert se == pytest.approx(float(r.bpd.std()) / math.sqrt(32), rel=1e-12)


def test_eta_defaults_are_one_everywhere(small):
    d = delta_of(small)
    smp = AnalyticSampler(small, gaussian_model(small), one_minus_gamma=d, trajectory="even", num_inference_steps=4)
    s, t = smp.timesteps[:-1], smp.timesteps[1:]
    assert smp.eta == 1.0 and torch.equal(smp.step_variances, reverse_variance(small, d, s, t))
    with pytest.warns(DeprecationWarning, match="eta"):
        ddim = AnalyticSampler(small, gaussian_model(small), one_minus_gamma=d, trajectory="even",
                               num_inference_steps=4, kind="ddim")
    assert ddim.eta == 0.0                                  # the old DDIM default, kept with the warning
    explicit = AnalyticSampler(small, gaussian_model(small), one_minus_gamma=d, trajectory="even",
                               num_inference_steps=4, kind="ddim", eta=0.0)
    assert torch.equal(explicit.step_variances, reverse_variance(small, d, s, t, eta=0.0))
