# Native Analytic-DPM kernels (docs/semantics-dpm.md §9, §11.5): tigercore::eps_stats,
# segment_moments and minplus_dp against the pure-PyTorch reference (bitwise: same trees, same
# argmin) and against independent float64 oracles (tests/_dpm_oracles.py), on every dtype and
# awkward shapes, across thread counts, batch splits and CPU instruction sets; errors, opcheck,
# routing of tigercore.dpm through the ops, and CUDA parity (skipped without a GPU).
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import tigercore
from tigercore.dpm import GammaEstimator, NoiseSchedule, optimal_trajectory
from tigercore.reference import dpm as ref

from _dpm_oracles import assert_eps_stats_accurate, brute_force, fp32_tile_tree, naive_stats
from conftest import HAS_CUDA, requires_native
from tolerances import assert_bitwise_equal

OPS = torch.ops.tigercore
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# numel per sample: 1, short tiles on either side of the CPU kernels' vector minimum (128 fp32,
# 256 bf16 lanes on AVX-512), below / at / above one 1024-element tile, odd multi-dim, several tiles
SHAPES = [(1, 1), (3, 1), (1, 7), (2, 127), (2, 129), (3, 255), (2, 257), (2, 1023), (2, 1024), (3, 1025),
          (2, 3, 17, 19), (5, 3072), (2, 5000)]


