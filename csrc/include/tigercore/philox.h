// philox.h — Philox4x32-10 counter-based RNG and stochastic rounding to bf16/fp16.
// Semantics: docs/semantics.md ("Storage of bf16/fp16 parameters"; known answers: "Test vectors").
// [Salmon et al., SC'11]. Reference: tigercore/reference/numerics.py (philox4x32, stochastic_round).
#pragma once
#include "tigercore/float_bits.h"

namespace tigercore {

struct uint4x32 { uint32_t x, y, z, w; };

TC_FN void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

// Philox4x32 with 10 rounds; the first round uses the original key.
TC_FN uint4x32 philox4x32_10(uint4x32 c, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, c.x, hi0, lo0);
    mulhilo32(0xCD9E8D57u, c.z, hi1, lo1);
    c = uint4x32{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// [note: stochastic rounding stream]
// The random word for element i of parameter p at step t (state['step'] on entry) is word
// (i mod 4) of Philox4x32-10 with counter (lo(i/4), hi(i/4), lo(t), hi(t)) and key (seed, p).
// It depends on nothing else (not on threads, chunking or device), so the reference, the CPU
// kernel and the CUDA kernel round identically. The CUDA kernels call this per element; the CPU
// loops compute the same words many counters at a time (csrc/cpu/sr_words.h).
TC_FN uint32_t sr_random_word(uint32_t seed, uint32_t p, uint64_t t, uint64_t i) {
  const uint64_t q = i >> 2;
  const uint4x32 r = philox4x32_10(
      uint4x32{uint32_t(q), uint32_t(q >> 32), uint32_t(t), uint32_t(t >> 32)}, seed, p);
  const uint32_t lo = (i & 1u) ? r.y : r.x;  // selects, not a switch: vectorises
  const uint32_t hi = (i & 1u) ? r.w : r.z;
  return (i & 2u) ? hi : lo;
}

// bf16: add the top 16 random bits below the kept mantissa, then truncate; NaN -> 0x7FC0.
// Selects, not an early return: the CPU loops vectorise it (csrc/cpu/sr_words.h supplies r).
TC_FN uint16_t float_to_bf16_stochastic(float x, uint32_t r) {
  const uint32_t u = float_as_bits(x);
  return uint16_t(select_u32((u & 0x7FFFFFFFu) > 0x7F800000u, 0x7FC0u, (u + (r >> 16)) >> 16));
}

// fp16: lo = x rounded toward zero, hi = next fp16 away from zero (Inf beyond 65504, spacing 32);
// take hi iff (r >> 8) < 2^24 * (|x| - |lo|) / (|hi| - |lo|). The right side is exact in fp32:
// |x| - |lo| is exact (Sterbenz) and |hi| - |lo| is a power of two.
// Computed without conversions or a division (the CPU loops vectorise it; same bits as the
// reference's formula, tigercore/reference/numerics.py::stochastic_round):
//  - lo by truncation: from 2^-14 up, dropping 13 mantissa bits and rebiasing the exponent; below,
//    |x| * 2^24 (exact) truncated to an integer; saturated at 65504 (0x7BFF), whose hi is Inf;
//  - |hi| - |lo| = 2^(max(E, 1) - 25) for lo's exponent field E (subnormals and [2^-14, 2^-13)
//    have 2^-24; 65504 -> Inf counts as 32, E = 30), so 2^24 / (|hi| - |lo|) = 2^(49 - max(E, 1)).
TC_FN uint16_t float_to_fp16_stochastic(float x, uint32_t r) {
  const uint32_t ux = float_as_bits(x);
  const uint32_t a = ux & 0x7FFFFFFFu;
  const float ax = bits_as_float(a);
  const bool normal = a >= 0x38800000u;                                       // |x| >= 2^-14
  const float sub = bits_as_float(select_u32(normal, 0u, a));                  // in range for the cast
  const uint32_t sub_lo = uint32_t(int32_t(sub * 16777216.0f));              // < 1024: truncates
  uint32_t lo = select_u32(normal, (a - 0x38000000u) >> 13, sub_lo);
  float lo_f = bits_as_float(select_u32(normal, a & 0xFFFFE000u,
                                        float_as_bits(float(int32_t(sub_lo)) * 5.9604644775390625e-08f)));
  const bool big = a >= 0x477FE000u;                                          // |x| >= 65504 (or Inf/NaN)
  lo = select_u32(big, 0x7BFFu, lo);
  lo_f = bits_as_float(select_u32(big, 0x477FE000u, float_as_bits(lo_f)));
  const uint32_t e = lo >> 10;
  const float scale = bits_as_float((176u - select_u32(e == 0u, 1u, e)) << 23);
  const float threshold = (ax - lo_f) * scale;
  // r >> 8 < 2^24 converts exactly; as a signed int so that AVX2 converts it in one instruction
  const uint32_t out = (ux >> 16 & 0x8000u) | select_u32(float(int32_t(r >> 8)) < threshold, lo + 1u, lo);
  return uint16_t(select_u32(a > 0x7F800000u, 0x7E00u, out));  // NaN
}

}  // namespace tigercore
