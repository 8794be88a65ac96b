// momentum8.h — encode/decode of one block of 8-bit momentum ([note: 8-bit momentum]), host and
// device (TC_FN), bit for bit the definition in tigercore/reference/momentum8.py: per block of
// kQ8Block elements one float32 absmax (largest |m| over its non-NaN elements, +-Inf saturated to
// FLT_MAX) and per element a sign-magnitude code: k = RNE((|m| / absmax) * 127), code = k | sign<<7
// (sign only when k > 0), 0x80 = NaN; decode m = +-(k * RN(1/127)) * absmax. docs/semantics.md,
// "8-bit momentum". Plain C++ (no torch), so the CPU ISA variants and CUDA include it.
#pragma once
#include <stdint.h>

#include <algorithm>

#include "tigercore/float_bits.h"
#include "tigercore/macros.h"

namespace tigercore {

// [note: 8-bit momentum]
// A momentum of n elements is stored as n uint8 codes and ceil(n / kQ8Block) float32 absmax values
// (blocks of consecutive flat elements; the last one may be shorter). A step decodes a block,
// computes the new momentum in op-math (float32; float64 for float64 params), rounds it to float32
// and re-encodes the block with its new absmax. Work is split on block boundaries, so a block is
// encoded by one thread and the result does not depend on the thread count.
constexpr int kQ8Block = 256;
constexpr int kQ8Levels = 127;
constexpr uint8_t kQ8NanCode = 0x80;
constexpr uint32_t kQ8FltMaxBits = 0x7F7FFFFFu;  // FLT_MAX
constexpr uint32_t kQ8InfBits = 0x7F800000u;

// Bit casts of the encode loop (host: __builtin_bit_cast; device: the intrinsics).
TC_FN uint32_t q8_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  return __builtin_bit_cast(uint32_t, x);
#endif
}
TC_FN float q8_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}

// The magnitude of index k (0..127): k * RN(1/127) in float32; k = 127 gives exactly 1.
TC_FN float q8_magnitude(uint32_t k) { return float(int32_t(k)) * (1.0f / 127.0f); }

// Element i of a block with scale absmax.
TC_FN float q8_decode(uint8_t code, float absmax) {
  const uint32_t c = code;
  float v = q8_magnitude(c & 0x7Fu) * absmax;
  v = (c & 0x80u) ? -v : v;
  return c == kQ8NanCode ? bits_as_float(0x7FC00000u) : v;
}

// The block's absmax as bits: the largest |x| over the non-NaN elements, saturated to FLT_MAX
// (0 if there is none). Non-negative float bits order as integers, so this is an integer max
// reduction written with masks (no selects), which the compiler vectorises.
TC_FN uint32_t q8_absmax_bits(const float* __restrict__ m, int len) {
  int32_t amax = 0;
  for (int i = 0; i < len; ++i) {
    const int32_t a = int32_t(float_as_bits(m[i]) & 0x7FFFFFFFu);
    const int32_t s = a & -int32_t(a <= int32_t(kQ8InfBits));  // NaN -> 0
    amax = amax > s ? amax : s;
  }
  return uint32_t(amax < int32_t(kQ8FltMaxBits) ? amax : int32_t(kQ8FltMaxBits));
}

// |x| saturated to FLT_MAX, and 0 for NaN (so that |x| / a <= 1 for every element of a block).
// Written with masks, not selects: GCC 12 does not vectorise the encode loop around these.
TC_FN float q8_magnitude_of(uint32_t xb) {
  const uint32_t ab = xb & 0x7FFFFFFFu;
  const uint32_t sat = ab < kQ8FltMaxBits ? ab : kQ8FltMaxBits;
  return q8_float(sat & (0u - uint32_t(ab <= kQ8InfBits)));
}

// The code of the element with bits xb, given quotient = RN(q8_magnitude_of(xb) / a) in [0, 1]:
// the CPU divides, the CUDA kernels divide without a division instruction (sign_step_block.h).
TC_FN uint8_t q8_code_of_quotient(uint32_t xb, float quotient) {
  const uint32_t nan = 0u - uint32_t((xb & 0x7FFFFFFFu) > kQ8InfBits);  // all ones for NaN
#if defined(__CUDA_ARCH__)
  const float y = __fmul_rn(quotient, 127.0f);  // no contraction into an fma
  const float r = __fsub_rn(__fadd_rn(y, 8388608.0f), 8388608.0f);  // RNE to an integer (0 <= y <= 127)
  const uint32_t k = min(uint32_t(int32_t(r)), 127u);
#else
  const float y = quotient * 127.0f;
  const float r = (y + 8388608.0f) - 8388608.0f;
  const uint32_t k = std::min(uint32_t(int32_t(r)), 127u);  // (a ?: here stops GCC 12 from vectorising)
#endif
  const uint32_t neg = (xb >> 31) & uint32_t(k != 0u);
  return uint8_t(((k | (neg << 7)) & ~nan) | (uint32_t(kQ8NanCode) & nan));
}

// The code of x in a block of absmax a > 0 (a >= |x| saturated, as q8_absmax_bits gives it).
TC_FN uint8_t q8_encode(float x, float a) {
  const uint32_t xb = q8_bits(x);
  return q8_code_of_quotient(xb, q8_magnitude_of(xb) / a);
}

// The code of a block of only zeros and NaNs (absmax 0).
TC_FN uint8_t q8_code_without_scale(float x) { return (q8_bits(x) & 0x7FFFFFFFu) > kQ8InfBits ? kQ8NanCode : uint8_t(0); }

// Encodes len (<= kQ8Block) float32 values into codes; returns the block's absmax.
TC_FN float q8_encode_block(const float* __restrict__ m, int len, uint8_t* __restrict__ codes) {
  const uint32_t amax = q8_absmax_bits(m, len);
  const float a = bits_as_float(amax);
  if (amax == 0u) {  // only zeros and NaNs
    for (int i = 0; i < len; ++i) codes[i] = q8_code_without_scale(m[i]);
    return 0.0f;
  }
  for (int i = 0; i < len; ++i) codes[i] = q8_encode(m[i], a);
  return a;
}

// Decodes len codes of a block with scale absmax into out (T = float or double; exact widening).
template <typename T>
TC_FN void q8_decode_block(const uint8_t* __restrict__ codes, float absmax, int len, T* __restrict__ out) {
  for (int i = 0; i < len; ++i) out[i] = T(q8_decode(codes[i], absmax));
}

}  // namespace tigercore
