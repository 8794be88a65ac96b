// dpm_kernels_avx2.cpp — the avx2 variant of the Analytic-DPM CPU loops (see dpm_kernels.h):
// 32-byte vectors, 2-row minplus register tiles (16 ymm registers). Only torch-free headers are
// included after the target pragma, so nothing outside tigercore::cpu::avx2 gets AVX2 code.
#if defined(__x86_64__) || defined(_M_X64)
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <type_traits>

#include <immintrin.h>  // the conversion intrinsics of [note: upcast loads]
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif
#define TC_ISA avx2
#define TC_VEC_BYTES 32
#define TC_MINPLUS_ROWS 2
#include "dpm_kernels.h"

namespace tigercore {
namespace cpu {
const DpmKernelTable kDpmAvx2Table = {"avx2", &avx2::eps_stats_tiles, &avx2::minplus_outer, &avx2::minplus_inner};
}  // namespace cpu
}  // namespace tigercore
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
