# The diffusers scheduler tigercore.dpm.diffusers.AnalyticDPMScheduler (docs/semantics-dpm.md §13)
# with a tiny random UNet2DModel built from a config (no downloads): its variances equal
# reverse_variance and an independent float64 formula, its chains equal AnalyticSampler's with the
# same noise bit for bit (DDPM and DDIM forms), DDPMPipeline / DDIMPipeline run it and give the same
# images, the UNet receives t = n − 1, save_pretrained / from_pretrained round-trip the Γ table,
# and estimate_gamma equals GammaEstimator wired by hand.
import math

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")      # in the `test` and `diffusers` extras
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from tigercore.dpm import (AnalyticSampler, GammaEstimator, GammaTable, optimal_trajectory,  # noqa: E402
                           quad_ddim_trajectory, reverse_variance)
from tigercore.dpm.diffusers import GAMMA_FILE, AnalyticDPMScheduler, estimate_gamma  # noqa: E402

N = 20
SHAPE = (2, 1, 8, 8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A tiny UNet is 200x slower with 2 OpenMP threads on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    m = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                    norm_num_groups=4)
    return m.eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(3)
    return (torch.rand(6, 1, 8, 8, generator=g) * 2 - 1).round(decimals=2)


@pytest.fixture(scope="module")
def table(unet, data):
    sched = AnalyticDPMScheduler.from_config(DDPMScheduler(num_train_timesteps=N).config)
    return estimate_gamma(unet, sched, data, batch_size=4, progress=False, generator=torch.Generator().manual_seed(5))


def eps_model(unet):
    """The test's own wiring of diffusers' convention: the UNet gets t = n − 1."""
    return lambda x, n: unet(x, n - 1).sample


def make(table=None, **cfg):
    s = AnalyticDPMScheduler.from_config(DDPMScheduler(num_train_timesteps=N).config, **cfg)
    return s.set_gamma(table) if table is not None else s


def run_chain(sched, unet, x_T, seed, eta=None):
    g = torch.Generator().manual_seed(seed)
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            kw = {} if eta is None else {"eta": eta}
            x = sched.step(unet(x, t).sample, t, x, generator=g, **kw).prev_sample
    return x


def test_from_config_keeps_the_forward_process():
    ddpm = DDPMScheduler(num_train_timesteps=N, beta_schedule="squaredcos_cap_v2")
    s = AnalyticDPMScheduler.from_config(ddpm.config)
    assert s.config.num_train_timesteps == N and len(s) == N
    # diffusers' float32 ᾱ against ours in float64
    torch.testing.assert_close(s.alphas_cumprod, ddpm.alphas_cumprod, rtol=1e-4, atol=0)   # fp32 cumprod tail
    lin = AnalyticDPMScheduler.from_config(DDPMScheduler(num_train_timesteps=N).config)
    torch.testing.assert_close(lin.alphas_cumprod, DDPMScheduler(num_train_timesteps=N).alphas_cumprod,
                               rtol=2e-6, atol=0)


def test_variances_equal_reverse_variance_and_closed_form(table):
    s = make(table)
    s.set_timesteps(5)
    steps = torch.tensor([1, 6, 10, 15, 20])                       # even spacing of 1..20, K = 5
    assert s.timesteps.tolist() == (steps - 1).flip(0).tolist()
    sv, tv = steps[:-1], steps[1:]
    assert torch.equal(s.step_variances, reverse_variance(s.schedule, table, sv, tv))
    # independent float64 formula: β̃ + ᾱ_s β_{t|s}²/β̄_t² · clamp(β̄_t/ᾱ_t · δ_t, 0, 1)
    b = np.linspace(1e-4, 0.02, N)
    ab = np.concatenate([[1.0], np.cumprod(1 - b)])
    d = table.one_minus_gamma.numpy()
    for k, (si, ti) in enumerate(zip(sv.tolist(), tv.tolist())):
        bst = 1 - ab[ti] / ab[si]
        tilde = bst * (1 - ab[si]) / (1 - ab[ti])
        cov = min(max((1 - ab[ti]) / ab[ti] * d[ti], 0.0), 1.0)
        want = tilde + ab[si] * bst ** 2 / (1 - ab[ti]) ** 2 * cov
        assert float(s.step_variances[k]) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("variance", ["analytic", "beta", "beta_tilde"])
