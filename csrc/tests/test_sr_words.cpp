// test_sr_words.cpp — unit test of the CPU's vectorised stochastic-rounding words (csrc/cpu/sr_words.h)
// for every instruction set this processor runs (SSE2/generic, AVX2, AVX-512): the words of
// elements [first, first + count) must be those of sr_random_word (tigercore/philox.h, one Philox
// call per element, as the CUDA kernels compute them) for awkward starts (not multiples of 4 or of
// a vector), counts from 0 to a whole block, counters whose low half wraps, and 64-bit steps; and
// a block never writes past its buffer. Known answers: the seed-1234 words of docs/semantics.md.
// Build and run: ctest (CMakeLists.txt), or by hand
//   g++ -std=c++20 -O2 -ffp-contract=off -Icsrc/include -Icsrc csrc/tests/test_sr_words.cpp && ./a.out
#include <cstdint>
#include <cstdio>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>  // before any target pragma, as in csrc/cpu/kernels_*.cpp
#endif

#include "tigercore/philox.h"
#include "test_harness.h"

#define TC_ISA generic
#define TC_VEC_BYTES 16
#include "cpu/sr_words.h"
#undef TC_ISA
#undef TC_VEC_BYTES

#if defined(__x86_64__) || defined(_M_X64)
#define TC_X86 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#define TC_ISA avx2
#define TC_VEC_BYTES 32
#include "cpu/sr_words.h"
#undef TC_ISA
#undef TC_VEC_BYTES
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#endif
#define TC_ISA avx512
#define TC_VEC_BYTES 64
#include "cpu/sr_words.h"
#undef TC_ISA
#undef TC_VEC_BYTES
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

using namespace tigercore;

// One instruction set's sr_words behind a plain function pointer (compiled for that ISA above).
struct Isa {
  const char* name;
  bool supported;
  int64_t block, buf_words;
  const uint32_t* (*words)(const SrKey&, uint64_t, int64_t, uint32_t*);
};

#if defined(TC_X86)
__attribute__((target("avx2,fma,f16c")))
static const uint32_t* words_avx2(const SrKey& k, uint64_t first, int64_t count, uint32_t* buf) {
  return tigercore::cpu::avx2::sr_words(k, first, count, buf);
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
static const uint32_t* words_avx512(const SrKey& k, uint64_t first, int64_t count, uint32_t* buf) {
  return tigercore::cpu::avx512::sr_words(k, first, count, buf);
}
#endif
static const uint32_t* words_generic(const SrKey& k, uint64_t first, int64_t count, uint32_t* buf) {
  return tigercore::cpu::generic::sr_words(k, first, count, buf);
}

static std::vector<Isa> isas() {
  std::vector<Isa> out;
  out.push_back({"generic", true, tigercore::cpu::generic::kSrBlock, tigercore::cpu::generic::kSrBufWords, &words_generic});
#if defined(TC_X86)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  out.push_back({"avx2", avx2, tigercore::cpu::avx2::kSrBlock, tigercore::cpu::avx2::kSrBufWords, &words_avx2});
  out.push_back({"avx512", avx512, tigercore::cpu::avx512::kSrBlock, tigercore::cpu::avx512::kSrBufWords, &words_avx512});
#endif
  return out;
}

constexpr uint32_t kCanary = 0xA5A5A5A5u;

// The words of [first, first + count) against sr_random_word, element by element; the buffer is
// followed by canary words that must survive.
static void check_range(const Isa& isa, const SrKey& key, uint64_t first, int64_t count, Bulk& bulk) {
  std::vector<uint32_t> buf(size_t(isa.buf_words) + 64, kCanary);
  const uint32_t* w = isa.words(key, first, count, buf.data());
  bool ok = w >= buf.data() && w + count <= buf.data() + isa.buf_words;
  for (int64_t k = 0; ok && k < count; ++k) {
    const uint32_t want = sr_random_word(key.seed, key.param_id, key.step, first + uint64_t(k));
    if (w[k] != want) {
      ok = false;
      if (bulk.report())
        std::printf("    %s: seed %u p %u t %llu first %llu count %lld: word %lld is %08x, want %08x\n", isa.name,
                    key.seed, key.param_id, (unsigned long long)key.step, (unsigned long long)first,
                    (long long)count, (long long)k, w[k], want);
    }
  }
  for (size_t j = size_t(isa.buf_words); ok && j < buf.size(); ++j) {
    if (buf[j] != kCanary) {
      ok = false;
      if (bulk.report())
        std::printf("    %s: first %llu count %lld wrote past the buffer (word %zu)\n", isa.name,
                    (unsigned long long)first, (long long)count, j);
    }
  }
  if (ok) bulk.ok();
}

static void test_known_answers(const Isa& isa) {
  // seed 1234, parameter 0, step 0: elements 0..7 (docs/semantics.md, "Test vectors";
  // tests/test_precision_modes.py has the same words from the Python reference)
  const uint32_t want[8] = {0x2090b348u, 0xda7cf0abu, 0x4401906fu, 0xcbca470eu,
                            0x9eeede35u, 0x1cbe137cu, 0xfa277093u, 0x147edd50u};
  std::vector<uint32_t> buf(size_t(isa.buf_words));
  for (uint64_t first = 0; first < 8; ++first) {
    const uint32_t* w = isa.words(SrKey{1234u, 0u, 0u}, first, int64_t(8 - first), buf.data());
    bool same = true;
    for (uint64_t k = 0; k < 8 - first; ++k) same = same && w[k] == want[first + k];
    CHECK(same, "%s: known answer words from element %llu", isa.name, (unsigned long long)first);
  }
}

static void test_ranges(const Isa& isa) {
  const SrKey keys[] = {{1234u, 0u, 0u}, {1234u, 3u, (uint64_t(1) << 32) + 7}, {0xFFFFFFFFu, 0xFFFFFFFFu, ~uint64_t(0)},
                        {7u, 250u, 123456789u}};
  // starts: small, awkward (not multiples of 4, 8 or 16), near the low counter half's wrap
  // (element 4 * 2^32 is counter (0, 1)), and above 2^34
  std::vector<uint64_t> firsts;
  for (uint64_t f = 0; f < 70; ++f) firsts.push_back(f);
  for (uint64_t f : {uint64_t(4097), uint64_t(8191), uint64_t(8193), uint64_t(123457)}) firsts.push_back(f);
  const uint64_t wrap = uint64_t(4) << 32;
  for (uint64_t d = 0; d < 80; d += 1) firsts.push_back(wrap - d);
  for (uint64_t d : {1, 2, 3, 5}) firsts.push_back(wrap + d);
  firsts.push_back((uint64_t(1) << 34) + 6);
  firsts.push_back((uint64_t(3) << 33) - 13);
  const int64_t counts[] = {0, 1, 2, 3, 4, 5, 7, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 129, 255, 257, 509, 511, 512};
  Bulk bulk(isa.name);
  for (const SrKey& key : keys)
    for (uint64_t first : firsts)
      for (int64_t count : counts)
        if (count <= isa.block) check_range(isa, key, first, count, bulk);
  bulk.finish(__LINE__);
}

int main() {
  for (const Isa& isa : isas()) {
    if (!isa.supported) {
      std::printf("  --   %s: not supported by this processor, not run\n", isa.name);
      continue;
    }
    CHECK(isa.block % 32 == 0 && isa.block >= 64, "%s: kSrBlock %lld", isa.name, (long long)isa.block);
    test_known_answers(isa);
    test_ranges(isa);
  }
  std::printf("test_sr_words: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
