# Closed-form Analytic-DPM cases of docs/semantics-dpm.md §11 and the cosine tail of §10.
# Expected values are either the T1/T2 reference tables (float64 values of the §11.1 closed forms,
# compared at their printed precision) or
# recomputed here from independent formulas (numpy cumprod schedule, β_{t|s}v_s/v_t, naive γ,
# sech² heads, quadrature); nothing is pasted from tigercore's own output.
import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch

from tigercore.dpm import (GammaEstimator, GammaTable, NoiseSchedule, cov_x0, diag_reverse_variance,
                           pixel_clip_bound, reverse_variance)
from tigercore.dpm.demo import DiscreteToy

S2 = 0.25  # Gaussian data variance of T1/T2


def assert_printed(value, printed: str):
    """|value − printed| ≤ half a unit in the printed last digit."""
    p = float(printed)
    mant, _, exp = printed.partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    tol = 0.5 * 10.0 ** (-decimals) * 10.0 ** (int(exp) if exp else 0)
    assert abs(float(value) - p) <= tol * (1 + 1e-9), f"{float(value)!r} vs printed {printed}"


def np_schedule(N=1000):
    """Independent schedule: ᾱ = Π(1 − β) and β̄ = 1 − ᾱ in 40-digit decimal arithmetic (from the
    float64 np.linspace betas), rounded once to float64 — an oracle without log-space tricks."""
    getcontext().prec = 40
    betas = np.append(0.0, np.linspace(1e-4, 0.02, N, dtype=np.float64))
    ab_d, ab, bb = Decimal(1), [1.0], [0.0]
    for b in betas[1:]:
        ab_d *= 1 - Decimal(float(b))
        ab.append(float(ab_d))
        bb.append(float(1 - ab_d))
    return betas, np.array(ab), np.array(bb)


@pytest.fixture(scope="module")
def lin():
    return NoiseSchedule.linear(1000)


def gaussian_delta(sch, s2=S2):
    ab, bb = sch.alpha_bar, sch.beta_bar
    return ab * s2 / (ab * s2 + bb)


# ----------------------------------------------------------------------------- T1, one step
T1 = """
2 9.997801e-1 0.000879051780 9.991209e-1 2.197629e-4 5.453188e-5 1.198768e-4 2.331015e-5 1.199343e-4
10 9.981052e-1 0.007536341386 9.924637e-1 1.884085e-3 2.381820e-4 2.790470e-4 1.104655e-5 2.793573e-4
100 8.970181e-1 0.314701717896 6.852983e-1 7.867543e-2 2.034596e-3 2.063227e-3 7.230561e-6 2.076374e-3
250 5.240854e-1 0.784126580048 2.158734e-1 1.960316e-1 5.031721e-3 5.043394e-3 2.933882e-6 5.085794e-3
500 7.858724e-2 0.979122670454 2.087733e-2 2.447807e-1 1.003136e-2 1.003366e-2 5.799490e-7 1.014186e-2
750 3.350550e-3 0.999160252177 8.397478e-4 2.497901e-1 1.501925e-2 1.501944e-2 4.861287e-8 1.524906e-2
900 2.752059e-4 0.999931184318 6.881568e-5 2.499828e-1 1.800792e-2 1.800794e-2 5.734671e-9 1.833824e-2
990 4.934860e-5 0.999987662393 1.233761e-5 2.499969e-1 1.980078e-2 1.980079e-2 1.246166e-9 2.020079e-2
1000 4.035830e-5 0.999989910120 1.008988e-5 2.499975e-1 1.999998e-2 1.999999e-2 1.040048e-9 2.040816e-2
"""
T1_ROWS = [line.split() for line in T1.strip().splitlines()]


