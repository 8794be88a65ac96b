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

TC_FN float bf16_to_float(uint16_t h) { return bits_as_float(uint32_t(h) << 16); }

TC_FN uint16_t float_to_bf16_rne(float f) {
  const uint32_t u = float_as_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

TC_FN float fp16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  const uint32_t m = h & 0x3FFu;
  if (e == 0x1Fu) return bits_as_float(sign | 0x7F800000u | (m << 13));
  if (e == 0) {
    // subnormal or zero: m * 2^-24, exact in fp32
    const float mag = float(m) * 5.9604644775390625e-08f;
    return bits_as_float(sign | float_as_bits(mag));
  }
  return bits_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

TC_FN uint16_t float_to_fp16_rne(float f) {
  const uint32_t x = float_as_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return uint16_t(sign | 0x7E00u);  // NaN (canonical quiet NaN, as torch)
  if (a >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // >= 65520 rounds to infinity
  if (a < 0x38800000u) {                                   // below 2^-14: fp16 subnormal or 0
    const uint32_t e = a >> 23;                            // f = mant * 2^(e-150)
    const uint32_t shift = 126u - e;                       // result = round(mant >> shift)
    if (shift > 24u) return uint16_t(sign);                // < 2^-25 (ties at 2^-25 go to 0)
    const uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    q += (rem > half || (rem == half && (q & 1u))) ? 1u : 0u;
    return uint16_t(sign | q);
  }
  const uint32_t r = a + 0xFFFu + ((a >> 13) & 1u) - 0x38000000u;  // RNE at bit 13, rebias
  return uint16_t(sign | (r >> 13));
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

}  // namespace tigercore
