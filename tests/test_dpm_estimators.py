# Reductions and Γ/δ estimators (docs/semantics-dpm.md §2, §9, §10, §11.5): eps_stats (fixed
# reduction tree: batch-split / thread-count / element-order invariance, fp32-tile accuracy, fp16 overflow),
# segment_moments + Chan merge, GammaEstimator unbiasedness within 4 SE of the closed forms on
# Gaussian data with the exact ε-model, GammaTable persistence, ms_eps loading, bad inputs and the
# torch.distributed merge. Reference ops: tigercore/reference/dpm.py.
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tigercore.dpm import GammaEstimator, GammaTable, NoiseSchedule
from tigercore.reference.dpm import EPS_STATS_COLUMNS, eps_stats, merge_moments, segment_moments

from _dpm_oracles import assert_eps_stats_accurate, naive_stats

S2 = 0.25


def gaussian_eps_model(sch, s2=S2):
    """Exact ε*(x_n) = √β̄_n (x_n − √ᾱ_n μ)/v_n for x_0 ~ N(0, s² I) (docs/semantics-dpm.md §11.1)."""
    def model(x, n):
        n = torch.as_tensor(n).expand(x.shape[0]) if torch.as_tensor(n).dim() == 0 else n
        ab = torch.as_tensor(sch.alpha_bar)[n].to(x.dtype).unsqueeze(1)
        bb = torch.as_tensor(sch.beta_bar)[n].to(x.dtype).unsqueeze(1)
        return bb.sqrt() * x / (ab * s2 + bb)
    return model


# ----------------------------------------------------------------------------- eps_stats
def test_eps_stats_columns_and_nan_for_missing():
    g = torch.Generator().manual_seed(0)
    e_hat, e, x0, x0h = (torch.randn(5, 3, 7, 11, generator=g) for _ in range(4))
    got = eps_stats(e_hat, e, x0, x0h)
    assert got.dtype == torch.float64 and got.shape == (5, len(EPS_STATS_COLUMNS))
    assert_eps_stats_accurate(got, e_hat, e, x0, x0h)           # fp32 tiles, stated bound
    wide = [t.double() for t in (e_hat, e, x0, x0h)]               # fp64 inputs: fp64 all the way
    torch.testing.assert_close(eps_stats(*wide), naive_stats(*wide), rtol=1e-13, atol=0)
    only_y = eps_stats(e_hat)
    assert torch.isnan(only_y[:, 1:]).all()
    torch.testing.assert_close(only_y[:, 0], got[:, 0], rtol=0, atol=0)
    assert torch.isnan(eps_stats(e_hat, e)[:, 4]).all()


def test_eps_stats_batch_split_and_thread_count_are_bitwise():
    g = torch.Generator().manual_seed(1)
    e_hat = torch.randn(9, 5000, generator=g)
    e = torch.randn(9, 5000, generator=g)
    full = eps_stats(e_hat, e)
    parts = torch.cat([eps_stats(e_hat[i:i + 2], e[i:i + 2]) for i in range(0, 9, 2)])
    assert torch.equal(torch.nan_to_num(full), torch.nan_to_num(parts))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = eps_stats(e_hat, e)
        torch.set_num_threads(2)
        two = eps_stats(e_hat, e)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.nan_to_num(one), torch.nan_to_num(two))
    assert torch.equal(torch.nan_to_num(one), torch.nan_to_num(full))


def test_eps_stats_element_order_within_rounding():
    """Permuting the elements changes the tree, not the result beyond its rounding: fp32 tiles
    (13·2^-24 of Σ|term| each way) for fp32 inputs, fp64 rounding for fp64 inputs."""
    g = torch.Generator().manual_seed(2)
    e_hat = 1e2 * torch.randn(4, 3 * 32 * 32, generator=g) + 1e4       # cancellation-prone scale
    e = torch.randn(4, 3 * 32 * 32, generator=g)
    perm = torch.randperm(e.shape[1], generator=g)
    a = eps_stats(e_hat, e)
    b = eps_stats(e_hat[:, perm], e[:, perm])
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=2e-6, atol=0)    # |u| ≈ Σ|u| here: no cancellation
    a = eps_stats(e_hat.double(), e.double())
    b = eps_stats(e_hat[:, perm].double(), e[:, perm].double())
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=1e-14, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_eps_stats_no_fp16_overflow(dtype):
    """d = 196,608 (256×256×3): Σε̂² ≈ 2e5 > 65504 would overflow an fp16 accumulator (§10)."""
    g = torch.Generator().manual_seed(4)
    e_hat = (1.5 * torch.randn(2, 3, 256, 256, generator=g)).to(dtype)
    e = torch.randn(2, 3, 256, 256, generator=g).to(dtype)
    assert e_hat.shape[1:].numel() == 196_608
    if dtype == torch.float16:
        assert torch.isinf(e_hat[0].pow(2).sum(dtype=torch.float16))   # the pitfall is real
    got = eps_stats(e_hat, e)
    assert torch.isfinite(got[:, :4]).all()
    ref = naive_stats(e_hat.float(), e.float())
    torch.testing.assert_close(got[:, :2], ref[:, :2], rtol=1e-6, atol=0)   # fp32 tiles (bound 7.8e-7)
    assert_eps_stats_accurate(got, e_hat, e)
    assert abs(float(got[0, 0]) - 2.25) < 0.05