@pytest.mark.parametrize("row", T1_ROWS, ids=[r[0] for r in T1_ROWS])
def test_t1_printed_values(lin, row):
    n = int(row[0])
    delta = gaussian_delta(lin)
    table = GammaTable.from_one_minus_gamma(delta)
    lam = lin.tilde_beta(n - 1, n)
    g_ddpm = math.sqrt(lin.alpha_bar[n - 1]) * lin.skip_beta(n - 1, n) / lin.beta_bar[n]
    assert_printed(lin.alpha_bar[n], row[1])
    assert_printed(table.gamma[n], row[2])
    assert_printed(table.one_minus_gamma[n], row[3])
    assert_printed(cov_x0(lin, table, n), row[4])
    assert_printed(lam, row[5])
    assert_printed(reverse_variance(lin, table, n - 1, n), row[6])
    assert_printed(reverse_variance(lin, table, n - 1, n, eta=0.0), row[7])
    assert_printed(lam + g_ddpm ** 2 * lin.beta_bar[n] / lin.alpha_bar[n], row[8])   # Γ ≥ 0 bound


def test_t1_independent_formulas(lin):
    """Schedule/Γ/δ at rel 1e-10 and σ² at rel 1e-12 against formulas computed without tigercore."""
    betas, ab, bb = np_schedule()
    n = np.arange(2, 1001)
    v = ab * S2 + bb
    np.testing.assert_allclose(lin.alpha_bar.numpy(), ab, rtol=1e-10)
    np.testing.assert_allclose(lin.beta_bar.numpy()[1:], bb[1:], rtol=1e-10)
    delta = gaussian_delta(lin)
    np.testing.assert_allclose(delta.numpy()[1:], (ab * S2 / v)[1:], rtol=1e-10)
    np.testing.assert_allclose((1 - delta).numpy()[1:], (bb / v)[1:], rtol=1e-10)
    # DDPM: the true Var[x_{n-1} | x_n] = β_n v_{n-1} / v_n
    ddpm = reverse_variance(lin, delta, torch.as_tensor(n - 1), torch.as_tensor(n)).numpy()
    np.testing.assert_allclose(ddpm, betas[n] * v[n - 1] / v[n], rtol=1e-12)
    # DDIM: γ² Var[x_0 | x_n] with the naive γ = √ᾱ_s − √(β̄_s ᾱ_t / β̄_t)
    g = np.sqrt(ab[n - 1]) - np.sqrt(bb[n - 1] * ab[n] / bb[n])
    ddim = reverse_variance(lin, delta, torch.as_tensor(n - 1), torch.as_tensor(n), eta=0.0).numpy()
    np.testing.assert_allclose(ddim, g ** 2 * S2 * bb[n] / v[n], rtol=1e-12)


def test_unit_variance_reduces_to_beta(lin):
    """s² = 1: Γ_n = β̄_n, δ_n = ᾱ_n and σ*²_DDPM = β_n exactly (docs/semantics-dpm.md §11.1)."""
    delta = gaussian_delta(lin, 1.0)
    n = torch.arange(2, 1001)
    np.testing.assert_allclose(delta[1:].numpy(), lin.alpha_bar[1:].numpy(), rtol=1e-12)
    np.testing.assert_allclose(reverse_variance(lin, delta, n - 1, n).numpy(), lin.betas[2:].numpy(), rtol=1e-12)


# ----------------------------------------------------------------------------- T2, K = 10
T2 = """
1 112 1.263076e-1 9.993088e-5 9.160883e-2 8.688042e-2 9.986181e-1 9.480136e-1
112 223 3.168436e-1 9.932621e-2 1.977694e-1 4.600772e-2 6.388157e-1 2.521321e-1
223 334 4.661191e-1 2.758174e-1 3.383318e-1 2.562025e-2 5.551080e-1 1.144615e-1
334 445 5.830055e-1 4.581125e-1 4.927914e-1 1.402584e-2 6.021419e-1 5.825244e-2
445 556 6.744806e-1 6.113049e-1 6.276283e-1 6.854665e-3 6.773365e-1 2.772853e-2
556 667 7.460298e-1 7.216911e-1 7.278263e-1 2.742580e-3 7.463001e-1 1.100078e-2
667 778 8.019626e-1 7.948827e-1 7.966556e-1 8.513592e-4 8.019780e-1 3.407293e-3
778 889 8.456634e-1 8.441072e-1 8.444963e-1 2.006872e-4 8.456639e-1 8.028160e-4
889 1000 8.797882e-1 8.795284e-1 8.795933e-1 3.582564e-5 8.797882e-1 1.433040e-4
"""
T2_ROWS = [line.split() for line in T2.strip().splitlines()]


