// vec_access.h — 16-byte vector loads and stores of kN consecutive elements into register arrays,
// host and device, for the CUDA step kernels (sign_step_block.h). On the device each 16 bytes is
// one 128-bit access (LDG.E.128 / STG.E.128, as bench/cuda_inspect.py checks); on the host
// (csrc/tests/test_mta.cpp runs the CUDA block code on the CPU) a memcpy. The caller guarantees
// 16-byte alignment ([note: vector path], mta_plan.h).
#pragma once
#include "tigercore/float_bits.h"

namespace tigercore {

struct alignas(16) Bytes16 {
  uint32_t w[4];
};

TC_FN Bytes16 load16(const void* p) {
#if defined(__CUDA_ARCH__)
  return *static_cast<const Bytes16*>(p);
#else
  Bytes16 b;
  std::memcpy(&b, p, sizeof(b));
  return b;
#endif
}
TC_FN void store16(void* p, const Bytes16& b) {
#if defined(__CUDA_ARCH__)
  *static_cast<Bytes16*>(p) = b;
#else
  std::memcpy(p, &b, sizeof(b));
#endif
}

// Element k of a little-endian word array, and back: 1 element per word (fp32), 2 per word
// (fp16/bf16), 2 words per element (fp64). No memcpy on the device, so all of it stays in registers.
template <typename S> struct word_lanes;
template <> struct word_lanes<float> {
  TC_FN float get(const uint32_t* w, int k) { return bits_as_float(w[k]); }
  TC_FN void put(uint32_t* w, int k, float v) { w[k] = float_as_bits(v); }
};
template <typename H> struct word_lanes_16 {
  TC_FN H get(const uint32_t* w, int k) { return H{uint16_t(w[k >> 1] >> ((k & 1) * 16))}; }
  TC_FN void put(uint32_t* w, int k, H v) {
    const int sh = (k & 1) * 16;
    w[k >> 1] = (w[k >> 1] & ~(0xFFFFu << sh)) | (uint32_t(v.bits) << sh);
  }
};
template <> struct word_lanes<half_t> : word_lanes_16<half_t> {};
template <> struct word_lanes<bfloat16_t> : word_lanes_16<bfloat16_t> {};
template <> struct word_lanes<double> {
  TC_FN double get(const uint32_t* w, int k) {
#if defined(__CUDA_ARCH__)
    return __hiloint2double(int(w[2 * k + 1]), int(w[2 * k]));
#else
    const uint64_t u = uint64_t(w[2 * k]) | (uint64_t(w[2 * k + 1]) << 32);
    double d;
    std::memcpy(&d, &u, sizeof(d));
    return d;
#endif
  }
  TC_FN void put(uint32_t* w, int k, double v) {
#if defined(__CUDA_ARCH__)
    w[2 * k] = uint32_t(__double2loint(v));
    w[2 * k + 1] = uint32_t(__double2hiint(v));
#else
    uint64_t u;
    std::memcpy(&u, &v, sizeof(u));
    w[2 * k] = uint32_t(u);
    w[2 * k + 1] = uint32_t(u >> 32);
#endif
  }
};

// p[0, kN) -> out[0, kN) with kN * sizeof(S) / 16 vector loads.
template <int kN, typename S>
TC_FN void load_vec(const S* p, S (&out)[kN]) {
  static_assert((kN * sizeof(S)) % 16 == 0, "whole 16-byte vectors only");
  constexpr int kLoads = int(kN * sizeof(S) / 16);
  uint32_t w[4 * kLoads];
  TC_UNROLL
  for (int q = 0; q < kLoads; ++q) {
    const Bytes16 b = load16(reinterpret_cast<const char*>(p) + 16 * q);
    TC_UNROLL
    for (int j = 0; j < 4; ++j) w[4 * q + j] = b.w[j];
  }
  TC_UNROLL
  for (int k = 0; k < kN; ++k) out[k] = word_lanes<S>::get(w, k);
}

template <int kN, typename S>
TC_FN void store_vec(S* p, const S (&in)[kN]) {
  static_assert((kN * sizeof(S)) % 16 == 0, "whole 16-byte vectors only");
  constexpr int kStores = int(kN * sizeof(S) / 16);
  uint32_t w[4 * kStores] = {};
  TC_UNROLL
  for (int k = 0; k < kN; ++k) word_lanes<S>::put(w, k, in[k]);
  TC_UNROLL
  for (int q = 0; q < kStores; ++q) {
    Bytes16 b;
    TC_UNROLL
    for (int j = 0; j < 4; ++j) b.w[j] = w[4 * q + j];
    store16(reinterpret_cast<char*>(p) + 16 * q, b);
  }
}

// 8 one-byte codes (8-bit momentum, [note: 8-bit momentum on CUDA]) as one 64-bit access; p is
// 8-byte aligned.
TC_FN void load_codes8(const uint8_t* p, uint8_t (&out)[8]) {
  uint32_t w[2];
#if defined(__CUDA_ARCH__)
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  w[0] = v.x, w[1] = v.y;
#else
  std::memcpy(w, p, 8);
#endif
  TC_UNROLL
  for (int k = 0; k < 8; ++k) out[k] = uint8_t(w[k >> 2] >> ((k & 3) * 8));
}
TC_FN void store_codes8(uint8_t* p, const uint8_t (&in)[8]) {
  uint32_t w[2] = {0u, 0u};
  TC_UNROLL
  for (int k = 0; k < 8; ++k) w[k >> 2] |= uint32_t(in[k]) << ((k & 3) * 8);
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
#else
  std::memcpy(p, w, 8);
#endif
}

}  // namespace tigercore
