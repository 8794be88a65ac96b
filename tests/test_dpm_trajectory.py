# Trajectory DP (docs/semantics-dpm.md §5, §11.5): minplus_dp against brute force over all paths,
# first-argmin ties, recomputed costs, DP ≤ even spacing, chunking invariance, dp_seg, dp_vb and
# the fixed linear / quad_ddim spacings. Reference DP: tigercore/reference/dpm.py.
import math

import pytest
import torch

from tigercore.dpm import (GammaTable, NoiseSchedule, dp_seg_trajectory, dp_vb_trajectory, linear_trajectory,
                           optimal_trajectory, quad_ddim_trajectory, trajectory_cost)
from tigercore.dpm.demo import DiscreteToy
from tigercore.reference.dpm import delta_cost, delta_cost_matrix, minplus_dp, minplus_path

from _dpm_oracles import brute_force

N_SMALL, K_SMALL = 30, 5


@pytest.fixture(scope="module")
def small():
    # the linear schedule rescaled to N = 30 (β·1000/N), so that the tail is reached
    return NoiseSchedule.linear(N_SMALL, 1e-4 * 1000 / N_SMALL, 0.02 * 1000 / N_SMALL)


def toy_delta(sch, name):
    """δ curve of the toy data; a coarse quadrature is enough to give the DP a realistic cost."""
    if name == "rademacher":                       # §11.3: r·E sech²(r + √r ε), all n at once
        r = (sch.alpha_bar[1:] / sch.beta_bar[1:]).unsqueeze(1)
        e = torch.arange(-12.0, 12.0, 0.01, dtype=torch.float64)
        w = torch.exp(-0.5 * e * e) * 0.01 / math.sqrt(2 * math.pi)
        z = (r + r.sqrt() * e).abs()
        sech2 = 4.0 * torch.exp(-2.0 * z) / (1.0 + torch.exp(-2.0 * z)) ** 2
        return torch.cat([torch.zeros(1, dtype=torch.float64), (r[:, 0] * (w * sech2).sum(1)).clamp(0, 1)])
    toy = DiscreteToy.make(name)
    d = torch.zeros(sch.num_timesteps + 1, dtype=torch.float64)
    for n in range(1, sch.num_timesteps + 1):
        d[n] = toy.exact_one_minus_gamma(sch, n, h_max=0.05)
    return d


@pytest.mark.parametrize("data", ["rademacher", "levels"])
def test_dp_matches_brute_force(small, data):
    delta = toy_delta(small, data)
    F = delta_cost_matrix(small.log_alpha_bar, delta)
    cost_bf, path_bf = brute_force(F, N_SMALL, K_SMALL)
    C, D = minplus_dp(F, K_SMALL)
    assert float(C[K_SMALL, N_SMALL]) == cost_bf                         # exact in fp64
    assert minplus_path(D, K_SMALL, N_SMALL).tolist() == path_bf
    # the public function (callable F, blockwise) finds the same path; its cost agrees to rounding
    path, cost = optimal_trajectory(small, delta, K_SMALL)
    assert path.tolist() == path_bf
    assert abs(cost - cost_bf) <= 1e-12 * abs(cost_bf)
    assert abs(trajectory_cost(small, delta, path) - cost) <= 1e-12 * abs(cost)
    even = linear_trajectory(N_SMALL, K_SMALL).timesteps
    assert cost <= trajectory_cost(small, delta, even) + 1e-12


def test_dp_first_argmin_ties():
    """Integer costs with many exact ties: the DP's choice equals the brute-force tie-break."""
    g = torch.Generator().manual_seed(0)
    for trial in range(5):
        F = torch.randint(0, 3, (N_SMALL + 1, N_SMALL + 1), generator=g).to(torch.float64)
        cost_bf, path_bf = brute_force(F, N_SMALL, K_SMALL)
        C, D = minplus_dp(F, K_SMALL)
        assert float(C[K_SMALL, N_SMALL]) == cost_bf
        assert minplus_path(D, K_SMALL, N_SMALL).tolist() == path_bf
        # identical through the callable path and with tiny chunks
        C2, D2 = minplus_dp(lambda s, t: F[s][:, t], K_SMALL, N_SMALL, max_dense_bytes=0, chunk_elems=7)
        assert torch.equal(C, C2) and torch.equal(D, D2)


