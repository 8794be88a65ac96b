// optim_kernels_avx512.cpp — the avx512 variant of the CPU step kernels (see optim_kernels.h).
// Only torch-free headers are included, after the target pragma, so nothing outside the
// tigercore::cpu::avx512 namespace is compiled for this instruction set.
#if defined(__x86_64__) || defined(_M_X64)
// Standard headers first, compiled for the baseline ISA; only our own code gets the target.
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#endif
#define TC_ISA avx512
#include "optim_kernels.h"

namespace tigercore {
namespace cpu {
const KernelTable kAvx512Table = {"avx512", &avx512::sign_step, &avx512::sum_squares, &avx512::all_finite};
}  // namespace cpu
}  // namespace tigercore
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