def test_t2_printed_values_vectorised(lin):
    s = torch.tensor([int(r[0]) for r in T2_ROWS])
    t = torch.tensor([int(r[1]) for r in T2_ROWS])
    delta = gaussian_delta(lin)
    ddpm = reverse_variance(lin, delta, s, t)
    ddim = reverse_variance(lin, delta, s, t, eta=0.0)
    for i, r in enumerate(T2_ROWS):
        assert_printed(lin.skip_beta(s[i], t[i]), r[2])
        assert_printed(lin.tilde_beta(s[i], t[i]), r[3])
        assert_printed(ddpm[i], r[4])
        assert_printed(ddim[i], r[5])
    # independent: β_{t|s} v_s / v_t
    betas, ab, bb = np_schedule()
    v = ab * S2 + bb
    sn, tn = s.numpy(), t.numpy()
    np.testing.assert_allclose(ddpm.numpy(), (1 - ab[tn] / ab[sn]) * v[sn] / v[tn], rtol=1e-12)


def test_t2_box_bound_and_pixel_clip(lin):
    """UB_box = λ² + γ²·((b−a)/2)² for data in [−1, 1] and the τ1 clamp values of §4."""
    from tigercore.dpm import gamma_coef, lambda_sq
    s = torch.tensor([int(r[0]) for r in T2_ROWS])
    t = torch.tensor([int(r[1]) for r in T2_ROWS])
    for eta, col in ((1.0, 6), (0.0, 7)):
        lam = lambda_sq(lin, s, t, eta)
        ub = lam + gamma_coef(lin, s, t, lam) ** 2
        for i, r in enumerate(T2_ROWS):
            assert_printed(ub[i], r[col])
    # the cov clamp realises the box bound: δ_t = ᾱ_t/β̄_t·4 gives cov = 4 → clamped to 1
    big = 4.0 * lin.alpha_bar / lin.beta_bar.clamp(min=1e-300)
    lam = lambda_sq(lin, s, t, 1.0)
    torch.testing.assert_close(reverse_variance(lin, big, s, t), lam + gamma_coef(lin, s, t, lam) ** 2,
                               rtol=1e-15, atol=0)
    assert_printed(pixel_clip_bound(1), "9.662723e-5")
    assert_printed(pixel_clip_bound(2), "3.865089e-4")
    delta = gaussian_delta(lin)
    clipped2 = reverse_variance(lin, delta, s, t, clip_pixel=2)
    clipped1 = reverse_variance(lin, delta, s, t, clip_pixel=1)
    assert_printed(clipped2[0], "3.8651e-4")
    assert_printed(clipped1[0], "9.6627e-5")
    torch.testing.assert_close(clipped2[1:], reverse_variance(lin, delta, s, t)[1:], rtol=0, atol=0)


def test_decoder_variance_value(lin):
    assert_printed(lin.tilde_beta(1, 2), "5.453188e-5")


def test_stable_gamma_matches_naive_form(lin):
    """γ in the stable form agrees with the naive form (to 2.8e-14 in fp64, docs/semantics-dpm.md §3) for many η."""
    from tigercore.dpm import gamma_coef, lambda_sq
    betas, ab, bb = np_schedule()
    s = torch.arange(1, 1000, 7)
    t = s + torch.randint(1, 50, s.shape, generator=torch.Generator().manual_seed(0))
    t = t.clamp(max=1000)
    for eta in (0.0, 0.3, 1.0):
        lam = lambda_sq(lin, s, t, eta)
        g = gamma_coef(lin, s, t, lam).numpy()
        sn, tn = s.numpy(), t.numpy()
        naive = np.sqrt(ab[sn]) - np.sqrt((bb[sn] - lam.numpy()) * ab[tn] / bb[tn])
        np.testing.assert_allclose(g, naive, rtol=1e-9, atol=3e-14)