def test_ddpm_chain_equals_analytic_sampler(unet, table, variance):
    s = make(table, variance=variance, clip_pixel=2)
    s.set_timesteps(6)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))
    got = run_chain(s, unet, x_T, seed=11)
    smp = AnalyticSampler(s.schedule, eps_model(unet), one_minus_gamma=table, trajectory=s._steps,
                          variance=variance, clip_pixel=2)
    with torch.no_grad():
        want = smp.sample(x_T=x_T, generator=torch.Generator().manual_seed(11))
    assert torch.equal(got, want)


def test_ddim_chain_equals_analytic_sampler(unet, table):
    s = make(table)
    s.set_timesteps(5, trajectory="quad")
    assert s.trajectory_timesteps.tolist() == quad_ddim_trajectory(N, 5).timesteps.tolist()
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    got = run_chain(s, unet, x_T, seed=12, eta=0.0)              # as DDIMPipeline calls step
    smp = AnalyticSampler(s.schedule, eps_model(unet), one_minus_gamma=table, trajectory=s._steps,
                          kind="ddim", eta=0.0)
    with torch.no_grad():
        want = smp.sample(x_T=x_T, generator=torch.Generator().manual_seed(12))
    assert torch.equal(got, want)
    # the config route (kind="ddim", eta=0.5) equals the sampler with η = 0.5
    s2 = make(table, kind="ddim", eta=0.5)
    s2.set_timesteps(5)
    got2 = run_chain(s2, unet, x_T, seed=13)
    smp2 = AnalyticSampler(s2.schedule, eps_model(unet), one_minus_gamma=table, trajectory=s2._steps,
                           kind="ddim", eta=0.5)
    with torch.no_grad():
        assert torch.equal(got2, smp2.sample(x_T=x_T, generator=torch.Generator().manual_seed(13)))


def test_optimal_trajectory_and_custom_timesteps(table):
    s = make(table)
    s.set_timesteps(4, trajectory="optimal")
    assert s._steps.tolist() == optimal_trajectory(s.schedule, table, 4).timesteps.tolist()
    s.set_timesteps(timesteps=[19, 9, 3, 0])
    assert s._steps.tolist() == [1, 4, 10, 20] and s.num_inference_steps == 4
    with pytest.raises(ValueError, match="descending"):
        s.set_timesteps(timesteps=[0, 3, 19])
    with pytest.raises(ValueError, match="not one of the timesteps"):
        s.step(torch.zeros(SHAPE), 5, torch.zeros(SHAPE))


def test_pipelines_run_and_match_the_sampler(unet, table):
    seen = []
    s = make(table)
    pipe = DDPMPipeline(unet=unet, scheduler=s)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(21), output_type="pt")
    img = out.images
    assert img.shape == SHAPE and bool(torch.isfinite(img).all())
    g = torch.Generator().manual_seed(21)
    x_T = torch.randn(SHAPE, generator=g)
    smp = AnalyticSampler(s.schedule, eps_model(unet), one_minus_gamma=table, trajectory=s._steps)
    with torch.no_grad():
        want = (smp.sample(x_T=x_T, generator=g) / 2 + 0.5).clamp(0, 1)
    assert torch.equal(img, want)
    # DDIMPipeline converts a foreign scheduler to DDIMScheduler in __init__: swap it in afterwards
    ddim = DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=N))
    ddim.set_progress_bar_config(disable=True)
    ddim.scheduler = make(table)
    assert isinstance(ddim.scheduler, AnalyticDPMScheduler)
    hook = unet.register_forward_pre_hook(lambda m, args: seen.append(int(args[1])))   # the UNet's t
    try:
        img2 = ddim(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(22),
                    output_type="pt").images
    finally:
        hook.remove()
    assert seen == [19, 14, 9, 5, 0]                  # t = n − 1 for the even trajectory 1, 6, 10, 15, 20
    g = torch.Generator().manual_seed(22)
    x_T = torch.randn(SHAPE, generator=g)
    smp = AnalyticSampler(s.schedule, eps_model(unet), one_minus_gamma=table, trajectory=s._steps,
                          kind="ddim", eta=0.0)
    with torch.no_grad():
        assert torch.equal(img2, (smp.sample(x_T=x_T, generator=g) / 2 + 0.5).clamp(0, 1))


