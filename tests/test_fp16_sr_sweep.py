"""Stochastic rounding to fp16 in C++ (float_to_fp16_stochastic, csrc/include/tigercore/philox.h, shared
by the CPU and CUDA kernels) against the reference, tigercore/reference/numerics.py::stochastic_round,
bit for bit over a sweep of ~2.1e7 float32 bit patterns (every 61st below 2^17 in magnitude, both
signs; every 4093rd of all 2^32 patterns; every pattern near 0, 2^-24, 2^-14, 65504, 65520, 65536
and Inf; every fp16 value and its float32 neighbours), each with five words r: random, 0, 2^32-1
and the two words either side of the round-up threshold (computed in float64, independently of
both). The C++ is compiled here (csrc/tests/sr_fp16_shim.cpp) for each instruction set this CPU
runs, so the vectorised forms of the loop are checked too."""
import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tigercore.reference.numerics import stochastic_round

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "csrc" / "tests" / "sr_fp16_shim.cpp"
sys.path.insert(0, str(ROOT / "tools"))
import build_flags  # noqa: E402  (the release build's C++ flags: -O3, -ffp-contract=off, ...)

_SPEC = build_flags.load()
FLAGS = [*build_flags.flags(_SPEC, "cxx", {"release"}), "-shared", "-fPIC",
         *(f"-I{d}" for d in build_flags.include_dirs(_SPEC))]
ISA_FLAGS = {  # the target flags of csrc/cpu/kernels_*.cpp
    "generic": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
}
CHUNK = 1 << 21
M32 = (1 << 32) - 1


def runnable_isas():
    cap = torch.backends.cpu.get_cpu_capability().lower()  # "default", "avx2", "avx512", ...
    isas = ["generic"]
    if cap in ("avx2", "avx512"):
        isas.append("avx2")
    if cap == "avx512":
        isas.append("avx512")
    return isas


@pytest.fixture(scope="module")
def shims(tmp_path_factory):
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build csrc/tests/sr_fp16_shim.cpp")
    out = {}
    for isa in runnable_isas():
        lib = tmp_path_factory.mktemp("shim") / f"sr_fp16_{isa}.so"
        subprocess.run([cxx, *FLAGS, *ISA_FLAGS[isa], str(SHIM), "-o", str(lib)], check=True)
        fn = ctypes.CDLL(str(lib)).tc_fp16_sr
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn.restype = None
        out[isa] = fn
    return out


def sweep_bits() -> torch.Tensor:
    """The float32 bit patterns (int64 holding uint32) of the sweep."""
    k = torch.arange(0, 0x48000000 // 61 + 1, dtype=torch.int64)  # |x| < 2^17: fp32 subnormals .. beyond 65504
    parts = [k * 61 | (k & 1) << 31, torch.arange(0, 1 << 32, 4093, dtype=torch.int64)]
    for c in (0x00000000, 0x33800000, 0x38800000, 0x477FE000, 0x477FF000, 0x47800000, 0x7F800000):
        near = torch.arange(max(c - 8192, 0), c + 8192, dtype=torch.int64)  # to 0x7F801FFF: NaNs
        parts += [near, near | 1 << 31]
    h = torch.arange(-32768, 32768, dtype=torch.int64).to(torch.int16).view(torch.float16).float()
    hb = h.view(torch.int32).to(torch.int64) & M32
    parts += [hb, (hb - 1) & M32, (hb + 1) & M32]
    return torch.cat(parts)


def threshold_words(bits: torch.Tensor):
    """For each pattern, the words just below and at its round-up threshold 2^24 (|x|-lo)/(hi-lo),
    lo = |x| toward zero in fp16, hi the next fp16 away from zero (65504 + 32 beyond 65504), in
    float64; hi iff (r >> 8) < threshold. Also whether the threshold lies strictly in (0, 2^24)."""
    a = (bits & 0x7FFFFFFF).to(torch.int32).view(torch.float32).double()
    finite = torch.isfinite(a)
    a = torch.where(finite, a, torch.zeros_like(a))
    exp = torch.frexp(a).exponent.double() - 1  # floor(log2 a) for a > 0
    ulp = torch.exp2(torch.clamp(exp, min=-14) - 10)
    t = (a - torch.floor(a / ulp) * ulp) / ulp * 2.0**24
    t = torch.where(a >= 65504.0, (a - 65504.0) / 32.0 * 2.0**24, t)
    inside = finite & (t > 0) & (t < 2.0**24)
    c = torch.ceil(torch.clamp(t, 1.0, 2.0**24 - 1)).long()  # (c - 1) < t <= c
    return (c - 1) << 8 | 0xFF, c << 8, inside


def call(fn, x_bits: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    x32 = x_bits.to(torch.int32).contiguous()  # wraps: the same 32 bits
    r32 = r.to(torch.int32).contiguous()
    out = torch.empty(x32.numel(), dtype=torch.int16)
    fn(x32.data_ptr(), r32.data_ptr(), out.data_ptr(), x32.numel())
    return out


@pytest.mark.slow
def test_sweep_matches_reference(shims):
    bits = sweep_bits()
    assert bits.numel() >= 1 << 24
    gen = torch.Generator().manual_seed(1234)
    checked = 0
    for start in range(0, bits.numel(), CHUNK):
        xb = bits[start:start + CHUNK]
        x = xb.to(torch.int32).view(torch.float32)
        below, at, inside = threshold_words(xb)
        words = {"random": torch.randint(0, 1 << 32, xb.shape, generator=gen, dtype=torch.int64),
                 "0": torch.zeros_like(xb), "2^32-1": torch.full_like(xb, M32), "below": below, "at": at}
        got_edge = {}
        for name, r in words.items():
            want = stochastic_round(x, r, torch.float16).view(torch.int16)
            for isa, fn in shims.items():
                got = call(fn, xb, r)
                bad = (got != want).nonzero().flatten()
                if bad.numel():
                    i = bad[0].item()
                    raise AssertionError(
                        f"{isa}, r {name}: {bad.numel()} of {xb.numel()} differ; first x bits {xb[i].item():08x} "
                        f"r {r[i].item():08x}: got {got[i].item() & 0xFFFF:04x}, reference {want[i].item() & 0xFFFF:04x}")
                got_edge[name] = got.long() & 0x7FFF
        # independent of the reference: just below the threshold rounds up, at it rounds down
        assert torch.equal(got_edge["below"][inside], got_edge["at"][inside] + 1)
        checked += xb.numel()
    assert checked == bits.numel()
