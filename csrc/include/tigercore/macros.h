// macros.h — portability macros shared by every tigercore translation unit.
// `.h` headers in csrc/include/tigercore are host+device safe and include no torch headers, so
// the CPU kernels (compiled once per instruction set), the CUDA kernels and the C++ unit test
// (csrc/tests/test_math.cpp) all compile the very same element math.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TC_HOST_DEVICE __host__ __device__
#define TC_FORCEINLINE __forceinline__
#define TC_UNROLL _Pragma("unroll")
#else
#define TC_HOST_DEVICE
#define TC_FORCEINLINE inline __attribute__((always_inline))
#define TC_UNROLL _Pragma("GCC unroll 16")
#endif

// [note: internal linkage for shared math]
// The CPU kernels are compiled three times (generic, AVX2, AVX-512) into one library. A plain
// `inline` function instantiated in two of those objects could be merged by the linker and the
// AVX-512 copy run on a machine without AVX-512. Every function in these headers is therefore
// `static` and always inlined: each instruction-set object keeps its own copy.
#define TC_FN static TC_FORCEINLINE TC_HOST_DEVICE

// Marks a switch default that validated input cannot reach (every DType / Precision value is
// handled; the host plan rejects anything else before a kernel runs).
#if defined(__CUDA_ARCH__)
#define TC_UNREACHABLE() __trap()
#else
#define TC_UNREACHABLE() __builtin_trap()
#endif
