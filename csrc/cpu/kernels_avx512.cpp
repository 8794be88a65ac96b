// kernels_avx512.cpp — the avx512 variant of the CPU kernels: the Lion/Tiger step loops
// (optim_kernels.h) and the Analytic-DPM loops (dpm_kernels.h; 64-byte vectors, 4-row minplus
// register tiles for 32 zmm registers).
// Only torch-free headers are included, after the target pragma, so nothing outside the
// tigercore::cpu::avx512 namespace is compiled for this instruction set.
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
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#endif
#define TC_ISA avx512
#define TC_VEC_BYTES 64
#define TC_MINPLUS_ROWS 4
#include "optim_kernels.h"
#include "dpm_kernels.h"

namespace tigercore {
namespace cpu {
const KernelTable kAvx512Table = {"avx512", &avx512::sign_step, &avx512::sum_squares, &avx512::all_finite,
                                   &avx512::caution_count};
const DpmKernelTable kDpmAvx512Table = {"avx512", &avx512::dpm_loops::eps_stats_tiles,
                                        &avx512::dpm_loops::minplus_outer, &avx512::dpm_loops::minplus_inner};
}  // namespace cpu
}  // namespace tigercore
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