def test_save_pretrained_round_trip(tmp_path, table):
    s = make(table, trajectory="optimal", clip_pixel=1, variance="analytic")
    s.save_pretrained(tmp_path)
    assert (tmp_path / GAMMA_FILE).exists()
    r = AnalyticDPMScheduler.from_pretrained(tmp_path)
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}   # noqa: E731
    assert public(r.config) == public(s.config)
    assert torch.equal(r.gamma_table.one_minus_gamma, table.one_minus_gamma)
    assert torch.equal(r.gamma_table.raw(), table.raw())
    s.set_timesteps(5)
    r.set_timesteps(5)
    assert torch.equal(r.timesteps, s.timesteps) and torch.equal(r.step_variances, s.step_variances)


def test_set_gamma_sources(tmp_path, table):
    s = make()
    table.save(tmp_path / "t.pt")
    assert torch.equal(s.set_gamma(str(tmp_path / "t.pt")).gamma_table.one_minus_gamma, table.one_minus_gamma)
    table.to_ms_eps(tmp_path / "x.ms_eps.pth")               # the official format
    got = s.set_gamma(tmp_path / "x.ms_eps.pth").gamma_table
    want = GammaTable.from_ms_eps(table.to_ms_eps())
    assert torch.equal(got.one_minus_gamma, want.one_minus_gamma)
    with pytest.raises(ValueError, match="N ="):
        s.set_gamma(GammaTable.from_one_minus_gamma(torch.zeros(N + 2, dtype=torch.float64)))
    with pytest.raises(ValueError, match="set_gamma"):
        make().set_timesteps(5)                              # analytic without a table


def test_estimate_gamma_equals_hand_wired_estimator(unet, data, table):
    want = GammaEstimator(make().schedule, "cv").estimate(eps_model(unet), [data[:4], data[4:]],
                                                          generator=torch.Generator().manual_seed(5),
                                                          progress=False)
    for got in (table, estimate_gamma(unet, make(), torch.utils.data.TensorDataset(data), batch_size=4,
                                      progress=False, generator=torch.Generator().manual_seed(5))):
        assert torch.equal(got.one_minus_gamma, want.one_minus_gamma) and torch.equal(got.count, want.count)
    loader = [{"pixel_values": data[:4]}, {"pixel_values": data[4:]}]
    got = estimate_gamma(unet, make(), loader, progress=False, generator=torch.Generator().manual_seed(5))
    assert torch.equal(got.raw(), want.raw())


def test_v_prediction_is_converted(unet, table):
    """A v-predicting wrapper of the ε-UNet (v = √ᾱ ε − √β̄ x_0) gives the ε-chain up to rounding."""
    s_eps = make(table)
    s_v = make(table, prediction_type="v_prediction")

    def v_unet(x, t):
        n = int(t) + 1
        a, b = math.sqrt(float(s_v.schedule.alpha_bar[n])), math.sqrt(float(s_v.schedule.beta_bar[n]))
        eps = unet(x, t).sample
        x0 = (x - b * eps) / a
        return type("Out", (), {"sample": a * eps - b * x0})()

    for sch in (s_eps, s_v):
        sch.set_timesteps(4)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(run_chain(s_v, v_unet, x_T, 3), run_chain(s_eps, unet, x_T, 3), rtol=1e-4, atol=1e-4)
