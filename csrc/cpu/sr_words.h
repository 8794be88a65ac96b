// sr_words.h — the stochastic-rounding words of a run of elements on the CPU, many Philox4x32-10
// counters at once: 16 per AVX-512 vector, 8 per AVX2 vector, 4 per SSE2 vector (one without x86).
// Included by optim_kernels.h inside its TC_ISA namespace; TC_VEC_BYTES picks the variant.
// The words are those of sr_random_word (tigercore/philox.h; docs/semantics.md, "Storage of
// bf16/fp16 parameters"), checked word for word in csrc/tests/test_sr_words.cpp; the reference is
// tigercore/reference/numerics.py (philox4x32, sr_random_words).
// No include guard: a translation unit includes it once per TC_ISA namespace (the kernels_*.cpp
// once, through optim_kernels.h; csrc/tests/test_sr_words.cpp once per instruction set).
#include "tigercore/optim_math.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#ifndef TC_ISA
#error "define TC_ISA (the namespace of this instruction-set variant) before including"
#endif

namespace tigercore {
namespace cpu {
namespace TC_ISA {

// [note: vectorised Philox]
// philox_block(k0, k1, t, q0, out) writes the 4 words of each of the counters q0 .. q0 + n - 1
// (n = kPhiloxWords / 4) to out[0 .. kPhiloxWords), word j of counter q0 + c at out[4c + j]: the
// words of elements 4 q0 .. 4 q0 + kPhiloxWords - 1 in element order. A vector lane holds one
// counter's x, y, z or w; mulhilo32 is two 32x32->64 multiplies (vpmuludq: the even lanes, then
// the odd lanes shifted down) whose halves are merged by lane. The lanes hold the counters in the
// order that the closing unpacks (a 4x4 transpose within each 128-bit lane) turn into element
// order, so no lane crosses a 128-bit boundary. The 64-bit counter's high half is hi(q0) plus the
// carry out of the low half's addition.
// Without TC_VEC_BYTES (test_mta.cpp compiles the CPU loops for the baseline ISA): SSE2.
#if defined(TC_VEC_BYTES) && TC_VEC_BYTES == 64
constexpr int kPhiloxWords = 64;
// Zero-masking forms with all lanes selected (the same instructions): GCC 12's unmasked forms
// start from _mm512_undefined_epi32(), which -Wmaybe-uninitialized flags once inlined here.
constexpr __mmask8 kAll8 = 0xFF;
constexpr __mmask16 kAll16 = 0xFFFF;
TC_FORCEINLINE __m512i philox_set1(uint32_t v) { return _mm512_set1_epi32(int(v)); }
TC_FORCEINLINE void philox_block(uint32_t k0, uint32_t k1, uint64_t t, uint64_t q0, uint32_t* out) {
  const __m512i off = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m512i x = _mm512_add_epi32(philox_set1(uint32_t(q0)), off);
  const __m512i q_hi = philox_set1(uint32_t(q0 >> 32));
  __m512i y = _mm512_mask_add_epi32(q_hi, _mm512_cmplt_epu32_mask(x, off), q_hi, philox_set1(1u));
  __m512i z = philox_set1(uint32_t(t)), w = philox_set1(uint32_t(t >> 32));
  const __m512i m0 = philox_set1(0xD2511F53u), m1 = philox_set1(0xCD9E8D57u);
  for (int round = 0; round < 10; ++round) {
    const __m512i e0 = _mm512_maskz_mul_epu32(kAll8, x, m0), o0 = _mm512_maskz_mul_epu32(kAll8, _mm512_maskz_srli_epi64(kAll8, x, 32), m0);
    const __m512i e1 = _mm512_maskz_mul_epu32(kAll8, z, m1), o1 = _mm512_maskz_mul_epu32(kAll8, _mm512_maskz_srli_epi64(kAll8, z, 32), m1);
    // even lanes: a shuffle swaps the halves of each 64-bit product; odd lanes: the other product
    const __m512i hi0 = _mm512_mask_shuffle_epi32(o0, 0x5555, e0, _MM_PERM_CDAB);
    const __m512i lo0 = _mm512_mask_shuffle_epi32(e0, 0xAAAA, o0, _MM_PERM_CDAB);
    const __m512i hi1 = _mm512_mask_shuffle_epi32(o1, 0x5555, e1, _MM_PERM_CDAB);
    const __m512i lo1 = _mm512_mask_shuffle_epi32(e1, 0xAAAA, o1, _MM_PERM_CDAB);
    x = _mm512_ternarylogic_epi32(hi1, y, philox_set1(k0), 0x96);  // three-way xor
    z = _mm512_ternarylogic_epi32(hi0, w, philox_set1(k1), 0x96);
    y = lo1;
    w = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const __m512i xy_lo = _mm512_maskz_unpacklo_epi32(kAll16, x, y), xy_hi = _mm512_maskz_unpackhi_epi32(kAll16, x, y);
  const __m512i zw_lo = _mm512_maskz_unpacklo_epi32(kAll16, z, w), zw_hi = _mm512_maskz_unpackhi_epi32(kAll16, z, w);
  _mm512_storeu_si512(out, _mm512_maskz_unpacklo_epi64(kAll8, xy_lo, zw_lo));
  _mm512_storeu_si512(out + 16, _mm512_maskz_unpackhi_epi64(kAll8, xy_lo, zw_lo));
  _mm512_storeu_si512(out + 32, _mm512_maskz_unpacklo_epi64(kAll8, xy_hi, zw_hi));
  _mm512_storeu_si512(out + 48, _mm512_maskz_unpackhi_epi64(kAll8, xy_hi, zw_hi));
}
#elif defined(TC_VEC_BYTES) && TC_VEC_BYTES == 32
constexpr int kPhiloxWords = 32;
TC_FORCEINLINE __m256i philox_set1(uint32_t v) { return _mm256_set1_epi32(int(v)); }
TC_FORCEINLINE void philox_block(uint32_t k0, uint32_t k1, uint64_t t, uint64_t q0, uint32_t* out) {
  const __m256i off = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256i x0 = _mm256_add_epi32(philox_set1(uint32_t(q0)), off);
  const __m256i flip = philox_set1(0x80000000u);  // unsigned x0 < off as a signed compare
  const __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(off, flip), _mm256_xor_si256(x0, flip));
  __m256i x = x0, y = _mm256_sub_epi32(philox_set1(uint32_t(q0 >> 32)), carry);  // carry is 0 or -1
  __m256i z = philox_set1(uint32_t(t)), w = philox_set1(uint32_t(t >> 32));
  const __m256i m0 = philox_set1(0xD2511F53u), m1 = philox_set1(0xCD9E8D57u);
  for (int round = 0; round < 10; ++round) {
    const __m256i e0 = _mm256_mul_epu32(x, m0), o0 = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m0);
    const __m256i e1 = _mm256_mul_epu32(z, m1), o1 = _mm256_mul_epu32(_mm256_srli_epi64(z, 32), m1);
    const __m256i hi0 = _mm256_blend_epi32(_mm256_shuffle_epi32(e0, 0xB1), o0, 0xAA);
    const __m256i lo0 = _mm256_blend_epi32(e0, _mm256_shuffle_epi32(o0, 0xB1), 0xAA);
    const __m256i hi1 = _mm256_blend_epi32(_mm256_shuffle_epi32(e1, 0xB1), o1, 0xAA);
    const __m256i lo1 = _mm256_blend_epi32(e1, _mm256_shuffle_epi32(o1, 0xB1), 0xAA);
    x = _mm256_xor_si256(_mm256_xor_si256(hi1, y), philox_set1(k0));
    z = _mm256_xor_si256(_mm256_xor_si256(hi0, w), philox_set1(k1));
    y = lo1;
    w = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const __m256i xy_lo = _mm256_unpacklo_epi32(x, y), xy_hi = _mm256_unpackhi_epi32(x, y);
  const __m256i zw_lo = _mm256_unpacklo_epi32(z, w), zw_hi = _mm256_unpackhi_epi32(z, w);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_unpacklo_epi64(xy_lo, zw_lo));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_unpackhi_epi64(xy_lo, zw_lo));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), _mm256_unpacklo_epi64(xy_hi, zw_hi));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 24), _mm256_unpackhi_epi64(xy_hi, zw_hi));
}
#elif defined(__SSE2__)
constexpr int kPhiloxWords = 16;
TC_FORCEINLINE __m128i philox_set1(uint32_t v) { return _mm_set1_epi32(int(v)); }
TC_FORCEINLINE void philox_block(uint32_t k0, uint32_t k1, uint64_t t, uint64_t q0, uint32_t* out) {
  const __m128i off = _mm_setr_epi32(0, 1, 2, 3);
  const __m128i x0 = _mm_add_epi32(philox_set1(uint32_t(q0)), off);
  const __m128i flip = philox_set1(0x80000000u);
  const __m128i carry = _mm_cmpgt_epi32(_mm_xor_si128(off, flip), _mm_xor_si128(x0, flip));
  __m128i x = x0, y = _mm_sub_epi32(philox_set1(uint32_t(q0 >> 32)), carry);
  __m128i z = philox_set1(uint32_t(t)), w = philox_set1(uint32_t(t >> 32));
  const __m128i m0 = philox_set1(0xD2511F53u), m1 = philox_set1(0xCD9E8D57u);
  const __m128i odd = _mm_setr_epi32(0, -1, 0, -1);  // SSE2 has no blend: and/andnot/or
  for (int round = 0; round < 10; ++round) {
    const __m128i e0 = _mm_mul_epu32(x, m0), o0 = _mm_mul_epu32(_mm_srli_epi64(x, 32), m0);
    const __m128i e1 = _mm_mul_epu32(z, m1), o1 = _mm_mul_epu32(_mm_srli_epi64(z, 32), m1);
    const __m128i hi0 = _mm_or_si128(_mm_srli_epi64(e0, 32), _mm_and_si128(o0, odd));
    const __m128i lo0 = _mm_or_si128(_mm_andnot_si128(odd, e0), _mm_slli_epi64(o0, 32));
    const __m128i hi1 = _mm_or_si128(_mm_srli_epi64(e1, 32), _mm_and_si128(o1, odd));
    const __m128i lo1 = _mm_or_si128(_mm_andnot_si128(odd, e1), _mm_slli_epi64(o1, 32));
    x = _mm_xor_si128(_mm_xor_si128(hi1, y), philox_set1(k0));
    z = _mm_xor_si128(_mm_xor_si128(hi0, w), philox_set1(k1));
    y = lo1;
    w = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const __m128i xy_lo = _mm_unpacklo_epi32(x, y), xy_hi = _mm_unpackhi_epi32(x, y);
  const __m128i zw_lo = _mm_unpacklo_epi32(z, w), zw_hi = _mm_unpackhi_epi32(z, w);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_unpacklo_epi64(xy_lo, zw_lo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4), _mm_unpackhi_epi64(xy_lo, zw_lo));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 8), _mm_unpacklo_epi64(xy_hi, zw_hi));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 12), _mm_unpackhi_epi64(xy_hi, zw_hi));
}
#else
constexpr int kPhiloxWords = 4;
TC_FORCEINLINE void philox_block(uint32_t k0, uint32_t k1, uint64_t t, uint64_t q0, uint32_t* out) {
  const uint4x32 r = philox4x32_10(uint4x32{uint32_t(q0), uint32_t(q0 >> 32), uint32_t(t), uint32_t(t >> 32)}, k0, k1);
  out[0] = r.x;
  out[1] = r.y;
  out[2] = r.z;
  out[3] = r.w;
}
#endif

