// kernels_avx2.cpp — the avx2 variant of the CPU kernels: the Lion/Tiger step loops
// (optim_kernels.h) and the Analytic-DPM loops (dpm_kernels.h; 32-byte vectors, 2-row minplus
// register tiles for 16 ymm registers).
// Only torch-free headers are included, after the target pragma, so nothing outside the
// tigercore::cpu::avx2 namespace is compiled for this instruction set.
#if defined(__x86_64__) || defined(_M_X64)
// Standard headers first, compiled for the baseline ISA; only our own code gets the target.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <type_traits>
#include <utility>

#include <immintrin.h>  // the conversion intrinsics of [note: upcast loads] (dpm_kernels.h)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif
#define TC_ISA avx2
#define TC_VEC_BYTES 32
#define TC_MINPLUS_ROWS 2
#include "optim_kernels.h"
#include "dpm_kernels.h"

namespace tigercore {
namespace cpu {
const KernelTable kAvx2Table = {"avx2", &avx2::sign_step, &avx2::sum_squares, &avx2::all_finite,
                                   &avx2::caution_count};
const DpmKernelTable kDpmAvx2Table = {"avx2", &avx2::dpm_loops::eps_stats_tiles,
                                      &avx2::dpm_loops::minplus_outer, &avx2::dpm_loops::minplus_inner};
}  // namespace cpu
}  // namespace tigercore
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