def bits_equal(a, b):
    """Identical float64 bits (NaN columns included: both are the canonical NaN)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int64), b.view(torch.int64))


def inputs(shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(shape, generator=g)).to(dtype) for _ in range(4)]


def arg_sets(eh, e, x, xh):
    return {"y": (eh,), "eps": (eh, e), "eps+x0": (eh, e, x, xh), "x0": (eh, None, x, xh)}


@pytest.fixture(autouse=True, scope="module")
def _native_present():
    for op in ("eps_stats", "segment_moments", "minplus_dp"):
        requires_native(op, "cpu")


# ----------------------------------------------------------------------------- eps_stats
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_eps_stats_matches_reference_bitwise(shape, dtype):
    eh, e, x, xh = inputs(shape, dtype, seed=len(shape) + shape[-1])
    for name, args in arg_sets(eh, e, x, xh).items():
        got = OPS.eps_stats(*args)
        assert bits_equal(got, ref.eps_stats(*args)), name
    # and the float64 oracle, within the stated bound (fp32 tiles: 13·2^-24 of Σ|term|/d)
    assert_eps_stats_accurate(OPS.eps_stats(eh, e, x, xh), eh, e, x, xh)


@pytest.mark.parametrize("shape", [(3, 7), (2, 1000), (2, 3000), (1, 2, 64, 64)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_eps_stats_is_the_fp32_tile_tree(shape, dtype):
    """The semantics, from an independent numpy model: terms rounded in fp32 one operation at a
    time, 1024-tiles halved in fp32, tile partials halved in fp64, then / d."""
    eh, e, x, xh = inputs(shape, dtype, seed=shape[-1], scale=3.0)
    b, d = shape[0], eh[0].numel()
    f = lambda t: t.reshape(b, d).float().numpy()          # noqa: E731  (exact upcast)
    h, g, a, c = f(eh), f(e), f(x), f(xh)
    terms = [h * h, g * g, (g - h) * (g + h), (g - h) * (g - h), (a - c) * (a - c)]   # numpy fp32: one rounding each
    want = torch.tensor(np.stack([fp32_tile_tree(t) / d for t in terms], 1))
    assert bits_equal(OPS.eps_stats(eh, e, x, xh), want)
    assert bits_equal(ref.eps_stats(eh, e, x, xh), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d", [3072, 196_608])
def test_eps_stats_fp32_accuracy_against_fp64(dtype, d):
    """N(0,1) data: y and c within 1e-6 relative of plain fp64 sums (the bound gives 7.8e-7), every
    column within the stated bound."""
    eh, e, x, xh = inputs((3, d), dtype, seed=d)
    got = OPS.eps_stats(eh, e, x, xh)
    exact = naive_stats(eh, e, x, xh)
    torch.testing.assert_close(got[:, :2], exact[:, :2], rtol=1e-6, atol=0)
    assert_eps_stats_accurate(got, eh, e, x, xh)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_eps_stats_d196608_no_overflow(dtype):
    """256×256×3 per sample: Σε̂² ≈ 4.4e5 overflows an fp16 accumulator (§10), not these kernels."""
    eh, e, _, _ = inputs((2, 3, 256, 256), dtype, seed=4, scale=1.5)
    if dtype == torch.float16:
        assert torch.isinf(eh[0].pow(2).sum(dtype=torch.float16))
    got = OPS.eps_stats(eh, e)
    assert torch.isfinite(got[:, :4]).all()
    assert bits_equal(got, ref.eps_stats(eh, e))
    torch.testing.assert_close(got[:, :2], naive_stats(eh, e)[:, :2], rtol=1e-6, atol=0)
    assert_eps_stats_accurate(got, eh, e)
    assert abs(float(got[0, 0]) - 2.25) < 0.05


def test_eps_stats_fp16_large_values_stay_finite():
    """fp16 near its maximum (|x| up to 6e4, squares 3.6e9, tile sums ~1e12): no overflow in fp32."""
    g = torch.Generator().manual_seed(8)
    eh = (torch.rand(2, 196_608, generator=g) * 1.2e5 - 6e4).half()
    e = (torch.rand(2, 196_608, generator=g) * 1.2e5 - 6e4).half()
    assert torch.isfinite(eh).all() and torch.isinf(eh[0].pow(2).sum(dtype=torch.float16))
    got = OPS.eps_stats(eh, e)
    assert torch.isfinite(got[:, :4]).all() and float(got[0, 0]) > 1e9
    assert bits_equal(got, ref.eps_stats(eh, e))
    torch.testing.assert_close(got[:, :2], naive_stats(eh, e)[:, :2], rtol=1e-6, atol=0)
    assert_eps_stats_accurate(got, eh, e)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_eps_stats_every_16bit_pattern(dtype):
    """All 65,536 encodings (subnormals, ±0, ±Inf, NaN) decode as the reference decodes them."""
    eh = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype).reshape(64, 1024)
    assert_bitwise_equal(OPS.eps_stats(eh, eh.flip(1)), ref.eps_stats(eh, eh.flip(1)), str(dtype))


def test_eps_stats_mixed_dtypes_and_views():
    eh, e, x, xh = inputs((4, 700, 6), torch.float32, seed=9)
    args = (eh.bfloat16(), e, x.half(), xh.double())            # promoted exactly, as the reference upcasts
    assert bits_equal(OPS.eps_stats(*args), ref.eps_stats(*args))
    views = [t.transpose(1, 2) for t in (eh, e, x, xh)]          # non-contiguous [4, 6, 700]
    views[0] = torch.randn(4, 7, 700)[:, 1:]                    # a sliced view too
    assert bits_equal(OPS.eps_stats(*views), ref.eps_stats(*views))


def test_eps_stats_empty_batch():
    got = OPS.eps_stats(torch.randn(0, 3, 5))
    assert got.shape == (0, 5) and got.dtype == torch.float64


def _with_threads(n, fn):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(n)
        return fn()
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_eps_stats_bitwise_across_threads_and_batch_splits(dtype):
    eh, e, x, xh = inputs((37, 3, 40, 41), dtype, seed=5)     # 4920 = 4.8 tiles a row
    one = _with_threads(1, lambda: OPS.eps_stats(eh, e, x, xh))
    two = _with_threads(2, lambda: OPS.eps_stats(eh, e, x, xh))
    parts = torch.cat([OPS.eps_stats(eh[i:i + 5], e[i:i + 5], x[i:i + 5], xh[i:i + 5]) for i in range(0, 37, 5)])
    assert bits_equal(one, two) and bits_equal(one, parts)
    big = inputs((8, 196_608), dtype, seed=6)[:2]                # 192 tiles a row, many work chunks
    one = _with_threads(1, lambda: OPS.eps_stats(*big))
    two = _with_threads(2, lambda: OPS.eps_stats(*big))
    assert bits_equal(one, two) and bits_equal(one[3:], OPS.eps_stats(big[0][3:], big[1][3:]))


def test_eps_stats_cancellation_within_fp64_rounding():
    """Mean 1e4, std 1e-2 (style §7): u = Σ(ε−ε̂)(ε+ε̂)/d cancels; the error stays at fp64 rounding."""
    g = torch.Generator().manual_seed(3)
    e = 1e4 + 1e-2 * torch.randn(2, 1 << 20, generator=g, dtype=torch.float64)
    eh = e + 1e-2 * torch.randn(2, 1 << 20, generator=g, dtype=torch.float64)
    got = OPS.eps_stats(eh, e)
    exact = naive_stats(eh, e)                     # fp64 sequential sums of the same products
    rel = ((got[:, :4] - exact[:, :4]).abs() / exact[:, :4].abs()).max()
    assert float(rel) < 1e-9
    assert bits_equal(got, ref.eps_stats(eh, e))


# ----------------------------------------------------------------------------- segment_moments
def _stats(b, k=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, k, generator=g, dtype=torch.float64) * torch.tensor([1, 2, 1e-3, 5, 1.0])[:k] + 3).to(dtype)


@pytest.mark.parametrize("case", ["mixed", "long", "two_levels", "singletons", "nan_column", "negative_zero", "fp32",
                                  "one", "empty"])
def test_segment_moments_matches_reference_bitwise(case):
    g = torch.Generator().manual_seed(11)
    n_steps, b = 12, 700
    stats = _stats(b)
    ts = torch.randint(1, n_steps, (b,), generator=g)
    if case == "long":
        ts[:300] = 4                                        # one timestep with > 64 samples
    elif case == "two_levels":
        b, n_steps = 5000, 3
        stats, ts = _stats(b, seed=2), torch.randint(1, 4, (b,), generator=g)
        ts[:4500] = 2                                       # > 64² samples: a third tree level
    elif case == "singletons":
        ts = torch.randperm(b, generator=g)[:b] % 1000 + 1  # every count <= 1: no tree at all
        n_steps = 1000
    elif case == "nan_column":
        stats[:, 4] = math.nan
    elif case == "negative_zero":                           # the trees' +0.0 padding turns -0 into +0
        stats[:, 2] = -0.0
        ts[:5] = torch.arange(1, 6)
        ts[5:] = 7
    elif case == "fp32":
        stats = stats.float()
    elif case == "one":
        stats, ts = stats[:1], ts[:1]
    elif case == "empty":
        stats, ts = stats[:0], ts[:0]
    got, want = OPS.segment_moments(stats, ts, n_steps), ref.segment_moments(stats, ts, n_steps)
    for a, w in zip(got, want):
        assert bits_equal(a, w), case


def test_segment_moments_oracle_and_threads():
    stats = _stats(900, seed=4)
    ts = torch.randint(1, 9, (900,), generator=torch.Generator().manual_seed(4))
    count, mean, com = OPS.segment_moments(stats, ts, 8)
    for n in range(1, 9):                                   # two-pass float64 oracle
        x = stats[ts == n]
        assert count[n] == len(x)
        m = x.sum(0) / len(x)
        torch.testing.assert_close(mean[n], m, rtol=1e-13, atol=0)
        torch.testing.assert_close(com[n], (x - m).T @ (x - m), rtol=1e-11, atol=1e-12)
    one = _with_threads(1, lambda: OPS.segment_moments(stats, ts, 8))
    assert all(bits_equal(a, b) for a, b in zip(one, (count, mean, com)))


# ----------------------------------------------------------------------------- minplus_dp
def _costs(N, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        return torch.randint(0, 3, (N + 1, N + 1), generator=g).to(torch.float64)
    F = torch.rand(N + 1, N + 1, generator=g, dtype=torch.float64)
    if kind == "inf":
        F[torch.rand(N + 1, N + 1, generator=g) < 0.3] = math.inf      # forbidden steps
    if kind == "neg_inf" and N >= 9:
        F[3, 9] = -math.inf                                            # takes the exact (NaN-checking) path
    return F


@pytest.mark.filterwarnings("ignore:invalid value encountered in add:RuntimeWarning")  # numpy, inf - inf
@pytest.mark.parametrize("N,K,start", [(1, 1, 1), (9, 3, 0), (30, 5, 1), (70, 70, 1), (70, 80, 0), (200, 12, 1),
                                       (257, 40, 3), (300, 299, 1)])
@pytest.mark.parametrize("kind", ["rand", "ties", "inf", "neg_inf"])
def test_minplus_dp_matches_reference_bitwise(N, K, start, kind):
    F = _costs(N, kind, seed=N + K)

    def outcome(fn):
        try:
            return fn()
        except ValueError as e:          # a NaN candidate (+inf + -inf): both must refuse
            return "NaN" in str(e)
    got, want = outcome(lambda: OPS.minplus_dp(F, K, start)), outcome(lambda: ref.minplus_dp(F, K, start=start))
    if want is True:
        assert got is True
        return
    (C, D), (Cr, Dr) = got, want
    assert bits_equal(C, Cr) and torch.equal(D, Dr)
    if kind == "rand" and N <= 30 and K >= 3:
        assert (float(C[K, N]), ref.minplus_path(D, K, N).tolist()) == brute_force(F, N, K, start)


def test_minplus_dp_matches_brute_force_with_ties():
    for trial in range(4):
        F = _costs(16, "ties", seed=trial)
        C, D = OPS.minplus_dp(F, 5, 1)
        cost, path = brute_force(F, 16, 5)
        assert float(C[5, 16]) == cost and ref.minplus_path(D, 5, 16).tolist() == path


@pytest.mark.filterwarnings("ignore:invalid value encountered in add:RuntimeWarning")
def test_minplus_dp_float32_cost_and_nan():
    F = _costs(40, "rand").float()
    assert bits_equal(OPS.minplus_dp(F, 6, 1)[0], ref.minplus_dp(F, 6, start=1)[0])
    F = _costs(20, "rand")
    F[1, 2], F[2, 5] = -math.inf, math.inf                 # C[2, 2] = -inf meets F[2, 5] = +inf: a NaN candidate
    with pytest.raises(ValueError, match="NaN"):
        ref.minplus_dp(F, 5, start=1)
    with pytest.raises(ValueError, match="NaN"):
        OPS.minplus_dp(F, 5, 1)


def test_minplus_dp_n1000_k100_and_threads():
    sch = NoiseSchedule.cosine(1000)
    F = ref.delta_cost_matrix(sch.log_alpha_bar, sch.alpha_bar * 0.25 / (sch.alpha_bar * 0.25 + sch.beta_bar))
    C, D = _with_threads(2, lambda: OPS.minplus_dp(F, 100, 1))
    C1, D1 = _with_threads(1, lambda: OPS.minplus_dp(F, 100, 1))
    Cr, Dr = ref.minplus_dp(F, 100, start=1)
    assert bits_equal(C, Cr) and torch.equal(D, Dr) and bits_equal(C, C1) and torch.equal(D, D1)


@pytest.mark.slow
def test_minplus_dp_n4000_k1000_matches_reference():
    """The ImageNet64 size (6.2e9 candidates): native ≈ 1 s, the reference ≈ 10 s on 2 cores."""
    sch = NoiseSchedule.cosine(4000)
    F = ref.delta_cost_matrix(sch.log_alpha_bar, sch.alpha_bar * 0.25 / (sch.alpha_bar * 0.25 + sch.beta_bar))
    C, D = OPS.minplus_dp(F, 1000, 1)
    Cr, Dr = ref.minplus_dp(F, 1000, start=1)
    assert bits_equal(C, Cr) and torch.equal(D, Dr)


# ----------------------------------------------------------------------------- errors
_x = torch.randn(3, 4)
BAD_CALLS = {
    "eps_stats int": (lambda f: f(torch.ones(3, 4, dtype=torch.long)), TypeError),
    "eps_stats eps int": (lambda f: f(_x, torch.ones(3, 4, dtype=torch.int32)), TypeError),
    "eps_stats shape": (lambda f: f(_x, torch.randn(3, 5)), ValueError),
    "eps_stats 1-D": (lambda f: f(torch.randn(4)), ValueError),
    "eps_stats x0 alone": (lambda f: f(_x, _x, _x), ValueError),
    "eps_stats d=0": (lambda f: f(torch.randn(3, 0)), ValueError),
}
SEG_CALLS = {
    "range low": (lambda f: f(_stats(4), torch.tensor([0, 1, 2, 3]), 10), ValueError),
    "range high": (lambda f: f(_stats(4), torch.tensor([1, 2, 3, 11]), 10), ValueError),
    "float timesteps": (lambda f: f(_stats(4), torch.tensor([1.0, 2.0, 3.0, 4.0]), 10), TypeError),
    "short timesteps": (lambda f: f(_stats(4), torch.tensor([1, 2, 3]), 10), ValueError),
    "int stats": (lambda f: f(_stats(4).long(), torch.tensor([1, 2, 3, 4]), 10), TypeError),
    "1-D stats": (lambda f: f(_stats(4)[:, 0], torch.tensor([1, 2, 3, 4]), 10), ValueError),
}
DP_CALLS = {
    "not square": (lambda f: f(torch.zeros(4, 5), 2, 1), ValueError),
    "int F": (lambda f: f(torch.zeros(5, 5, dtype=torch.long), 2, 1), TypeError),
    "NaN F": (lambda f: f(torch.full((5, 5), math.nan), 2, 1), ValueError),
    "start": (lambda f: f(torch.zeros(5, 5), 2, 5), ValueError),
    "K": (lambda f: f(torch.zeros(5, 5), 0, 1), ValueError),
}


@pytest.mark.parametrize("name", list(BAD_CALLS) + list(SEG_CALLS) + list(DP_CALLS))
def test_native_and_reference_raise_alike(name):
    """The same exception type whether the native kernel or the reference serves the call."""
    table = {**BAD_CALLS, **SEG_CALLS, **DP_CALLS}
    call, exc = table[name]
    native = OPS.eps_stats if name in BAD_CALLS else OPS.segment_moments if name in SEG_CALLS else OPS.minplus_dp
    reference = (ref.eps_stats if name in BAD_CALLS else ref.segment_moments if name in SEG_CALLS
                 else (lambda F, K, start: ref.minplus_dp(F, K, start=start)))
    for fn in (native, reference):
        with pytest.raises(exc):
            call(fn)


# ----------------------------------------------------------------------------- opcheck, routing
def _opcheck_cases(device):
    eh, e, x, xh = (t.to(device) for t in inputs((3, 2, 5, 7), torch.bfloat16, seed=1))
    stats = _stats(20).to(device)
    ts = torch.randint(1, 6, (20,), generator=torch.Generator().manual_seed(0)).to(device)
    F = _costs(12, "rand").to(device)
    # eps_stats(eh) has NaN columns (c, u, z, w), which the AOT test's assert_close calls unequal:
    # that case runs the other three tests; the all-columns case runs all four.
    no_aot = ("test_schema", "test_autograd_registration", "test_faketensor")
    return [(OPS.eps_stats.default, (eh,), {}, no_aot), (OPS.eps_stats.default, (eh, e, x, xh), {}, None),
            (OPS.segment_moments.default, (stats, ts, 6), {}, None), (OPS.minplus_dp.default, (F, 4, 1), {}, None),
            (OPS.minplus_dp.default, (F, 4), {"start": 0}, None)]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_opcheck(device):
    for op in ("eps_stats", "segment_moments", "minplus_dp"):
        requires_native(op, device)
    for op, args, kwargs, tests in _opcheck_cases(device):
        torch.library.opcheck(op, args, kwargs, **({"test_utils": tests} if tests else {}))


def test_dpm_routes_through_the_ops():
    """GammaEstimator.update and optimal_trajectory call the tigercore:: ops (native when built)."""
    sch = NoiseSchedule.linear(50, 2e-3, 0.4)
    est = GammaEstimator(sch)
    eh, e, _, _ = inputs((8, 30), torch.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        est.update(eh, torch.arange(1, 9), e)
        optimal_trajectory(sch, sch.alpha_bar / (sch.alpha_bar + sch.beta_bar), 6)
    names = {ev.key for ev in prof.key_averages()}
    assert {"tigercore::eps_stats", "tigercore::segment_moments", "tigercore::minplus_dp"} <= names


_ISA_SCRIPT = r"""
import json, math, sys, torch
sys.path.insert(0, sys.argv[1])
import tigercore
from tigercore.reference import dpm as ref
from test_dpm_native import bits_equal, inputs, arg_sets, _costs, _stats
ops, bad = torch.ops.tigercore, []
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for shape in ((1, 7), (2, 127), (2, 255), (2, 1000), (3, 2048), (2, 5000)):
        for name, args in arg_sets(*inputs(shape, dtype, seed=shape[-1])).items():
            if not bits_equal(ops.eps_stats(*args), ref.eps_stats(*args)):
                bad.append(f"eps_stats {dtype} {shape} {name}")
bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16).reshape(64, 1024)
a, b = ops.eps_stats(bits, bits.flip(1)), ref.eps_stats(bits, bits.flip(1))
if not torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0)):
    bad.append("fp16 patterns")
for N, K in ((70, 9), (300, 40), (129, 129)):
    F = _costs(N, "ties", seed=N)
    C, D = ops.minplus_dp(F, K, 1)
    Cr, Dr = ref.minplus_dp(F, K, start=1)
    if not (bits_equal(C, Cr) and torch.equal(D, Dr)):
        bad.append(f"minplus_dp {N} {K}")
print(json.dumps({"isa": tigercore.build_info()["cpu_isa_active"], "bad": bad}))
"""


def test_every_cpu_isa_matches_reference():
    """The generic, AVX2 and AVX-512 builds of the loops (those this CPU runs) all give the reference's bits."""
    supported = tigercore.build_info()["cpu_isas_supported"].split(",")
    here = os.path.dirname(os.path.abspath(__file__))
    procs = {isa: subprocess.Popen([sys.executable, "-c", _ISA_SCRIPT, here], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=dict(os.environ, TIGERCORE_CPU_ISA=isa))
             for isa in supported}
    for isa, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        data = json.loads(out.strip().splitlines()[-1])
        assert data["isa"] == isa and data["bad"] == [], data


