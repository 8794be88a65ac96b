// sr_fp16_shim.cpp — float_to_fp16_stochastic (tigercore/philox.h) over arrays, exported with C
// linkage for tests/test_fp16_sr_sweep.py, which compiles it (once per instruction set: the loop
// vectorises as the CPU kernels' loops do) and compares its bits with the reference,
// tigercore/reference/numerics.py::stochastic_round, over a sweep of float32 bit patterns.
// Not part of the extension. By hand:
//   c++ -std=c++20 -O3 -ffp-contract=off -shared -fPIC -Icsrc/include csrc/tests/sr_fp16_shim.cpp -o shim.so
#include <cstdint>

#include "tigercore/philox.h"

extern "C" void tc_fp16_sr(const uint32_t* x_bits, const uint32_t* r, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = tigercore::float_to_fp16_stochastic(tigercore::bits_as_float(x_bits[i]), r[i]);
}
