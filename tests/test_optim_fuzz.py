"""Native vs reference (bitwise: they compute the same function) and vs a float64 oracle, for
every dtype, momentum dtype, precision mode and class, on awkward sizes: 0, 1, 7, 4097, 2-D,
a misaligned view, 2^20 + 3 and 250 small tensors in one call."""
import subprocess
import sys
import os
import json

import pytest
import torch

import tigercore

from _cases import SHAPES, clone_all, make_tensors, run_case
from conftest import requires_native
from tolerances import assert_bitwise_equal, assert_close_to_oracle

ALGOS = ["lion", "tigerK", "tigerE", "tigerV"]
COMBOS = ([(torch.float64, torch.float64, "none")]
          + [(torch.float32, m, "none") for m in (torch.float32, torch.bfloat16)]
          + [(d, m, mode) for d in (torch.float16, torch.bfloat16) for m in (torch.float32, d)
             for mode in ("none", "kahan", "stochastic", "master")])


def _ids(c):
    return f"{str(c[0])[6:]}-m{str(c[1])[6:]}-{c[2]}"


def _compare_native_reference(algo, dtype, mom_dtype, precision, shapes, seed=0, n_steps=2, _tensors=None, **kw):
    requires_native("lion_step_" if algo == "lion" else "tiger_step_")
    tensors = _tensors if _tensors is not None else make_tensors(shapes, dtype, mom_dtype, precision, seed)
    nat = clone_all(*tensors)
    refl = clone_all(*tensors)
    run_case("native", algo, *nat, precision, n_steps=n_steps, **kw)
    run_case("reference", algo, *refl, precision, n_steps=n_steps, **kw)
    for name, a_list, b_list in zip(("param", "grad", "exp_avg", "aux"), nat, refl):
        for i, (a, b) in enumerate(zip(a_list, b_list)):
            where = f"{algo} {dtype} {precision} {name}[{i}] shape {tuple(a.shape)}"
            if a.dtype == torch.float64:
                # [note: float64 reference]: a*b + c is within 1 ulp of fma; and the fp64 sum of
                # squares (not exact in fp64) is added in another order than torch's sum.
                torch.testing.assert_close(a, b, rtol=2e-15, atol=1e-18, equal_nan=True, msg=where)
            else:
                assert_bitwise_equal(a, b, where)
    return tensors, nat


@pytest.mark.parametrize("combo", COMBOS, ids=_ids)
@pytest.mark.parametrize("algo", ALGOS)
def test_native_equals_reference(algo, combo):
    _compare_native_reference(algo, *combo, SHAPES)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("algo", ["lion", "tigerK"])
def test_native_large_tensor(algo, dtype):
    _compare_native_reference(algo, dtype, torch.float32, "stochastic" if dtype != torch.float32 else "none",
                              [(2 ** 20 + 3,)], n_steps=1)


@pytest.mark.parametrize("algo", ["lion", "tigerK", "tigerE"])
def test_native_many_small_tensors(algo):
    shapes = [((i % 13) + 1, (i % 5) + 1) for i in range(250)]
    _compare_native_reference(algo, torch.bfloat16, torch.float32, "master", shapes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("algo", ALGOS)
def test_close_to_float64_oracle(backend, algo, dtype):
    """One step from zero momentum (so sign(c) = sign(g) is the same in every precision)."""
    params, grads, moms, aux = make_tensors(SHAPES, dtype, torch.float32, "none", seed=3, m_scale=0.0)
    oracle = [[t.double() for t in lst] for lst in (params, grads, moms)]
    run_case(backend, algo, params, grads, moms, [], "none", n_steps=1)
    run_case("reference", algo, *oracle, [], "none", n_steps=1)
    for p, p64 in zip(params, oracle[0]):
        assert_close_to_oracle(p, p64, dtype)
    for m, m64 in zip(moms, oracle[2]):
        torch.testing.assert_close(m.double(), m64, atol=1e-7, rtol=1e-6)


def test_results_independent_of_thread_count():
    requires_native("tiger_step_")
    outs = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            tensors = make_tensors([(300000,), (1000, 129), (5,)], torch.bfloat16, torch.float32, "master", seed=9)
            run_case("native", "tigerK", *tensors, "master", n_steps=3)
            outs.append([t.clone() for lst in tensors for t in lst])
        finally:
            torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cls", ["K", "E"])
def test_guard_across_tasks_and_batches_matches_reference(cls, threads):
    """[note: one region, dynamic tasks]: a non-finite value in the last chunk of a tensor that
    spans many check tasks, in the first chunk of another, and in a small tensor that shares its
    batch with clean ones: exactly those tensors shrink, on every thread count."""
    shapes = [(2, 1100000), (257, 4099), (3, 5), (64, 64), (1500, 300), (9,)]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tensors = make_tensors(shapes, torch.float32, torch.float32, "none", seed=21)
        grads = tensors[1]
        grads[0].view(-1)[-1] = float("nan")
        grads[1].view(-1)[3] = float("inf")
        grads[3].view(-1)[17] = -float("inf")
        _, nat = _compare_native_reference(f"tiger{cls}", torch.float32, torch.float32, "none", [], n_steps=1,
                                           _tensors=tensors)
    finally:
        torch.set_num_threads(old)
    for i in range(len(shapes)):  # spec §2.6: a guarded tensor keeps m; the others update it
        kept = torch.equal(nat[2][i], tensors[2][i])
        assert kept == (i in (0, 1, 3)), f"tensor {i}: momentum kept = {kept}"


_ISA_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import tigercore
from _cases import make_tensors, run_case, digest, SHAPES
out = {"isa": tigercore.build_info()["cpu_isa_active"], "digests": []}
for algo in ("lion", "tigerK", "tigerE"):
    for dtype, mode in ((torch.float32, "none"), (torch.bfloat16, "kahan"), (torch.float16, "stochastic"), (torch.bfloat16, "master")):
        t = make_tensors(SHAPES + [(70000,)], dtype, torch.float32, mode, seed=11)
        run_case("native", algo, *t, mode, n_steps=2)
        out["digests"].append(digest([x for lst in t for x in lst]))
print(json.dumps(out))
"""


def test_every_instruction_set_gives_identical_bits():
    """The generic, AVX2 and AVX-512 variants compile the same element math: identical results."""
    requires_native("lion_step_")
    supported = tigercore.build_info()["cpu_isas_supported"].split(",")
    results = {}
    here = os.path.dirname(os.path.abspath(__file__))
    for isa in supported:
        env = dict(os.environ, TIGERCORE_CPU_ISA=isa)
        proc = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, here], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        assert data["isa"] == isa
        results[isa] = data["digests"]
    assert len(results) >= 1
    first = next(iter(results.values()))
    for isa, d in results.items():
        assert d == first, f"{isa} differs from {next(iter(results))}"
