"""Tiger's carried sums of squares ([note: Tiger without an extra pass], csrc/cpu/optim_ops.cpp):
identical results with and without the cache, any write to the parameter invalidates it, a valid
cache is really used, and the ops bump version counters of what they modify."""
import pytest
import torch

from tigercore.optim import Tiger

from _helpers import tiger
from conftest import requires_native


def _cache(rows):
    return torch.full((rows + 2,), -1.0, dtype=torch.float64)


@pytest.mark.parametrize("cls,precision,dtype", [("K", "none", torch.float32), ("E", "none", torch.float32),
                                                 ("K", "master", torch.bfloat16), ("E", "kahan", torch.bfloat16)])
def test_cached_equals_fresh(cls, precision, dtype):
    requires_native("tiger_step_")
    torch.manual_seed(0)
    shape = (300, 70)
    rows = 1 if cls == "K" else shape[0]
    w0 = torch.randn(shape).to(dtype)
    runs = []
    for use_cache in (False, True):
        p, m = [w0.clone()], [torch.zeros(shape)]
        aux = [w0.float()] if precision == "master" else ([torch.zeros(shape).to(dtype)] if precision == "kahan" else [])
        cache = [_cache(rows)] if use_cache else []
        steps = None
        gen = torch.Generator().manual_seed(1)
        for _ in range(6):
            g = torch.randn(shape, generator=gen).to(dtype)
            steps = tiger("native", p, [g], m, lr=1e-2, cls=cls, k=2, aux=aux, precision=precision,
                          rms_cache=cache, steps=steps)
        runs.append((p[0], m[0]))
        if use_cache:
            assert cache[0][-2].item() == float((aux[0] if precision == "master" else p[0])._version)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_a_valid_cache_is_used_and_a_write_invalidates_it():
    requires_native("tiger_step_")
    torch.manual_seed(2)
    w0, g = torch.randn(64, 32), torch.randn(64, 32)
    p, m, cache = [w0.clone()], [torch.zeros(64, 32)], [_cache(1)]
    tiger("native", p, [g.clone()], m, lr=1e-2, rms_cache=cache)
    assert cache[0][-2] == p[0]._version
    torch.testing.assert_close(cache[0][0], p[0].double().square().sum(), rtol=1e-15, atol=0)

    # A tampered but "valid" cache is trusted (the carried sum is really used) ...
    base = p[0].clone()
    tampered = [cache[0].clone()]
    tampered[0][0] *= 4.0  # RMS doubles
    p_t, m_t = [base.clone()], [m[0].clone()]
    tampered[0][-2] = float(p_t[0]._version)
    tampered[0][-1] = float(p_t[0].data_ptr())
    tiger("native", p_t, [g.clone()], m_t, lr=1e-2, rms_cache=tampered)
    p_f, m_f = [base.clone()], [m[0].clone()]
    tiger("native", p_f, [g.clone()], m_f, lr=1e-2, rms_cache=[])
    step_t, step_f = (p_t[0] - base).abs().max(), (p_f[0] - base).abs().max()
    assert step_t == pytest.approx(2 * step_f.item(), rel=1e-4)  # fp32 rounding of p - base

    # ... and any in-place write to the parameter makes it stale, so it is recomputed.
    p2, m2 = [base.clone()], [m[0].clone()]
    stale = [tampered[0].clone()]
    stale[0][-2] = float(p2[0]._version)
    stale[0][-1] = float(p2[0].data_ptr())
    p2[0].mul_(1.0)  # a write (even a no-op one) bumps the version
    tiger("native", p2, [g.clone()], m2, lr=1e-2, rms_cache=stale)
    assert torch.equal(p2[0], p_f[0])


def test_optimizer_notices_parameter_writes():
    """Through the optimizer: a write between steps (e.g. loading weights) is not missed."""
    requires_native("tiger_step_")
    torch.manual_seed(3)
    grads = [torch.randn(40, 30) for _ in range(3)]
    results = []
    for cached in (True, False):
        p = torch.nn.Parameter(torch.randn(40, 30, generator=torch.Generator().manual_seed(4)))
        opt = Tiger([p], lr=1e-2)
        p.grad = grads[0].clone()
        opt.step()
        if not cached:
            opt.invalidate_rms_cache()
        with torch.no_grad():
            p.mul_(3.0)  # e.g. a user rescaling the weights
        for g in grads[1:]:
            p.grad = g.clone()
            opt.step()
        results.append(p.detach().clone())
    assert torch.equal(results[0], results[1])
    assert "rms_cache" not in next(iter(opt.state_dict()["state"].values()))


def test_ops_bump_version_counters():
    requires_native("lion_step_")
    p, g, m = [torch.randn(10)], [torch.randn(10)], [torch.zeros(10)]
    v = (p[0]._version, m[0]._version)
    tiger("native", p, g, m, lr=1e-3)
    assert p[0]._version > v[0] and m[0]._version > v[1]
    p2 = [torch.randn(10)]
    v2 = p2[0]._version
    tiger("native", p2, [torch.randn(10)], [torch.zeros(10)], lr=1e-3, k=2)  # no update on micro-step 0
    assert p2[0]._version == v2