// [note: stochastic rounding words on the CPU]
// The loops take a range's words in blocks of kSrBlock elements from a buffer on the stack
// (SrStream below): the words of a block are computed first, kPhiloxWords at a time, and the
// update loop then reads them by element index while they are in L1. The words of elements
// [first, first + count) are a function of (seed, param_id, step, first, count) only, so a caller
// that numbers its elements from an offset passes first = offset + its own index.
// Before computing a block's words the loops prefetch the block's parameter, gradient and
// momentum (sr_prefetch), so that memory is read while Philox computes instead of after it: on a
// 16.8M-element tensor, one thread, this took the stochastic step from 1.10x to 0.95x the master
// mode's time for Lion and from 1.15x to 0.99x for Tiger (bench/bench_sr.py, docs/sr_speed.md).
// Blocks of 256 elements measured best (128-512 are within ~10%; without the prefetch the block
// length barely matters).
constexpr int64_t kSrBlock = 256;  // a multiple of kLanes (optim_kernels.h) and of kPhiloxWords
constexpr int64_t kSrBufWords = kSrBlock + kPhiloxWords;  // a block's words start at an element 4q
static_assert(kSrBlock % kPhiloxWords == 0, "kSrBlock must hold whole Philox blocks");

// Writes the words of elements [first, first + count) (count <= kSrBlock) to buf, which starts
// at element 4 floor(first / 4), and returns a pointer to the word of element `first`.
TC_FORCEINLINE const uint32_t* sr_words(const SrKey& key, uint64_t first, int64_t count, uint32_t* buf) {
  const uint64_t q0 = first >> 2;
  const int64_t n = int64_t(first & 3u) + count;
  for (int64_t j = 0; j < n; j += kPhiloxWords) philox_block(key.seed, key.param_id, key.step, q0 + uint64_t(j >> 2), buf + j);
  return buf + (first & 3u);
}