def test_dp_all_zero_costs_pick_leftmost():
    F = torch.zeros(11, 11, dtype=torch.float64)
    C, D = minplus_dp(F, 4)
    # every path ties; back-pointers take the smallest predecessor: 1, 2, 3, 10
    assert minplus_path(D, 4, 10).tolist() == [1, 2, 3, 10]


def test_dp_recomputed_cost_and_chunking():
    sch = NoiseSchedule.cosine(200)
    delta = toy_delta(sch, "rademacher")
    F = delta_cost_matrix(sch.log_alpha_bar, delta)
    C, D = minplus_dp(F, 12)
    for k in (2, 5, 12):
        path = minplus_path(D, k, 200)
        total = 0.0
        for s, t in zip(path[:-1].tolist(), path[1:].tolist()):
            total = total + float(F[s, t])
        assert total == float(C[k, 200])
    for chunk in (1, 50, 1 << 12):
        C2, D2 = minplus_dp(F, 12, chunk_elems=chunk)
        assert torch.equal(C, C2) and torch.equal(D, D2)
    fn = lambda s, t: delta_cost(sch.log_alpha_bar, delta, s, t)       # noqa: E731
    C3, D3 = minplus_dp(fn, 12, 200, max_dense_bytes=0)                 # evaluated per block and k
    torch.testing.assert_close(C3, C, rtol=1e-13, atol=0)
    assert torch.equal(D3, D)


def test_dp_cost_not_above_even():
    sch = NoiseSchedule.linear(1000)
    delta = toy_delta(sch, "rademacher")
    for K in (2, 10, 40):
        path, cost = optimal_trajectory(sch, delta, K)
        assert path[0] == 1 and path[-1] == 1000 and path.numel() == K
        assert bool((path[1:] > path[:-1]).all())
        assert cost <= trajectory_cost(sch, delta, linear_trajectory(1000, K)) + 1e-12


def test_dp_warns_on_clipped_zeros():
    sch = NoiseSchedule.linear(100, 1e-3, 0.2)
    delta = (sch.alpha_bar * 0.25 / (sch.alpha_bar * 0.25 + sch.beta_bar)).clone()
    delta[60:] = -1e-3                                 # noise below zero, clipped by the table
    table = GammaTable.from_one_minus_gamma(delta, estimator="cv")
    with pytest.warns(RuntimeWarning, match="clipped to 0"):
        optimal_trajectory(sch, table, 5)


