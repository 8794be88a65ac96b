"""Tiger's carried sums of squares ([note: carried sums], csrc/cpu/optim_ops.cpp): identical results
with and without them, the carried value equals a float64 sum of the new working copy, a known
value is really used, an unknown one (negative) is recomputed, and the ops bump the version
counters of what they modify."""
import pytest
import torch

from _helpers import tiger
from conftest import requires_native


def _unknown(rows):
    return torch.full((rows,), -1.0, dtype=torch.float64)


@pytest.mark.parametrize("backend_name", ["reference", "native"])
@pytest.mark.parametrize("cls,precision,dtype", [("K", "none", torch.float32), ("E", "none", torch.float32),
                                                 ("K", "master", torch.bfloat16), ("E", "kahan", torch.bfloat16)])
def test_carried_equals_fresh(backend_name, cls, precision, dtype):
    if backend_name == "native":
        requires_native("tiger_step_")
    torch.manual_seed(0)
    shape = (300, 70)
    rows = 1 if cls == "K" else shape[0]
    w0 = torch.randn(shape).to(dtype)
    runs = []
    for carried in (False, True):
        p, m = [w0.clone()], [torch.zeros(shape)]
        aux = [w0.float()] if precision == "master" else ([torch.zeros(shape).to(dtype)] if precision == "kahan" else [])
        sumsq = [_unknown(rows)] if carried else []
        steps = None
        gen = torch.Generator().manual_seed(1)
        for _ in range(6):
            g = torch.randn(shape, generator=gen).to(dtype)
            steps = tiger(backend_name, p, [g], m, lr=1e-2, cls=cls, k=2, aux=aux, precision=precision,
                          sumsq=sumsq, steps=steps)
        runs.append((p[0], m[0]))
        if carried:  # the carried value is the float64 sum of squares of the working copy now held
            working = (aux[0] if precision == "master" else p[0]).double()
            want = working.square().sum().reshape(1) if cls == "K" else working.square().sum(-1)
            torch.testing.assert_close(sumsq[0], want, rtol=1e-13, atol=0)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_a_known_sum_is_used_and_an_unknown_one_recomputed():
    requires_native("tiger_step_")
    torch.manual_seed(2)
    base, g = torch.randn(64, 32), torch.randn(64, 32)
    fresh = [base.clone()]
    tiger("native", fresh, [g.clone()], [torch.zeros(64, 32)], lr=1e-2)
    step_fresh = (fresh[0] - base).abs().max()

    # A carried sum four times the true one doubles the RMS and so the step: it is really used.
    tampered = [base.clone()]
    quadrupled = [4.0 * base.double().square().sum().reshape(1)]
    tiger("native", tampered, [g.clone()], [torch.zeros(64, 32)], lr=1e-2, sumsq=quadrupled)
    assert (tampered[0] - base).abs().max().item() == pytest.approx(2 * step_fresh.item(), rel=1e-4)

    # Unknown (negative) is recomputed: the same bits as without carried sums.
    unknown = [base.clone()]
    tiger("native", unknown, [g.clone()], [torch.zeros(64, 32)], lr=1e-2, sumsq=[_unknown(1)])
    assert torch.equal(unknown[0], fresh[0])


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
