"""The 8-bit momentum block loops (csrc/include/tigercore/momentum8.h: absmax, encode, decode)
must be vectorised by the compiler, as docs/momentum8.md promises: compiled here with the build's
C++ flags (tools/build_flags.json: -std=c++20 -O3 -ffp-contract=off) under the AVX2 target of
csrc/cpu/kernels_avx2.cpp, GCC's -fopt-info-vec report must name every `for` loop of those functions.
A select (?:) in the encode path once silently turned the encode loop scalar: no test compared
speed, and the bits stayed right. Skipped when no g++ is installed (then nothing is built either)."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "csrc", "include", "tigercore", "momentum8.h")

SOURCE = """
#pragma GCC target("avx2,fma,f16c")
#include "tigercore/momentum8.h"
using namespace tigercore;
float encode(const float* m, int len, uint8_t* c) { return q8_encode_block(m, len, c); }
void decode_f(const uint8_t* c, float a, int len, float* out) { q8_decode_block<float>(c, a, len, out); }
void decode_d(const uint8_t* c, float a, int len, double* out) { q8_decode_block<double>(c, a, len, out); }
"""


def loop_lines() -> set:
    with open(HEADER) as f:
        return {i for i, line in enumerate(f, 1) if re.search(r"\bfor \(int i = 0; i < len; \+\+i\)", line)}


def test_block_loops_are_vectorised(tmp_path):
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("no g++ on this machine")
    src = tmp_path / "q8.cpp"
    src.write_text(SOURCE)
    out = subprocess.run([cxx, "-std=c++20", "-O3", "-ffp-contract=off", "-fopt-info-vec-optimized",
                          f"-I{os.path.join(ROOT, 'csrc', 'include')}", "-c", str(src), "-o", str(tmp_path / "q8.o")],
                         capture_output=True, text=True, check=True)
    vectorised = {int(m.group(1)) for m in re.finditer(r"momentum8\.h:(\d+):\d+: optimized: loop vectorized",
                                                        out.stderr)}
    loops = loop_lines()
    assert len(loops) == 4, loops  # absmax, encode (all-zero block and general), decode
    assert loops <= vectorised, f"not vectorised: lines {sorted(loops - vectorised)} of momentum8.h\n{out.stderr}"
