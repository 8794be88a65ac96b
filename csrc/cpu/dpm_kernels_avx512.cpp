// dpm_kernels_avx512.cpp — the avx512 variant of the Analytic-DPM CPU loops (see dpm_kernels.h):
// 64-byte vectors, 4-row minplus register tiles (32 zmm registers). Only torch-free headers are
// included after the target pragma, so nothing outside tigercore::cpu::avx512 gets AVX-512 code.
#if defined(__x86_64__) || defined(_M_X64)
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <type_traits>

#include <immintrin.h>  // the conversion intrinsics of [note: upcast loads]
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#endif
#define TC_ISA avx512
#define TC_VEC_BYTES 64
#define TC_MINPLUS_ROWS 4
#include "dpm_kernels.h"

namespace tigercore {
namespace cpu {
const DpmKernelTable kDpmAvx512Table = {"avx512", &avx512::eps_stats_tiles, &avx512::minplus_outer,
                                        &avx512::minplus_inner};
}  // namespace cpu
}  // namespace tigercore
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