# ----------------------------------------------------------------------------- point mass, degeneracy
def test_point_mass_variance_and_cost(lin):
    from tigercore.dpm import linear_trajectory, optimal_trajectory, trajectory_cost
    zero = torch.zeros(1001, dtype=torch.float64)
    s, t = torch.tensor([1, 5, 500]), torch.tensor([112, 6, 1000])
    torch.testing.assert_close(reverse_variance(lin, zero, s, t), lin.tilde_beta(s, t), rtol=1e-15, atol=0)
    assert torch.all(reverse_variance(lin, zero, s, t, eta=0.0) == 0)
    path, cost = optimal_trajectory(lin, zero, 10)
    assert abs(cost - (-19.327913550)) < 1e-9
    assert abs(trajectory_cost(lin, zero, linear_trajectory(1000, 25)) - (-19.327913550)) < 1e-9
    # the independent value −log(β̄_N / (α_{N|1} β̄_1))
    _, ab, bb = np_schedule()
    assert abs(cost + math.log(bb[1000] / ((ab[1000] / ab[1]) * bb[1]))) < 1e-9


def test_gaussian_trajectories_all_tie(lin):
    """ΣF = log(α_{N|1} v_1 / v_N) for every path; KL/d = ½ log(v_1 β̄_N / (v_N β̄_1)) (docs/semantics-dpm.md §11.1)."""
    from tigercore.dpm import (linear_trajectory, optimal_trajectory, quad_ddim_trajectory, trajectory_cost,
                               trajectory_kl_per_dim)
    _, ab, bb = np_schedule()
    v = ab * S2 + bb
    want = math.log((ab[1000] / ab[1]) * v[1] / v[1000])
    kl_want = 0.5 * math.log(v[1] * bb[1000] / (v[1000] * bb[1]))
    delta = gaussian_delta(lin)
    path, cost = optimal_trajectory(lin, delta, 10)
    assert abs(cost - want) < 1e-9
    g = torch.Generator().manual_seed(1)
    paths = [linear_trajectory(1000, 10), path]
    for _ in range(5):
        mid = torch.randperm(998, generator=g)[:8].add(2).sort().values
        paths.append(torch.cat([torch.tensor([1]), mid, torch.tensor([1000])]))
    for p in paths:
        assert abs(trajectory_cost(lin, delta, p) - want) < 1e-9
        assert abs(trajectory_kl_per_dim(lin, delta, p) - kl_want) < 1e-9
    q = quad_ddim_trajectory(1000, 10).timesteps
    assert q[0] == 1 and q[-1] == int(0.8 * 1000) + 1


# ----------------------------------------------------------------------------- Rademacher, 8-bit levels
def rademacher_delta_sech(sch, n):
    """§11.3: δ_n = r·E_ε sech²(r + √r ε), r = ᾱ/β̄, uniform ε grid on [−12, 12], step 1e-3."""
    r = float(sch.alpha_bar[n] / sch.beta_bar[n])
    e = np.arange(-12.0, 12.0 + 5e-4, 1e-3)
    w = np.exp(-0.5 * e * e) / math.sqrt(2 * math.pi) * 1e-3
    z = np.abs(r + math.sqrt(r) * e)
    sech2 = 4.0 * np.exp(-2.0 * z) / (1.0 + np.exp(-2.0 * z)) ** 2
    return r * float(np.sum(w * sech2))


