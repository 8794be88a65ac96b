// momentum8.h — encode/decode of one block of 8-bit momentum ([note: 8-bit momentum]), host and
// device (TC_FN), bit for bit the definition in tigercore/reference/momentum8.py: per block of
// kQ8Block elements one float32 absmax (largest |m| over its non-NaN elements, +-Inf saturated to
// FLT_MAX) and per element a sign-magnitude code: k = RNE((|m| / absmax) * 127), code = k | sign<<7
// (sign only when k > 0), 0x80 = NaN; decode m = +-(k * RN(1/127)) * absmax. docs/semantics.md,
// "8-bit momentum". Plain C++ (no torch), so the CPU ISA variants and CUDA include it.
#pragma once
#include <stdint.h>

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

// The magnitude of index k (0..127): k * RN(1/127) in float32; k = 127 gives exactly 1.
TC_FN float q8_magnitude(uint32_t k) { return float(int32_t(k)) * (1.0f / 127.0f); }

// Element i of a block with scale absmax.
TC_FN float q8_decode(uint8_t code, float absmax) {
  const uint32_t c = code;
  float v = q8_magnitude(c & 0x7Fu) * absmax;
  v = (c & 0x80u) ? -v : v;
  return c == kQ8NanCode ? bits_as_float(0x7FC00000u) : v;
}

// Bits of |x| saturated to FLT_MAX; 0 for NaN (ignored by the absmax). Integer compares of these
// bits order the magnitudes, so the block max is an integer max (vectorises, no NaN rules).
TC_FN uint32_t q8_abs_bits(float x) {
  const uint32_t a = float_as_bits(x) & 0x7FFFFFFFu;
  return a > kQ8InfBits ? 0u : (a > kQ8FltMaxBits ? kQ8FltMaxBits : a);
}

// The code of x in a block of absmax a (a = bits_as_float of the block's max q8_abs_bits; a > 0).
TC_FN uint8_t q8_encode(float x, float a) {
  const uint32_t xb = float_as_bits(x);
  const uint32_t ab = xb & 0x7FFFFFFFu;
  const float mag = bits_as_float(ab > kQ8FltMaxBits ? kQ8FltMaxBits : ab);  // |x| saturated (NaN -> FLT_MAX, code below)
#if defined(__CUDA_ARCH__)
  const float y = __fmul_rn(__fdiv_rn(mag, a), 127.0f);
  const float r = __fsub_rn(__fadd_rn(y, 8388608.0f), 8388608.0f);  // RNE to an integer (0 <= y <= 127)
#else
  const float y = (mag / a) * 127.0f;
  const float r = (y + 8388608.0f) - 8388608.0f;
#endif
  uint32_t k = uint32_t(int32_t(r));
  k = k > 127u ? 127u : k;
  const uint32_t neg = (xb >> 31) & (k > 0u ? 1u : 0u);
  return uint8_t(ab > kQ8InfBits ? uint32_t(kQ8NanCode) : (k | (neg << 7)));
}

// Encodes len (<= kQ8Block) float32 values into codes; returns the block's absmax.
TC_FN float q8_encode_block(const float* __restrict__ m, int len, uint8_t* __restrict__ codes) {
  uint32_t amax = 0;
  for (int i = 0; i < len; ++i) {
    const uint32_t a = q8_abs_bits(m[i]);
    amax = a > amax ? a : amax;
  }
  const float a = bits_as_float(amax);
  if (amax == 0u) {  // only zeros and NaNs
    for (int i = 0; i < len; ++i) codes[i] = (float_as_bits(m[i]) & 0x7FFFFFFFu) > kQ8InfBits ? kQ8NanCode : uint8_t(0);
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