# ----------------------------------------------------------------------------- CUDA parity
cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_eps_stats_matches_cpu_and_reference(dtype):
    requires_native("eps_stats", "cuda")
    for shape in SHAPES + [(2, 3, 256, 256)]:
        eh, e, x, xh = inputs(shape, dtype, seed=shape[-1])
        for name, args in arg_sets(eh, e, x, xh).items():
            got = OPS.eps_stats(*(a.cuda() if a is not None else None for a in args)).cpu()
            assert bits_equal(got, OPS.eps_stats(*args)) and bits_equal(got, ref.eps_stats(*args)), (shape, name)


@cuda
@pytest.mark.cuda
def test_cuda_segment_moments_and_minplus_match_cpu():
    requires_native("segment_moments", "cuda")
    requires_native("minplus_dp", "cuda")
    g = torch.Generator().manual_seed(1)
    stats = _stats(5000, seed=3)
    ts = torch.randint(1, 40, (5000,), generator=g)
    ts[:4200] = 7
    for a, b in zip(OPS.segment_moments(stats.cuda(), ts.cuda(), 40), OPS.segment_moments(stats, ts, 40)):
        assert bits_equal(a.cpu(), b)
    for kind in ("rand", "ties", "inf", "neg_inf"):
        F = _costs(300, kind, seed=2)
        C, D = OPS.minplus_dp(F.cuda(), 40, 1)
        Cc, Dc = OPS.minplus_dp(F, 40, 1)
        assert bits_equal(C.cpu(), Cc) and torch.equal(D.cpu(), Dc), kind