def test_eps_stats_bad_inputs():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="floating"):
        eps_stats(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="floating"):
        eps_stats(x, torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="shape"):
        eps_stats(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match="at least 2 dims"):
        eps_stats(torch.randn(4))
    with pytest.raises(ValueError, match="together"):
        eps_stats(x, x, x0=x)


# ----------------------------------------------------------------------------- segment moments
def test_segment_moments_match_two_pass_numpy_and_merge():
    g = torch.Generator().manual_seed(5)
    stats = torch.randn(700, 5, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 1e-3, 5.0, 1.0]) + 3
    ts = torch.randint(1, 12, (700,), generator=g)
    ts[:300] = 4                                                       # one long segment
    count, mean, com = segment_moments(stats, ts, 12)
    assert count.shape == (13,) and mean.shape == (13, 5) and com.shape == (13, 5, 5)
    assert count[0] == 0 and count[12] == 0 and torch.all(mean[12] == 0)
    for n in range(1, 12):
        x = stats[ts == n].numpy()
        assert count[n] == len(x)
        m = x.mean(0)
        np.testing.assert_allclose(mean[n].numpy(), m, rtol=1e-13)
        np.testing.assert_allclose(com[n].numpy(), (x - m).T @ (x - m), rtol=1e-11, atol=1e-12)
    # Chan merge of splits equals the whole
    state = None
    for lo in range(0, 700, 123):
        part = segment_moments(stats[lo:lo + 123], ts[lo:lo + 123], 12)
        state = part if state is None else merge_moments(state, part)
    for a, b in zip(state, (count, mean, com)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-11)
    # thread count does not change a bit
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = segment_moments(stats, ts, 12)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, (count, mean, com)))


def test_segment_moments_bad_inputs():
    s = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"1\.\.10"):
        segment_moments(s, torch.tensor([0, 1, 2, 3]), 10)
    with pytest.raises(ValueError, match=r"1\.\.10"):
        segment_moments(s, torch.tensor([1, 2, 3, 11]), 10)
    with pytest.raises(TypeError, match="integer"):
        segment_moments(s, torch.tensor([1.0, 2.0, 3.0, 4.0]), 10)
    with pytest.raises(ValueError, match=r"\[B\]"):
        segment_moments(s, torch.tensor([1, 2, 3]), 10)
    with pytest.raises(TypeError, match="floating"):
        segment_moments(s.long(), torch.tensor([1, 2, 3, 4]), 10)


# ----------------------------------------------------------------------------- estimators
def closed_form_se(gamma, d, M):
    return {"naive": gamma * math.sqrt(2 / (d * M)),
            "cv": gamma * math.sqrt(2 * (1 - gamma ** 2) / (d * M)),
            "npr": (1 - gamma) * math.sqrt(2 / (d * M))}


