// float_bits.h — bit-exact float <-> bfloat16 / float16 conversions, host and device.
// Round-to-nearest-even, NaN kept quiet, no flush-to-zero. Written on integers so that the CPU
// (any instruction set) and CUDA produce identical bits. Reference: tigercore/reference/numerics.py
// uses torch's own conversions, which are also RNE; tests/test_native_numerics.py compares them.
#pragma once
#include "tigercore/macros.h"

namespace tigercore {

// Storage tags with the layout of at::Half / at::BFloat16 (one uint16_t), without torch headers.
struct half_t { uint16_t bits; };
struct bfloat16_t { uint16_t bits; };

TC_FN uint32_t float_as_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u; std::memcpy(&u, &f, sizeof(u)); return u;
#endif
}
TC_FN float bits_as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; std::memcpy(&f, &u, sizeof(f)); return f;
#endif
}

// cond ? a : b on bit masks: compilers vectorise this even where they keep a ternary as a branch.
TC_FN uint32_t select_u32(bool cond, uint32_t a, uint32_t b) {
  const uint32_t mask = 0u - uint32_t(cond);
  return (a & mask) | (b & ~mask);
}

TC_FN float bf16_to_float(uint16_t h) { return bits_as_float(uint32_t(h) << 16); }

TC_FN uint16_t float_to_bf16_rne(float f) {
  const uint32_t u = float_as_bits(f);
  const uint32_t rne = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return uint16_t(nan ? ((u >> 16) | 0x0040u) : rne);  // a select, not a branch: vectorises
}

// fp16 <-> fp32 without branches (every case is computed and selected), so that compilers
// vectorise the CPU loops; exhaustively checked against an independent oracle in
// csrc/tests/test_math.cpp.
TC_FN float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  const uint32_t m = h & 0x3FFu;
  const uint32_t normal = ((e + 112u) << 23) | (m << 13);
  const uint32_t special = 0x7F800000u | (m << 13);                         // Inf / NaN
  const uint32_t subnormal = float_as_bits(float(int32_t(m)) * 5.9604644775390625e-08f);  // m * 2^-24, exact
  uint32_t mag = select_u32(e == 0, subnormal, normal);
  mag = select_u32(e == 0x1Fu, special, mag);
  return bits_as_float(sign | mag);
}

TC_FN uint16_t float_to_fp16_rne(float f) {
  const uint32_t x = float_as_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  // normal range: round to nearest even at bit 13, then rebias the exponent (127 - 15 = 112)
  const uint32_t normal = (a + 0xFFFu + ((a >> 13) & 1u) - 0x38000000u) >> 13;
  // below 2^-14: |f| * 2^24 is exact; adding 2^23 rounds it to an integer (nearest even)
  const float scaled = bits_as_float(a) * 16777216.0f + 8388608.0f;
  const uint32_t subnormal = float_as_bits(scaled) - 0x4B000000u;
  uint32_t mag = select_u32(a < 0x38800000u, subnormal, normal);
  mag = select_u32(a >= 0x477FF000u, 0x7C00u, mag);  // >= 65520 rounds to infinity
  mag = select_u32(a > 0x7F800000u, 0x7E00u, mag);   // NaN (canonical quiet NaN, as torch)
  return uint16_t(sign | mag);
}

// Storage traits: load to the op-math type, store with round-to-nearest-even.
template <typename S> struct storage;
template <> struct storage<float> {
  using opmath = float;
  TC_FN float load(const float* p, int64_t i) { return p[i]; }
  TC_FN void store(float* p, int64_t i, float v) { p[i] = v; }
};
template <> struct storage<double> {
  using opmath = double;
  TC_FN double load(const double* p, int64_t i) { return p[i]; }
  TC_FN void store(double* p, int64_t i, double v) { p[i] = v; }
};
template <> struct storage<half_t> {
  using opmath = float;
  TC_FN float load(const half_t* p, int64_t i) { return fp16_to_float(p[i].bits); }
  TC_FN void store(half_t* p, int64_t i, float v) { p[i].bits = float_to_fp16_rne(v); }
};
template <> struct storage<bfloat16_t> {
  using opmath = float;
  TC_FN float load(const bfloat16_t* p, int64_t i) { return bf16_to_float(p[i].bits); }
  TC_FN void store(bfloat16_t* p, int64_t i, float v) { p[i].bits = float_to_bf16_rne(v); }
};

// Is x finite? (NaN and +-Inf fail.) Written on bits so that -ffast-math can never fold it.
TC_FN bool is_finite_bits(float x) { return (float_as_bits(x) & 0x7F800000u) != 0x7F800000u; }
TC_FN bool is_finite_bits(double x) {
  uint64_t u;
#if defined(__CUDA_ARCH__)
  u = static_cast<uint64_t>(__double_as_longlong(x));
#else
  std::memcpy(&u, &x, sizeof(u));
#endif
  return (u & 0x7FF0000000000000ull) != 0x7FF0000000000000ull;
}

}  // namespace tigercore
