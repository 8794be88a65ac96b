# Bad input to the Analytic-DPM estimator and ops (issue 11 item 7; docs/semantics-dpm.md §3, §9):
# GammaEstimator.update refuses non-finite eps_pred / eps and leaves its state untouched (compared
# with an estimator that never saw the bad batch), and a num_steps / K so large that an output's
# size would overflow int64 is refused with a ValueError before any size is computed, by the
# reference, the fake (meta) kernel, the CPU entry and the CUDA entry (the last skipped without a GPU).
import math

import pytest
import torch

from tigercore.dpm import GammaEstimator, NoiseSchedule
from tigercore.reference import dpm as ref

from conftest import requires_native

OPS = torch.ops.tigercore
HUGE = [2 ** 62, 2 ** 63 - 1]


def _batch(seed, b=6, d=10, n_max=20):
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(b, d, generator=g)
    eps_pred = 0.9 * eps + 0.3 * torch.randn(b, d, generator=g)
    ts = torch.randint(1, n_max + 1, (b,), generator=g)
    return eps_pred, ts, eps


def _state(est):
    return tuple(x.clone() for x in est.state_dict().values() if isinstance(x, torch.Tensor))


def _same_bits(a, b):
    """Bitwise equality of float64 tensors (the state holds NaN in the unrecorded w column)."""
    return a.shape == b.shape and torch.equal(a.view(torch.int64), b.view(torch.int64))


@pytest.mark.parametrize("where", ["eps_pred", "eps"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e30])
def test_update_refuses_nonfinite_and_keeps_state(where, bad):
    sch = NoiseSchedule.linear(20)
    est, clean = GammaEstimator(sch), GammaEstimator(sch)
    first = _batch(0)
    est.update(*first)
    clean.update(*first)
    before = _state(est)
    eps_pred, ts, eps = _batch(1)
    poisoned = {"eps_pred": eps_pred.clone(), "eps": eps.clone()}
    poisoned[where][2, 3] = bad
    msg = "overflow" if math.isfinite(bad) else f"{where} contains NaN or ±inf"
    with pytest.raises(ValueError, match=msg):
        est.update(poisoned["eps_pred"], ts, poisoned["eps"])
    after = _state(est)
    assert all(_same_bits(a, b) for a, b in zip(before, after))
    # a later valid update: the same table as an estimator that never saw the bad batch
    later = _batch(2)
    est.update(*later)
    clean.update(*later)
    for e in ("cv", "npr", "naive"):
        r1, r2 = est.result(e), clean.result(e)
        assert _same_bits(r1.one_minus_gamma, r2.one_minus_gamma) and _same_bits(r1.stderr, r2.stderr)
        assert torch.equal(r1.count, r2.count)


def test_update_naive_without_eps_checks_eps_pred_only():
    est = GammaEstimator(NoiseSchedule.linear(20), estimator="naive")
    eps_pred, ts, _ = _batch(0)
    est.update(eps_pred, ts)                         # no eps: only y is recorded and checked
    eps_pred[0, 0] = math.nan
    with pytest.raises(ValueError, match="eps_pred contains NaN"):
        est.update(eps_pred, ts)
    assert int(est.result().count.sum()) == 6


# ----------------------------------------------------------------------------- size overflow
def _segment_args(device="cpu"):
    return torch.randn(3, 5, device=device), torch.tensor([1, 2, 2], device=device)


def _expect_too_large(fn, name):
    with pytest.raises(ValueError, match=f"{name} = \\d+ is too large"):
        fn()


@pytest.mark.parametrize("n", HUGE)
def test_reference_refuses_huge_sizes(n):
    stats, ts = _segment_args()
    _expect_too_large(lambda: ref.segment_moments(stats, ts, n), "num_steps")
    F = torch.zeros(4, 4, dtype=torch.float64)
    _expect_too_large(lambda: ref.minplus_dp(F, n), "K")


@pytest.mark.parametrize("n", HUGE)
def test_fake_kernels_refuse_huge_sizes(n):
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        stats, ts = torch.empty(3, 5), torch.ones(3, dtype=torch.long)
        _expect_too_large(lambda: OPS.segment_moments(stats, ts, n), "num_steps")
        F = torch.empty(4, 4, dtype=torch.float64)
        _expect_too_large(lambda: OPS.minplus_dp(F, n), "K")


def test_reference_accepts_the_largest_representable_sizes_formula():
    """The rule is exactly 8·Π max(dim, 1) <= 2^63 − 1: a boundary value passes the check (and
    then fails only for lack of memory, which we do not provoke) while one more is refused."""
    k = 5
    limit = ((1 << 63) - 1) // (8 * k * k)          # largest N + 1 that fits
    ref.check_output_bytes("segment_moments", "num_steps", limit - 1, (limit, k, k))
    with pytest.raises(ValueError, match="too large"):
        ref.check_output_bytes("segment_moments", "num_steps", limit, (limit + 1, k, k))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("n", HUGE)
def test_native_entries_refuse_huge_sizes(device, n):
    for op in ("segment_moments", "minplus_dp"):
        requires_native(op, device)
    stats, ts = _segment_args(device)
    _expect_too_large(lambda: OPS.segment_moments(stats, ts, n), "num_steps")
    F = torch.zeros(4, 4, dtype=torch.float64, device=device)
    _expect_too_large(lambda: OPS.minplus_dp(F, n), "K")
    # stats with k = 0 columns: the count output [N + 1] alone decides
    _expect_too_large(lambda: OPS.segment_moments(torch.empty(0, 0, device=device),
                                                  torch.empty(0, dtype=torch.long, device=device), n), "num_steps")


def test_native_and_reference_agree_at_ordinary_sizes():
    """The checks reject nothing legitimate: a small call still equals the reference."""
    requires_native("segment_moments", "cpu")
    stats, ts = _segment_args()
    got, want = OPS.segment_moments(stats, ts, 4), ref.segment_moments(stats, ts, 4)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