def levels_delta_quadrature(sch, n, L=256):
    """§11.4 with numpy: δ = (ᾱ/β̄)(Var x_0 − E[(E[x_0|x])²]), log-sum-exp over an x grid."""
    c = -1.0 + 2.0 * np.arange(L) / (L - 1)
    a, b = math.sqrt(float(sch.alpha_bar[n])), float(sch.beta_bar[n])
    h = min(math.sqrt(b) / 10.0, 0.004)
    x = np.arange(-a - 10 * math.sqrt(b), a + 10 * math.sqrt(b) + h, h)
    lw = -(x[:, None] - a * c) ** 2 / (2 * b)
    mx = lw.max(1, keepdims=True)
    w = np.exp(lw - mx)
    px = w.sum(1) * np.exp(mx[:, 0]) / L / math.sqrt(2 * math.pi * b)
    m = (w * c).sum(1) / w.sum(1)
    var0 = (L + 1) / (3 * (L - 1))
    return (a * a / b) * (var0 - float(np.sum(px * m * m) * h))


@pytest.mark.parametrize("n", [50, 200, 400, 700, 1000])
def test_rademacher_quadratures_agree(lin, n):
    toy = DiscreteToy.make("rademacher")
    ref = rademacher_delta_sech(lin, n)
    assert ref > 0
    assert abs(toy.exact_one_minus_gamma(lin, n) - ref) <= 1e-6 * ref


@pytest.mark.parametrize("n", [10, 300, 800, 1000])
def test_levels_quadratures_agree(lin, n):
    toy = DiscreteToy.make("levels")
    ref = levels_delta_quadrature(lin, n)
    assert abs(toy.exact_one_minus_gamma(lin, n) - ref) <= 1e-6 * ref
    assert abs(float(toy.support.var(unbiased=False)) - 257 / 765) < 1e-15


def test_rademacher_heads_give_exact_diag_variance(lin):
    """§11.3 heads at arbitrary x: NPR g, SN h and the resulting σ² = λ² + γ² sech²(√ᾱ x/β̄)."""
    g = torch.Generator().manual_seed(0)
    s, t = 300, 420
    ab, bb = float(lin.alpha_bar[t]), float(lin.beta_bar[t])
    x = 2.0 * torch.randn(4, 64, generator=g, dtype=torch.float64)
    z = math.sqrt(ab) * x / bb
    sech2 = 1.0 / torch.cosh(z) ** 2
    eps_hat = (x - math.sqrt(ab) * torch.tanh(z)) / math.sqrt(bb)
    g_npr = (ab / bb) * sech2
    h_sn = eps_hat ** 2 + g_npr
    _, abn, bbn = np_schedule()
    for eta in (1.0, 0.0):
        lam = eta ** 2 * (1 - abn[t] / abn[s]) * bbn[s] / bbn[t]
        gam = math.sqrt(abn[s]) - math.sqrt((bbn[s] - lam) * abn[t] / bbn[t])
        want = lam + gam ** 2 * sech2
        npr = diag_reverse_variance(lin, s, t, kind="npr", head=g_npr, eta=eta)
        sn = diag_reverse_variance(lin, s, t, kind="sn", head=h_sn, eps_pred=eps_hat, eta=eta)
        torch.testing.assert_close(npr, want, rtol=1e-12, atol=0)
        torch.testing.assert_close(sn, want, rtol=1e-10, atol=0)   # h − ε̂² cancels a little
        npr32 = diag_reverse_variance(lin, s, t, kind="npr", head=g_npr.float(), eta=eta)
        assert npr32.dtype == torch.float32
        torch.testing.assert_close(npr32.double(), want, rtol=1e-6, atol=0)
    # per-sample timesteps [B]
    tb = torch.tensor([420, 420, 421, 900])
    out = diag_reverse_variance(lin, tb - 1, tb, kind="eps", eps_pred=eps_hat)
    assert out.shape == eps_hat.shape