def test_dp_bad_inputs(small):
    F = torch.zeros(5, 5)
    with pytest.raises(ValueError, match="square"):
        minplus_dp(torch.zeros(4, 5), 2)
    with pytest.raises(TypeError, match="floating"):
        minplus_dp(torch.zeros(5, 5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="NaN"):
        minplus_dp(F.masked_fill(torch.eye(5, dtype=torch.bool).roll(1, 1), math.nan), 2)
    with pytest.raises(ValueError, match="num_steps"):
        minplus_dp(lambda s, t: torch.zeros(len(s), len(t)), 2)
    with pytest.raises(ValueError, match="K"):
        optimal_trajectory(small, torch.zeros(N_SMALL + 1, dtype=torch.float64), N_SMALL + 1)
    with pytest.raises(ValueError, match="shape"):
        optimal_trajectory(small, torch.zeros(N_SMALL, dtype=torch.float64), 3)
    bad = torch.zeros(N_SMALL + 1, dtype=torch.float64)
    bad[7] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        optimal_trajectory(small, bad, 3)


# ----------------------------------------------------------------------------- fixed spacings
def test_linear_and_quad_spacings():
    assert linear_trajectory(1000, 10).timesteps.tolist() == [1, 112, 223, 334, 445, 556, 667, 778, 889, 1000]
    assert linear_trajectory(1000, 1000).timesteps.tolist() == list(range(1, 1001))
    # Python round: half to even on the running float 1 + k·(N−1)/(K−1)
    x, want = 1.0, []
    for _ in range(7):
        want.append(round(x))
        x += (20 - 1) / 6
    assert linear_trajectory(20, 7).timesteps.tolist() == want
    q = quad_ddim_trajectory(1000, 10).timesteps
    import numpy as np
    assert q.tolist() == ((np.linspace(0, math.sqrt(800), 10) ** 2).astype(int) + 1).tolist()
    with pytest.raises(ValueError):
        linear_trajectory(10, 11)


# ----------------------------------------------------------------------------- dp_seg, dp_vb
def test_dp_seg_reproduces_the_split():
    sch = NoiseSchedule.linear(100, 1e-3, 0.2)
    gamma = 1.0 - sch.alpha_bar * 0.25 / (sch.alpha_bar * 0.25 + sch.beta_bar)
    gamma[0] = 0.0
    gamma[96] = 1.0 + 1e-6                               # first Γ̂ > 1 at idx = 96
    K = 10
    path = dp_seg_trajectory(sch, gamma, K).timesteps
    num_bad = 2 * (100 - 96 + 1)                         # 10
    N1 = 100 - num_bad                                   # 90
    K1 = math.ceil((1 - 0.8 * num_bad / 100) * K)        # 10 → K2 = 0 → forced to 1
    K1, K2 = (K - 1, 1) if K - K1 < 1 else (K1, K - K1)
    assert path.numel() == K and path[-1] == 100 and path[K1 - 1] == N1
    delta = (1.0 - gamma).clamp(0.0, 1.0)
    F = delta_cost_matrix(sch.log_alpha_bar[:N1 + 1], delta[:N1 + 1])
    C, D = minplus_dp(F, K1)
    assert path[:K1].tolist() == minplus_path(D, K1, N1).tolist()
    # the same through a GammaTable loaded from fp32 "official" Γ
    table = GammaTable.from_ms_eps(gamma.to(torch.float32))
    assert table.clipped[96] and table.one_minus_gamma[96] == 0
    assert dp_seg_trajectory(sch, table, K).timesteps.tolist()[K1 - 1:] == path.tolist()[K1 - 1:]
    # no Γ̂ > 1: plain DP on [1, N]
    ok = gamma.clone()
    ok[96] = gamma[95]
    assert dp_seg_trajectory(sch, ok, K).timesteps.tolist() == optimal_trajectory(sch, (1 - ok).clamp(0, 1), K)[0].tolist()


def test_dp_vb_free_first_step():
    """dp_vb starts at 0 with τ_1 free: matches brute force over paths 0 < τ_1 < … < τ_K = N."""
    g = torch.Generator().manual_seed(5)
    N, K = 12, 4
    cost = torch.rand(N + 1, N + 1, generator=g, dtype=torch.float64)
    path, total = dp_vb_trajectory(cost, K)
    bf_cost, bf_path = brute_force(cost, N, K + 1, start=0)
    assert path.tolist() == bf_path[1:] and total == bf_cost


@pytest.mark.slow
def test_dp_full_size_cosine_4000_1000():
    """The ImageNet64 setting: N = 4000 (cosine), K = 1000, δ-form on the full range (~11 s on 2 cores)."""
    sch = NoiseSchedule.cosine(4000)
    delta = toy_delta(sch, "rademacher")
    path, cost = optimal_trajectory(sch, delta, 1000)
    assert path.numel() == 1000 and path[0] == 1 and path[-1] == 4000
    assert bool((path[1:] > path[:-1]).all()) and math.isfinite(cost)
    assert abs(trajectory_cost(sch, delta, path) - cost) <= 1e-10 * abs(cost)
    assert cost <= trajectory_cost(sch, delta, linear_trajectory(4000, 1000)) + 1e-10