@pytest.fixture(scope="module")
def gaussian_run():
    """d = 3072, M = 256 per n, exact ε*, x_0 ~ N(0.3, 0.25 I), fp64 (docs/semantics-dpm.md §11.5)."""
    sch = NoiseSchedule.linear(1000)
    d, M, steps = 3072, 256, (10, 500, 900, 1000)
    g = torch.Generator().manual_seed(6)
    est = GammaEstimator(sch, "cv")
    mu = 0.3
    for n in steps:
        for _ in range(2):                                             # two batches per n
            x0 = mu + 0.5 * torch.randn(M // 2, d, generator=g, dtype=torch.float64)
            eps = torch.randn(M // 2, d, generator=g, dtype=torch.float64)
            x = sch.marginal(x0, n, eps)
            ab, bb = float(sch.alpha_bar[n]), float(sch.beta_bar[n])
            eps_hat = math.sqrt(bb) * (x - math.sqrt(ab) * mu) / (ab * S2 + bb)
            est.update(eps_hat, n, eps)
    return sch, est, steps, d, M


@pytest.mark.parametrize("estimator", ["cv", "npr", "naive"])
def test_estimators_unbiased_within_4se(gaussian_run, estimator):
    sch, est, steps, d, M = gaussian_run
    r = est.result(estimator)
    for n in steps:
        ab, bb = float(sch.alpha_bar[n]), float(sch.beta_bar[n])
        delta, gamma = ab * S2 / (ab * S2 + bb), bb / (ab * S2 + bb)
        se = closed_form_se(gamma, d, M)[estimator]
        assert r.count[n] == M
        # the reported SE estimates the closed form (relative sampling error ~ 1/√(2M) ≈ 4.4 %)
        assert abs(float(r.stderr[n]) / se - 1) < 0.2, (n, float(r.stderr[n]), se)
        if r.clipped[n]:
            assert r.one_minus_gamma[n] in (0.0, 1.0) and delta < 4 * se
        else:
            assert abs(float(r.one_minus_gamma[n]) - delta) < 4 * se, (n, float(r.one_minus_gamma[n]), delta, se)
    unseen = [n for n in range(1, 1001) if n not in steps]
    assert torch.isnan(r.one_minus_gamma[unseen]).all() and (r.count[unseen] == 0).all()
    assert r.one_minus_gamma[0] == 0 and r.gamma[0] == 1


def test_mixed_timesteps_in_one_batch_equal_separate_updates():
    sch = NoiseSchedule.linear(50, 2e-3, 0.4)
    g = torch.Generator().manual_seed(7)
    model = gaussian_eps_model(sch)
    x0 = 0.5 * torch.randn(64, 20, generator=g, dtype=torch.float64)
    eps = torch.randn(64, 20, generator=g, dtype=torch.float64)
    n = torch.randint(1, 51, (64,), generator=g)
    x = sch.marginal(x0, n, eps)
    e_hat = model(x, n)
    a = GammaEstimator(sch)
    a.update(e_hat, n, eps)
    b = GammaEstimator(sch)
    for t in n.unique():
        m = n == t
        b.update(e_hat[m], int(t), eps[m])
    for u, v in zip(a.state(), b.state()):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-14, equal_nan=True)   # w: no x0 → NaN


def test_estimate_drives_the_model():
    sch = NoiseSchedule.linear(20, 5e-3, 0.5)
    model = gaussian_eps_model(sch)
    g = torch.Generator().manual_seed(8)
    data = [0.5 * torch.randn(32, 16, generator=g, dtype=torch.float64) for _ in range(3)]
    calls = []

    def counting(x, n):
        calls.append((x.shape[0], n.dtype, int(n.min()), int(n.max())))
        return model(x, n)

    est = GammaEstimator(sch, "npr")
    table = est.estimate(counting, data, generator=g, progress=False)
    assert len(calls) == 3 * 20 and all(c[1] == torch.int64 for c in calls)
    assert (table.count[1:] == 96).all()
    ab, bb = sch.alpha_bar, sch.beta_bar
    exact = ab * S2 / (ab * S2 + bb)
    z = (table.one_minus_gamma[1:] - exact[1:]) / table.stderr[1:]
    assert z.abs().max() < 4.5
    # random timesteps, tuples from a loader, a subset of steps, and time_fn
    est2 = GammaEstimator(sch, "cv")
    est2.estimate(model, [(d, None) for d in data], timesteps="random", generator=g, progress=False)
    assert int(est2.result().count.sum()) == 96
    seen = []
    est3 = GammaEstimator(sch, "naive")
    est3.estimate(lambda x, t: (seen.append(int(t[0])), model(x, t + 1))[1], data, timesteps=[3, 7],
                  time_fn=lambda n: n - 1, generator=g, progress=False)
    assert sorted(set(seen)) == [2, 6]
    assert est3.result().count[[3, 7]].tolist() == [96, 96]


def test_update_errors_are_clear():
    sch = NoiseSchedule.linear(10, 1e-2, 0.2)
    est = GammaEstimator(sch, "cv")
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="needs the noise"):
        est.update(x, 3)
    with pytest.raises(ValueError, match=r"1\.\.10"):
        est.update(x, 11, x)
    with pytest.raises(ValueError, match=r"1\.\.10"):
        est.update(x, torch.tensor([0, 1, 2, 3]), x)
    with pytest.raises(TypeError, match="integers"):
        est.update(x, torch.tensor([1.0, 2.0, 3.0, 4.0]), x)
    with pytest.raises(ValueError, match=r"\[B\]"):
        est.update(x, torch.tensor([1, 2]), x)
    with pytest.raises(TypeError, match="floating"):
        est.update(x.long(), 3, x.long())
    with pytest.raises(ValueError, match="estimator"):
        GammaEstimator(sch, "bogus")
    naive = GammaEstimator(sch, "naive")
    naive.update(x, 3)                                   # no eps needed
    with pytest.raises(ValueError, match="pass eps"):
        naive.result("cv")