# ----------------------------------------------------------------------------- cosine tail (§10)
def test_cosine_tail_keeps_delta_in_fp64(tmp_path):
    cos = NoiseSchedule.cosine(1000)
    delta = gaussian_delta(cos)
    assert_printed(delta[990], "6.072537e-5")
    assert_printed(delta[999], "6.071928e-7")
    assert_printed(delta[1000], "6.071917e-10")
    gamma32 = (1.0 - delta).to(torch.float32)                  # an official fp32 Γ file
    official = GammaTable.from_ms_eps(gamma32.numpy())
    assert official.one_minus_gamma[1000] == 0.0                # 1 − fl32(Γ) = 0
    assert_printed(official.one_minus_gamma[999], "5.960464e-7")
    ours = GammaTable.from_one_minus_gamma(delta)
    assert ours.one_minus_gamma[1000] > 0
    assert float(cov_x0(cos, official, 1000)) == 0.0
    assert abs(float(cov_x0(cos, ours, 1000)) - 0.25) < 1e-6
    bf = 1.0 - (1.0 - delta).to(torch.bfloat16).double()
    assert torch.all(bf[990:] == 0)
    assert_printed(bf[900], "7.8125e-3")
    assert_printed(delta[900], "6.133761e-3")


def test_cosine_tail_npr_estimator_resolves_delta_N():
    """With the exact ε-model the NPR z̄ has relative SE √(2/(dM)): δ_N = 6.07e-10 is resolved
    (an fp32 Γ would give 1 − Γ = 0, see the previous test)."""
    cos = NoiseSchedule.cosine(1000)
    N, d, M = 1000, 1024, 32
    ab, bb = float(cos.alpha_bar[N]), float(cos.beta_bar[N])
    v = ab * S2 + bb
    g = torch.Generator().manual_seed(3)
    x0 = 0.5 * torch.randn(M, d, generator=g, dtype=torch.float64)
    eps = torch.randn(M, d, generator=g, dtype=torch.float64)
    x = cos.marginal(x0, N, eps)
    eps_hat = math.sqrt(bb) * x / v                            # exact ε*, μ = 0
    est = GammaEstimator(cos, "npr")
    est.update(eps_hat, N, eps)
    r = est.result()
    want = float(gaussian_delta(cos)[N])
    assert r.one_minus_gamma[N] > 0 and not r.clipped[N]
    assert abs(float(r.one_minus_gamma[N]) - want) <= 4 * float(r.stderr[N])
    assert float(r.stderr[N]) < 0.05 * want


# ----------------------------------------------------------------------------- schedule validation
def test_schedule_conventions_and_errors():
    cos = NoiseSchedule.cosine(1000)
    assert cos.betas[0] == 0 and cos.alpha_bar[0] == 1 and cos.beta_bar[0] == 0
    assert float(cos.betas[1000]) == 0.999                              # the max_beta clip
    custom = NoiseSchedule.from_betas(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    assert custom.num_timesteps == 1000 and custom.betas.shape == (1001,)
    torch.testing.assert_close(custom.alpha_bar, NoiseSchedule.linear(1000).alpha_bar, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="open interval"):
        NoiseSchedule.from_betas([0.1, 1.0])
    with pytest.raises(ValueError, match="positive int"):
        NoiseSchedule.linear(0)
    with pytest.raises(ValueError, match="s <= t"):
        cos.skip_beta(5, 4)
    with pytest.raises(ValueError, match=r"0\.\.1000"):
        cos.tilde_beta(1, 1001)
    with pytest.raises(TypeError, match="integer"):
        cos.skip_alpha(torch.tensor([1.0]), 3)
    with pytest.raises(ValueError, match="s < t"):
        reverse_variance(cos, gaussian_delta(cos), 5, 5)
    with pytest.raises(ValueError, match=r"\(1001,\)"):
        reverse_variance(cos, torch.zeros(1000, dtype=torch.float64), 1, 5)
    with pytest.raises(TypeError, match="floating"):
        reverse_variance(cos, torch.zeros(1001, dtype=torch.long), 1, 5)
