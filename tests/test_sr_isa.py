"""Stochastic rounding on the CPU (csrc/cpu/sr_words.h: Philox words computed 4/8/16 counters per
vector, in blocks): the same bits on every instruction set (generic, AVX2, AVX-512) and thread
count, and the same bits as the reference (tigercore/reference/optim.py, which computes every
word from its own Philox, docs/semantics.md "Storage of bf16/fp16 parameters"). Sizes and starts
are awkward: lengths that are not multiples of 4 or of a vector, Tiger E rows of 37 elements (so
ranges start at element 37 r), a view one element into its storage, several chunks and blocks per
tensor, a step counter crossing 2^32, the guard's shrink path and GradScaler's unscaling."""
import json
import os
import subprocess
import sys

import pytest
import torch

import tigercore

from _cases import make_tensors, run_case
from conftest import requires_native
from tolerances import assert_bitwise_equal

SHAPES = [(1,), (3,), (5,), (63,), (65,), (517,), (300, 37), (9, 1029), (70001,), "misaligned", (0,)]
CASES = [  # (algo, param dtype, momentum dtype, first step, seed, variant)
    ("lion", "bfloat16", "float32", 2**32 - 1, 7, "specials"),
    ("lion", "float16", "float32", 5, 2**32 - 1, "specials"),
    ("lion", "bfloat16", "bfloat16", 0, 0, "scaled"),
    ("tigerK", "bfloat16", "float32", 2**32 - 1, 7, "plain"),
    ("tigerK", "float16", "float32", 3, 11, "nonfinite"),
    ("tigerK", "float16", "float16", 0, 1, "scaled"),
    ("tigerE", "bfloat16", "float32", 1, 7, "nonfinite"),
    ("tigerE", "float16", "float32", 2**32 - 1, 123, "plain"),
]


def build_case(case):
    """The tensors of one case (deterministic) and the keyword arguments of its steps."""
    algo, dtype, mom, step0, seed, variant = case
    dtype, mom = getattr(torch, dtype), getattr(torch, mom)
    params, grads, moms, aux = make_tensors(SHAPES, dtype, mom, "stochastic", seed=seed % 1000)
    kw = {}
    if variant == "specials":  # NaN, +-Inf, the largest finite values, subnormals, exact grid values
        big = 65504.0 if dtype == torch.float16 else 3.3e38
        vals = [float("nan"), float("inf"), -float("inf"), big, -big, 1e-7, -3e-8, 0.5, -0.0]
        p = params[SHAPES.index((517,))]
        p[:len(vals)] = torch.tensor(vals).to(dtype)
    elif variant == "nonfinite":  # the guard fires on two tensors: the shrink path rounds too
        grads[SHAPES.index((65,))][7] = float("nan")
        grads[SHAPES.index((9, 1029))][3, 1000] = float("inf")
    elif variant == "scaled":
        kw["grad_scale"] = torch.tensor(1024.0)
        for g in grads:
            g.mul_(1024.0)
    return (params, grads, moms, aux), dict(n_steps=2, seed=seed, step0=step0, **kw)


def run(backend, case):
    tensors, kw = build_case(case)
    algo = case[0]
    run_case(backend, algo, *tensors, "stochastic", **kw)
    return tensors


_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import tigercore
from _cases import digest
from test_sr_isa import CASES, run
out = {"isa": tigercore.build_info()["cpu_isa_active"], "digests": {}}
for threads in (1, 2):
    torch.set_num_threads(threads)
    for case in CASES:
        t = run("native", case)
        out["digests"][f"{threads} {case}"] = digest([x for lst in t for x in lst])
print(json.dumps(out))
"""


def test_stochastic_bits_identical_on_every_isa_and_thread_count():
    requires_native("tiger_step_")
    here = os.path.dirname(os.path.abspath(__file__))
    supported = tigercore.build_info()["cpu_isas_supported"].split(",")
    results = {}
    for isa in supported:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, here], capture_output=True, text=True,
                              env=dict(os.environ, TIGERCORE_CPU_ISA=isa), timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        assert data["isa"] == isa
        results[isa] = data["digests"]
    first_isa = supported[0]
    base = results[first_isa]
    for case in CASES:  # one thread against two on the same ISA
        assert base[f"1 {case}"] == base[f"2 {case}"], f"{first_isa}: 1 and 2 threads differ on {case}"
    for isa, d in results.items():
        for key in base:
            assert d[key] == base[key], f"{isa} differs from {first_isa} on {key}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-m{c[2]}-t{c[3]}-{c[5]}")
def test_stochastic_native_equals_reference(case):
    requires_native("tiger_step_")
    nat = run("native", case)
    ref = run("reference", case)
    for name, a_list, b_list in zip(("param", "grad", "exp_avg"), nat, ref):
        for i, (a, b) in enumerate(zip(a_list, b_list)):
            assert_bitwise_equal(a, b, f"{case} {name}[{i}] shape {tuple(a.shape)}")
    # not vacuous: the words were used (round-to-nearest of the same updates gives other bits)
    tensors, kw = build_case(case)
    run_case("native", case[0], *tensors, "none", **kw)
    assert any(not torch.equal(a, b) for a, b in zip(nat[0], tensors[0]))