# ----------------------------------------------------------------------------- tables
def test_table_save_load_and_ms_eps(tmp_path):
    sch = NoiseSchedule.linear(30, 3e-3, 0.6)
    delta = sch.alpha_bar * S2 / (sch.alpha_bar * S2 + sch.beta_bar)
    t = GammaTable.from_one_minus_gamma(delta, stderr=torch.full((31,), 1e-3, dtype=torch.float64))
    t.save(tmp_path / "g.pt")
    u = GammaTable.load(tmp_path / "g.pt")
    assert torch.equal(u.one_minus_gamma, t.one_minus_gamma) and u.estimator == "exact"
    assert torch.equal(u.stderr, t.stderr) and torch.equal(u.clipped, t.clipped)
    # an official file: torch.save of a float32 numpy Γ vector of length N + 1
    gamma32 = (1.0 - delta).numpy().astype(np.float32)
    gamma32[0] = 0.0
    gamma32[29] = np.float32(1.0001)                     # a noisy Γ̂ > 1
    torch.save(gamma32, tmp_path / "official.ms_eps.pth")
    o = GammaTable.from_ms_eps(tmp_path / "official.ms_eps.pth")
    want = 1.0 - gamma32.astype(np.float64)
    np.testing.assert_array_equal(o.one_minus_gamma.numpy()[1:29], want[1:29])
    assert o.one_minus_gamma[29] == 0 and o.clipped[29] and o.clipped.sum() == 1
    assert o.one_minus_gamma.dtype == torch.float64 and o.estimator == "ms_eps"
    np.save(tmp_path / "g.npy", gamma32)
    assert torch.equal(GammaTable.from_ms_eps(tmp_path / "g.npy").one_minus_gamma, o.one_minus_gamma)
    assert torch.equal(GammaTable.from_ms_eps(gamma32[1:], num_timesteps=30).one_minus_gamma, o.one_minus_gamma)
    with pytest.raises(ValueError, match="not a tigercore GammaTable"):
        GammaTable.load(tmp_path / "official.ms_eps.pth")
    with pytest.raises(ValueError, match="N \\+ 1"):
        GammaTable.from_ms_eps(gamma32, num_timesteps=40)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        GammaTable(delta + 2, t.stderr, t.count, t.clipped)


# ----------------------------------------------------------------------------- torch.distributed
_WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, {root!r})
    from tigercore.dpm import GammaEstimator, NoiseSchedule
    dist.init_process_group("gloo", init_method="file://" + {store!r}, rank=1, world_size=2)
    est = GammaEstimator(NoiseSchedule.linear(20, 5e-3, 0.5), "cv")
    for n, e, e_hat in torch.load({data!r}):
        est.update(e_hat, n, e)
    torch.save(est.result().one_minus_gamma, {out!r})      # merged over both ranks
    dist.destroy_process_group()
""")


def _rank_batches(rank):
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(2):
        n = torch.randint(1, 21, (50,), generator=g)
        e = torch.randn(50, 8, generator=g, dtype=torch.float64)
        out.append((n, e, 0.9 * e + 0.1 * torch.randn(50, 8, generator=g, dtype=torch.float64)))
    return out


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_distributed_merge_equals_single_process(tmp_path):
    """Rank 0 in this process, rank 1 in a subprocess (gloo, file store); result() all-gathers and
    Chan-merges, and must equal one process that saw both ranks' batches."""
    import torch.distributed as dist
    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("tigercore").__file__)))
    torch.save(_rank_batches(1), tmp_path / "data1.pt")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(root=root, store=str(tmp_path / "store"), data=str(tmp_path / "data1.pt"),
                                     out=str(tmp_path / "out1.pt")))
    proc = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stderr=subprocess.PIPE)
    sch = NoiseSchedule.linear(20, 5e-3, 0.5)
    est = GammaEstimator(sch, "cv")
    for n, e, e_hat in _rank_batches(0):
        est.update(e_hat, n, e)
    dist.init_process_group("gloo", init_method="file://" + str(tmp_path / "store"), rank=0, world_size=2)
    try:
        merged = est.result()
        local = est.result(sync=False)
    finally:
        dist.destroy_process_group()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    ref = GammaEstimator(sch, "cv")
    for rank in range(2):
        for n, e, e_hat in _rank_batches(rank):
            ref.update(e_hat, n, e)
    want = ref.result()
    assert torch.equal(merged.count, want.count) and int(local.count.sum()) == 100
    torch.testing.assert_close(merged.one_minus_gamma, want.one_minus_gamma, rtol=1e-12, atol=1e-15, equal_nan=True)
    other = torch.load(tmp_path / "out1.pt")
    assert torch.equal(other.nan_to_num(), merged.one_minus_gamma.nan_to_num())      # identical on both ranks