// Prefetches elements [b, e) of each array (kStochastic only: other modes have no compute phase
// to hide the reads behind, and the hardware prefetcher streams them).
template <typename S>
TC_FORCEINLINE void prefetch_range(const S* p, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; i += int64_t(64 / sizeof(S))) __builtin_prefetch(p + i, 0, 3);
}
template <Precision kMode, typename... S>
TC_FORCEINLINE void sr_prefetch(int64_t b, int64_t e, const S*... arrays) {
  if constexpr (kMode == Precision::kStochastic) (prefetch_range(arrays, b, e), ...);
}

// The word of element i of a block that starts at element b.
struct BlockWords {
  const uint32_t* words;
  int64_t b;
  TC_FORCEINLINE uint32_t operator[](int64_t i) const { return words[i - b]; }
};
struct NoWords {  // modes other than stochastic read no words
  TC_FORCEINLINE uint32_t operator[](int64_t) const { return 0u; }
};

// SrStream<kMode>(key, offset): block_len(begin, end) is the length of the blocks a loop over
// [begin, end) runs in (kSrBlock for kStochastic; the whole range otherwise), words(b, e) the
// words of the block [b, e) of local elements, read as words[i] for b <= i < e. The counter of
// local element i is i + offset: a shard of a distributed tensor passes the flat offset of its
// first element in the logical tensor (elem_offsets), so it rounds as the whole tensor would.
template <Precision kMode>
struct SrStream {
  SrStream(const SrKey&, int64_t) {}
  static int64_t block_len(int64_t begin, int64_t end) { return end > begin ? end - begin : 1; }
  TC_FORCEINLINE NoWords words(int64_t, int64_t) { return {}; }
};
template <>
struct SrStream<Precision::kStochastic> {
  SrKey key;
  int64_t offset;  // the counter of local element i is i + offset
  alignas(64) uint32_t buf[kSrBufWords];
  SrStream(const SrKey& k, int64_t off) : key(k), offset(off) {}
  static int64_t block_len(int64_t, int64_t) { return kSrBlock; }
  TC_FORCEINLINE BlockWords words(int64_t b, int64_t e) { return {sr_words(key, uint64_t(b + offset), e - b, buf), b}; }
};

}  // namespace TC_ISA
}  // namespace cpu
}  // namespace tigercore
