// test_math.cpp — unit test of the torch-free element math in csrc/include/tigercore/ (float_bits.h,
// philox.h, optim_math.h, step_desc.h, dpm_math.h), the same headers the per-ISA CPU kernels and the CUDA kernels
// compile. No torch, no test framework: CHECK counts, and main returns non-zero on any failure.
// Expected values are known answers (written out below with their inputs) and oracles written here
// independently of the headers (double arithmetic for rounding, ldexp for decoding).
// Build and run: ctest (CMakeLists.txt, TIGERCORE_BUILD_TESTS=ON), or by hand
//   g++ -std=c++20 -O2 -ffp-contract=off -Icsrc/include csrc/tests/test_math.cpp && ./a.out
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "tigercore/dpm_math.h"
#include "tigercore/float_bits.h"
#include "tigercore/optim_math.h"
#include "tigercore/step_desc.h"
#include "tigercore/philox.h"
#include "test_harness.h"

using namespace tigercore;

// ---- independent oracles ----------------------------------------------------------------------

// Decode a binary16 / bfloat16 bit pattern with ldexp (not the header's bit tricks).
static double oracle_fp16_decode(uint16_t h) {
  const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : s * INFINITY;
  if (e == 0) return s * std::ldexp(double(m), -24);
  return s * std::ldexp(double(1024 + m), e - 25);
}
static double oracle_bf16_decode(uint16_t h) {
  const int e = (h >> 7) & 0xFF, m = h & 0x7F;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 255) return m ? std::numeric_limits<double>::quiet_NaN() : s * INFINITY;
  if (e == 0) return s * std::ldexp(double(m), -133);
  return s * std::ldexp(double(128 + m), e - 134);
}

// Round a non-negative finite magnitude to a binary format with `frac` fraction bits, minimum
// normal exponent `emin` and largest finite value `maxv`: find the two neighbouring grid points
// (spacing 2^(max(floor(log2 a), emin) - frac)) and take the nearest, ties to the even multiple;
// above maxv the result overflows to +inf. All of it is exact in double for float inputs.
static double oracle_round(double a, int frac, int emin, double maxv) {
  if (a == 0) return 0;
  int e2;
  std::frexp(a, &e2);  // a = f * 2^e2, f in [0.5, 1): floor(log2 a) = e2 - 1
  const double ulp = std::ldexp(1.0, std::max(e2 - 1, emin) - frac);
  const double k = std::floor(a / ulp);
  const double lo = k * ulp, hi = (k + 1) * ulp;
  const double dlo = a - lo, dhi = hi - a;
  double r;
  if (dlo < dhi) r = lo;
  else if (dhi < dlo) r = hi;
  else r = std::fmod(k, 2.0) == 0.0 ? lo : hi;
  return r > maxv ? INFINITY : r;
}
static const double kFp16Max = 65504.0;
static const double kBf16Max = std::ldexp(255.0, 120);  // (2 - 2^-7) * 2^127

// Expected bit patterns (non-NaN inputs), built from the rounded value independently.
static uint16_t oracle_fp16_encode(double v, bool neg) {
  const uint16_t s = neg ? 0x8000 : 0;
  if (std::isinf(v)) return s | 0x7C00;
  if (v == 0) return s;
  int e2;
  std::frexp(v, &e2);
  const int e = e2 - 1;  // v = 1.m * 2^e
  if (e < -14) return s | uint16_t(std::ldexp(v, 24));  // subnormal: m * 2^-24
  const int m = int(std::ldexp(v, 10 - e)) - 1024;
  return s | uint16_t(((e + 15) << 10) | m);
}
static uint16_t oracle_bf16_encode(double v, bool neg) {
  const uint16_t s = neg ? 0x8000 : 0;
  if (std::isinf(v)) return s | 0x7F80;
  if (v == 0) return s;
  int e2;
  std::frexp(v, &e2);
  const int e = e2 - 1;
  if (e < -126) return s | uint16_t(std::ldexp(v, 133));
  const int m = int(std::ldexp(v, 7 - e)) - 128;
  return s | uint16_t(((e + 127) << 7) | m);
}
static uint16_t oracle_fp16_rne(float x) {
  return oracle_fp16_encode(oracle_round(std::fabs(double(x)), 10, -14, kFp16Max), std::signbit(x));
}
static uint16_t oracle_bf16_rne(float x) {
  return oracle_bf16_encode(oracle_round(std::fabs(double(x)), 7, -126, kBf16Max), std::signbit(x));
}

static bool fp16_is_nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0; }
static bool bf16_is_nan(uint16_t h) { return (h & 0x7F80) == 0x7F80 && (h & 0x007F) != 0; }

// ---- float_bits.h ---------------------------------------------------------------------------

static void test_exhaustive_round_trip() {
#if defined(TC_HAS_FLOAT16)
  std::printf("exhaustive bf16/fp16 -> float -> bf16/fp16 (storage<half_t> converts with _Float16)\n");
#else
  std::printf("exhaustive bf16/fp16 -> float -> bf16/fp16 (storage<half_t> uses the integer code)\n");
#endif
  Bulk bf("bf16 decode + round trip"), hf("fp16 decode + round trip");
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    {  // bf16
      const float f = bf16_to_float(h);
      const double want = oracle_bf16_decode(h);
      const uint16_t back = float_to_bf16_rne(f);
      const bool ok = bf16_is_nan(h) ? (std::isnan(f) && bf16_is_nan(back) && (back & 0x8000) == (h & 0x8000))
                                     : (double(f) == want && std::signbit(f) == bool(h & 0x8000) && back == h);
      if (ok) bf.ok();
      else if (bf.report()) std::printf("    bf16 %04x -> %.9g -> %04x\n", h, double(f), back);
    }
    {  // fp16
      const float f = fp16_to_float(h);
      const half_t stored{h};
      const float fs = storage<half_t>::load(&stored, 0);  // may be the _Float16 path on the CPU
      const double want = oracle_fp16_decode(h);
      const uint16_t back = float_to_fp16_rne(f);
      const bool ok = fp16_is_nan(h) ? (std::isnan(f) && std::isnan(fs) && fp16_is_nan(back))
                                     : (double(f) == want && fbits(fs) == fbits(f) &&
                                        std::signbit(f) == bool(h & 0x8000) && back == h);
      if (ok) hf.ok();
      else if (hf.report()) std::printf("    fp16 %04x -> %.9g -> %04x\n", h, double(f), back);
    }
  }
  bf.finish(__LINE__);
  hf.finish(__LINE__);
  CHECK(bf.cases == 65536 && hf.cases == 65536);
}

// Compare one float against the oracles (both formats); NaN inputs must give NaN. The storage<>
// stores (on the CPU, storage<half_t> may convert with _Float16 instead of float_to_fp16_rne;
// see [note: fp16 conversion on the CPU]) must give the same bits as the integer code, which is
// what the CUDA kernels use.
static void check_rne_one(float x, Bulk& bf, Bulk& hf) {
  const uint16_t b = float_to_bf16_rne(x), h = float_to_fp16_rne(x);
  bfloat16_t sb{0};
  half_t sh{0};
  storage<bfloat16_t>::store(&sb, 0, x);
  storage<half_t>::store(&sh, 0, x);
  if (std::isnan(x)) {
    if (bf16_is_nan(b) && bf16_is_nan(sb.bits)) bf.ok();
    else if (bf.report()) std::printf("    bf16(NaN %08x) = %04x, storage %04x\n", fbits(x), b, sb.bits);
    if (fp16_is_nan(h) && fp16_is_nan(sh.bits)) hf.ok();
    else if (hf.report()) std::printf("    fp16(NaN %08x) = %04x, storage %04x\n", fbits(x), h, sh.bits);
    return;
  }
  const uint16_t wb = oracle_bf16_rne(x), wh = oracle_fp16_rne(x);
  if (b == wb && sb.bits == wb) bf.ok();
  else if (bf.report())
    std::printf("    bf16(%.9g = %08x) = %04x, storage %04x, oracle %04x\n", double(x), fbits(x), b, sb.bits, wb);
  if (h == wh && sh.bits == wh) hf.ok();
  else if (hf.report())
    std::printf("    fp16(%.9g = %08x) = %04x, storage %04x, oracle %04x\n", double(x), fbits(x), h, sh.bits, wh);
}

static void check_rne_around(float x, Bulk& bf, Bulk& hf) {
  for (float y : {x, std::nextafter(x, INFINITY), std::nextafter(x, -INFINITY)}) {
    check_rne_one(y, bf, hf);
    check_rne_one(-y, bf, hf);
  }
}

static void test_rne_boundaries() {
  std::printf("float -> bf16/fp16 round-to-nearest-even: grid points, midpoints, specials\n");
  Bulk bf("bf16 RNE vs oracle (boundaries)"), hf("fp16 RNE vs oracle (boundaries)");
  // Every finite non-negative grid point, the midpoint to the next one, and their float
  // neighbours, both signs. The midpoint above the largest finite value is the overflow tie.
  for (uint32_t h = 0; h <= 0x7BFF; ++h) {
    const double v = oracle_fp16_decode(uint16_t(h));
    const double next = h == 0x7BFF ? 65536.0 : oracle_fp16_decode(uint16_t(h + 1));
    check_rne_around(float(v), bf, hf);
    check_rne_around(float((v + next) / 2), bf, hf);
  }
  for (uint32_t h = 0; h <= 0x7F7F; ++h) {
    const double v = oracle_bf16_decode(uint16_t(h));
    const double next = h == 0x7F7F ? std::ldexp(1.0, 128) : oracle_bf16_decode(uint16_t(h + 1));
    check_rne_around(float(v), bf, hf);
    check_rne_around(float((v + next) / 2), bf, hf);
  }
  const float specials[] = {0.0f, INFINITY, std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(),
                            65504.0f, 65519.99609375f, 65520.0f, 65536.0f, 1e-8f, 2.98023224e-8f /*2^-25*/,
                            5.96046448e-8f /*2^-24*/, 6.103515625e-05f /*2^-14*/, 1.0f, 3.0f};
  for (float s : specials) check_rne_around(s, bf, hf);
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7FBFFFFFu, 0xFFC00000u, 0xFF800001u, 0x7FFFFFFFu})
    check_rne_one(bitsf(nan), bf, hf);
  bf.finish(__LINE__);
  hf.finish(__LINE__);

  // Named cases from the spec and IEEE 754.
  CHECK(float_to_fp16_rne(65519.99609375f) == 0x7BFF);
  CHECK(float_to_fp16_rne(65520.0f) == 0x7C00, "65520 is the overflow tie: rounds to Inf");
  CHECK(float_to_fp16_rne(-65520.0f) == 0xFC00);
  CHECK(float_to_fp16_rne(std::ldexp(1.0f, -25)) == 0x0000, "2^-25 ties to 0");
  CHECK(float_to_fp16_rne(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
  CHECK(float_to_fp16_rne(std::ldexp(3.0f, -25)) == 0x0002, "3*2^-25 ties to even 2*2^-24");
  CHECK(float_to_fp16_rne(-0.0f) == 0x8000);
  CHECK(float_to_fp16_rne(-1e-10f) == 0x8000, "tiny negatives keep their sign");
  CHECK(fp16_is_nan(float_to_fp16_rne(NAN)));
  CHECK(float_to_bf16_rne(1.00390625f) == 0x3F80, "tie to even (down)");
  CHECK(float_to_bf16_rne(1.01171875f) == 0x3F82, "tie to even (up)");
  CHECK(float_to_bf16_rne(std::numeric_limits<float>::max()) == 0x7F80);
  CHECK(float_to_bf16_rne(-0.0f) == 0x8000);
  CHECK(bf16_is_nan(float_to_bf16_rne(bitsf(0x7F800001u))), "a signalling NaN whose payload sits in the low bits stays NaN");
}

static void test_rne_random() {
  std::printf("float -> bf16/fp16 round-to-nearest-even: random floats\n");
  Bulk bf("bf16 RNE vs oracle (random)"), hf("fp16 RNE vs oracle (random)");
  Rng rng(20240601);
  for (int i = 0; i < 2000000; ++i) check_rne_one(bitsf(rng.u32()), bf, hf);  // every exponent
  for (int i = 0; i < 2000000; ++i) {  // exponents 2^-27 .. 2^17: the fp16 range and its edges
    const uint32_t u = rng.u32();
    const uint32_t e = 100u + (u >> 8) % 45u;
    check_rne_one(bitsf((u & 0x80000000u) | (e << 23) | (rng.u32() & 0x7FFFFFu)), bf, hf);
  }
  bf.finish(__LINE__);
  hf.finish(__LINE__);
}

static void test_storage_traits() {
  std::printf("storage<> traits\n");
  static_assert(sizeof(half_t) == 2 && sizeof(bfloat16_t) == 2);
  static_assert(std::is_same_v<storage<half_t>::opmath, float> && std::is_same_v<storage<bfloat16_t>::opmath, float>);
  static_assert(std::is_same_v<storage<double>::opmath, double>);
  half_t h[2] = {};
  bfloat16_t b[2] = {};
  storage<half_t>::store(h, 1, 0.1f);
  storage<bfloat16_t>::store(b, 1, 0.1f);
  CHECK(h[1].bits == 0x2E66 && storage<half_t>::load(h, 1) == 0.0999755859375f);
  CHECK(b[1].bits == 0x3DCD && storage<bfloat16_t>::load(b, 1) == 0.10009765625f);
  CHECK(h[0].bits == 0 && b[0].bits == 0);
  CHECK(is_finite_bits(1.0f) && is_finite_bits(-0.0) && is_finite_bits(std::numeric_limits<float>::max()));
  CHECK(!is_finite_bits(INFINITY) && !is_finite_bits(-INFINITY) && !is_finite_bits(NAN));
  CHECK(!is_finite_bits(double(INFINITY)) && !is_finite_bits(std::nan("")) && is_finite_bits(1e308));
}

// ---- philox.h ---------------------------------------------------------------------------------

static bool eq4(uint4x32 r, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  return r.x == a && r.y == b && r.z == c && r.w == d;
}

static void test_philox() {
  std::printf("Philox4x32-10 known answers\n");
  // Random123 tests/kat_vectors (counter, key -> output).
  uint4x32 r = philox4x32_10({0, 0, 0, 0}, 0, 0);
  CHECK(eq4(r, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8), "%08x %08x %08x %08x", r.x, r.y, r.z, r.w);
  r = philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, 0xffffffff, 0xffffffff);
  CHECK(eq4(r, 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd), "%08x %08x %08x %08x", r.x, r.y, r.z, r.w);
  r = philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, 0xa4093822, 0x299f31d0);
  CHECK(eq4(r, 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1), "%08x %08x %08x %08x", r.x, r.y, r.z, r.w);

  // Known answer: seed 1234, p 0, t 0.
  const uint32_t want[8] = {0x2090b348, 0xda7cf0ab, 0x4401906f, 0xcbca470e,
                            0x9eeede35, 0x1cbe137c, 0xfa277093, 0x147edd50};
  r = philox4x32_10({0, 0, 0, 0}, 1234, 0);
  CHECK(eq4(r, want[0], want[1], want[2], want[3]), "%08x %08x %08x %08x", r.x, r.y, r.z, r.w);
  r = philox4x32_10({1, 0, 0, 0}, 1234, 0);
  CHECK(eq4(r, want[4], want[5], want[6], want[7]), "%08x %08x %08x %08x", r.x, r.y, r.z, r.w);
  for (uint64_t i = 0; i < 8; ++i) {
    const uint32_t w = sr_random_word(1234, 0, 0, i);
    CHECK(w == want[i], "i=%" PRIu64 ": %08x", i, w);
  }
  // seed 1234, p 3, t = 2^32 + 7, i = 2^34 + 6: q = 2^32 + 1 -> counter (1, 1, 7, 1), word 2.
  const uint64_t t = (uint64_t(1) << 32) + 7, i = (uint64_t(1) << 34) + 6;
  r = philox4x32_10({1, 1, 7, 1}, 1234, 3);
  CHECK(eq4(r, 0xc5ae0181, 0x21e6ad28, 0xf965cf09, 0x486bc91d), "%08x %08x %08x %08x", r.x, r.y, r.z, r.w);
  CHECK(sr_random_word(1234, 3, t, i) == 0xf965cf09u, "%08x", sr_random_word(1234, 3, t, i));
  // The stream depends on every key and counter word.
  const uint32_t base = sr_random_word(1234, 3, t, i);
  CHECK(sr_random_word(1235, 3, t, i) != base && sr_random_word(1234, 4, t, i) != base &&
        sr_random_word(1234, 3, t + 1, i) != base && sr_random_word(1234, 3, t ^ (uint64_t(1) << 32), i) != base &&
        sr_random_word(1234, 3, t, i + 4) != base && sr_random_word(1234, 3, t, i ^ (uint64_t(1) << 34)) != base);
  uint32_t hi_lo, lo_lo;
  mulhilo32(0xD2511F53u, 0xFFFFFFFFu, hi_lo, lo_lo);
  CHECK(hi_lo == 0xD2511F52u && lo_lo == 0x2DAEE0ADu, "%08x %08x", hi_lo, lo_lo);
}

static void test_sr_bf16() {
  std::printf("stochastic rounding to bf16\n");
  // Known answer: 1.00390625 is a tie between 1.0 and 1.0078125.
  const float want[8] = {1.0f, 1.0078125f, 1.0f, 1.0078125f, 1.0078125f, 1.0f, 1.0078125f, 1.0f};
  for (uint64_t i = 0; i < 8; ++i) {
    const uint32_t r = sr_random_word(1234, 0, 0, i);
    const float up = bf16_to_float(float_to_bf16_stochastic(1.00390625f, r));
    const float dn = bf16_to_float(float_to_bf16_stochastic(-1.00390625f, r));
    CHECK(up == want[i] && dn == -want[i], "i=%" PRIu64 ": %.9g %.9g", i, double(up), double(dn));
  }
  CHECK(float_to_bf16_stochastic(NAN, 0xFFFFFFFFu) == 0x7FC0);
  CHECK(float_to_bf16_stochastic(-NAN, 0) == 0x7FC0);
  CHECK(float_to_bf16_stochastic(INFINITY, 0xFFFFFFFFu) == 0x7F80);
  CHECK(float_to_bf16_stochastic(-INFINITY, 0xFFFFFFFFu) == 0xFF80);
  CHECK(float_to_bf16_stochastic(-0.0f, 0xFFFFFFFFu) == 0x8000);

  // Random inputs: the result is one of the two neighbours (x toward zero, next away from zero),
  // and it is the upper one iff the top 16 random bits reach 2^16 - (the 16 discarded bits).
  Bulk b("bf16 SR neighbours and rule");
  Rng rng(7);
  for (int k = 0; k < 1000000; ++k) {
    uint32_t u = rng.u32();
    if ((u & 0x7F800000u) == 0x7F800000u) u &= 0xBFFFFFFFu;  // keep finite
    const float x = bitsf(u);
    const uint32_t r = rng.u32();
    const uint16_t got = float_to_bf16_stochastic(x, r);
    const uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
    const uint32_t discarded = u & 0xFFFFu;
    const uint16_t want_bits = (discarded != 0 && (r >> 16) >= 0x10000u - discarded) ? hi : lo;
    // The neighbours, by value: lo <= |x| < hi.
    const double a = std::fabs(double(x)), vlo = std::fabs(oracle_bf16_decode(lo)), vhi = std::fabs(oracle_bf16_decode(hi));
    if (got == want_bits && vlo <= a && a < vhi) b.ok();
    else if (b.report()) std::printf("    x=%08x r=%08x got %04x want %04x\n", u, r, got, want_bits);
  }
  for (uint32_t h = 0; h < 65536; ++h) {  // representable values never move
    if (bf16_is_nan(uint16_t(h))) continue;
    const uint32_t r = rng.u32();
    if (float_to_bf16_stochastic(bf16_to_float(uint16_t(h)), r) == h) b.ok();
    else if (b.report()) std::printf("    exact %04x moved\n", h);
  }
  b.finish(__LINE__);

  // Known answer: a step of -1e-4 from w = 0.5 gives fp32(0.5 - 1e-4), which rounds down
  // (to 0.498046875) with probability 0.0512; the mean change of w over 10^4 draws is
  // -1e-4 +- 4.3e-6 (1 SE). Assert 4 SE.
  const float x = 0.5f - 1e-4f;
  double sum = 0;
  int down = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    const float y = bf16_to_float(float_to_bf16_stochastic(x, sr_random_word(1234, 0, 0, i)));
    if (y != 0.5f) ++down;
    sum += double(y) - 0.5;
  }
  const double mean = sum / 10000;
  CHECK(std::fabs(mean - (-1e-4)) <= 4 * 4.3e-6, "mean change %.4g, %d of 10000 down", mean, down);
}

static void test_sr_fp16() {
  std::printf("stochastic rounding to fp16\n");
  // Representable values never change, whatever r.
  Bulk exact("fp16 SR keeps representable values");
  Rng rng(99);
  for (uint32_t h = 0; h < 65536; ++h) {
    if (fp16_is_nan(uint16_t(h))) continue;
    const float f = fp16_to_float(uint16_t(h));
    for (uint32_t r : {0u, 0xFFFFFFFFu, rng.u32()}) {
      if (float_to_fp16_stochastic(f, r) == h) exact.ok();
      else if (exact.report()) std::printf("    %04x with r=%08x -> %04x\n", h, r, float_to_fp16_stochastic(f, r));
    }
  }
  exact.finish(__LINE__);

  // Random x against the stochastic-rounding rule ([note: precision modes]), evaluated in double: lo = x toward zero,
  // hi = the next fp16 away from zero (Inf beyond 65504, spacing 32); hi iff
  // (r >> 8) < 2^24 (|x| - |lo|) / (|hi| - |lo|).
  Bulk rule("fp16 SR rule vs double oracle");
  for (int k = 0; k < 2000000; ++k) {
    const uint32_t u = rng.u32();
    const uint32_t e = 95u + (u >> 8) % 50u;  // 2^-32 .. 2^17
    const float x = bitsf((u & 0x80000000u) | (e << 23) | (rng.u32() & 0x7FFFFFu));
    const uint32_t r = rng.u32();
    const double a = std::fabs(double(x));
    double lo, hi;
    if (a >= kFp16Max) {
      lo = kFp16Max;
      hi = kFp16Max + 32;
    } else {
      int e2;
      std::frexp(a, &e2);
      const double ulp = std::ldexp(1.0, std::max(e2 - 1, -14) - 10);
      lo = std::floor(a / ulp) * ulp;
      hi = lo + ulp;
    }
    const bool up = double(r >> 8) < std::ldexp(1.0, 24) * (a - lo) / (hi - lo);
    const double v = up ? (hi > kFp16Max ? INFINITY : hi) : lo;
    const uint16_t want = oracle_fp16_encode(v, std::signbit(x));
    const uint16_t got = float_to_fp16_stochastic(x, r);
    if (got == want) rule.ok();
    else if (rule.report()) std::printf("    x=%.9g r=%08x got %04x want %04x\n", double(x), r, got, want);
  }
  rule.finish(__LINE__);

  // Beyond 65504: 65504 or Inf only; from 65536 on (and at Inf) always Inf. NaN -> NaN.
  Bulk big("fp16 SR beyond 65504");
  int to_inf = 0, n = 0;
  for (int k = 0; k < 100000; ++k) {
    const float x = 65504.0f + float(rng.u32() % 32768) / 1024.0f;  // [65504, 65536)
    const uint16_t got = float_to_fp16_stochastic(-x, rng.u32());
    if (got == 0xFBFF || got == 0xFC00) big.ok();
    else if (big.report()) std::printf("    -%.9g -> %04x\n", double(x), got);
    to_inf += got == 0xFC00;
    ++n;
  }
  big.finish(__LINE__);
  CHECK(std::fabs(double(to_inf) / n - 0.5) < 0.01, "P(Inf) over [65504, 65536) = %.4f, want 0.5", double(to_inf) / n);
  for (float x : {65536.0f, 70000.0f, 1e30f, INFINITY}) {
    CHECK(float_to_fp16_stochastic(x, 0xFFFFFFFFu) == 0x7C00 && float_to_fp16_stochastic(-x, 0xFFFFFFFFu) == 0xFC00,
          "x=%.9g", double(x));
  }
  CHECK(float_to_fp16_stochastic(65504.0f + 16.0f, 0x7FFFFF00u) == 0x7C00 &&
        float_to_fp16_stochastic(65504.0f + 16.0f, 0x80000000u) == 0x7BFF, "65520 rounds up with probability 1/2");
  CHECK(fp16_is_nan(float_to_fp16_stochastic(NAN, 0)) && fp16_is_nan(float_to_fp16_stochastic(-NAN, 0xFFFFFFFFu)));
  CHECK(float_to_fp16_stochastic(-0.0f, 0) == 0x8000 && float_to_fp16_stochastic(0.0f, 0) == 0x0000);
  // A quarter of the way from 1 to 1 + 2^-10 goes up with probability 1/4.
  int ups = 0;
  for (uint64_t i = 0; i < 40000; ++i) ups += float_to_fp16_stochastic(1.000244140625f, sr_random_word(5, 1, 2, i)) == 0x3C01;
  CHECK(std::fabs(ups / 40000.0 - 0.25) < 0.01, "P(up) = %.4f, want 0.25", ups / 40000.0);
}

// ---- optim_math.h -----------------------------------------------------------------------------

template <typename T>
static void test_sign_keep_nan_t(const char* name) {
  const T inf = std::numeric_limits<T>::infinity();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  CHECK(sign_keep_nan(T(0)) == T(0) && sign_keep_nan(-T(0)) == T(0), "%s: sign(+-0) = 0", name);
  CHECK(std::isnan(sign_keep_nan(nan)) && std::isnan(sign_keep_nan(-nan)), "%s: sign(NaN) = NaN", name);
  CHECK(sign_keep_nan(inf) == T(1) && sign_keep_nan(-inf) == T(-1), "%s: sign(+-inf) = +-1", name);
  CHECK(sign_keep_nan(T(3.5)) == T(1) && sign_keep_nan(T(-1e-30)) == T(-1), "%s", name);
  CHECK(sign_keep_nan(std::numeric_limits<T>::denorm_min()) == T(1) &&
        sign_keep_nan(-std::numeric_limits<T>::denorm_min()) == T(-1), "%s: subnormals", name);
}

static void test_sign() {
  std::printf("sign_keep_nan\n");
  test_sign_keep_nan_t<float>("float");
  test_sign_keep_nan_t<double>("double");
}

template <typename T>
static bool close(T got, double want, double atol, double rtol = 0) {
  return std::fabs(double(got) - want) <= atol + rtol * std::fabs(want);
}

template <typename T>
static void test_lion_vector_t(const char* name, double atol_theta, double rtol_m) {
  // Known-answer Lion vector: lr 0.01, lambda 0.1, betas (0.9, 0.99), theta0 = [1, -2, 0.5, 0], m0 = 0.
  // Coefficients are rounded from float64 to T once, as the kernels do.
  const double beta1 = 0.9, beta2 = 0.99, lr = 0.01, wd = 0.1;
  const LionCoeffs<T> k{T(beta1), T(1.0 - beta1), T(beta2), T(1.0 - beta2)};
  T w[4] = {T(1), T(-2), T(0.5), T(0)}, m[4] = {0, 0, 0, 0};
  const double g[2][4] = {{0.3, -0.1, 0, 2}, {-0.5, -0.1, 0.1, -0.01}};
  const double theta[2][4] = {{0.989, -1.988, 0.4995, -0.01}, {0.998011, -1.976012, 0.4890005, -0.01999}};
  const double mom[2][4] = {{0.003, -0.001, 0, 0.02}, {-0.00203, -0.00199, 0.001, 0.0197}};
  for (int s = 0; s < 2; ++s) {
    for (int j = 0; j < 4; ++j) lion_update(w[j], m[j], T(g[s][j]), k, T(lr), T(wd));
    for (int j = 0; j < 4; ++j) {
      CHECK(close(w[j], theta[s][j], atol_theta), "%s step %d theta[%d] = %.17g, want %.17g", name, s + 1, j,
            double(w[j]), theta[s][j]);
      CHECK(close(m[j], mom[s][j], 1e-300, rtol_m), "%s step %d m[%d] = %.17g, want %.17g", name, s + 1, j,
            double(m[j]), mom[s][j]);
    }
  }
  // The direction uses beta1 and the momentum beta2, both on m_{t-1}: with m = 1 and
  // g = -10, c = 0.9 - 1 < 0 (theta goes up) while beta2 would give 0.99 - 0.1 > 0.
  T w3 = T(1), m3 = T(1);
  lion_update(w3, m3, T(-10), k, T(lr), T(wd));
  CHECK(close(w3, 1 - lr * (-1 + wd), atol_theta) && close(m3, 0.99 - 0.1, 1e-300, rtol_m),
        "%s: theta %.17g m %.17g", name, double(w3), double(m3));
  // lambda = 0: each element moves by exactly eta where c != 0, and not at all where c == 0.
  T w0 = T(0.25), m0 = T(0);
  lion_update(w0, m0, T(0), k, T(0.125), T(0));
  CHECK(w0 == T(0.25) && m0 == T(0), "%s: c = 0, lambda = 0 leaves theta and m", name);
  T w1 = T(0.25), m1 = T(0);
  lion_update(w1, m1, T(-3), k, T(0.125), T(0));
  CHECK(w1 == T(0.375), "%s: lambda = 0 steps by exactly eta", name);
  // NaN in the direction makes theta NaN (Lion has no guard).
  T w2 = T(1), m2 = T(0);
  lion_update(w2, m2, std::numeric_limits<T>::quiet_NaN(), k, T(lr), T(wd));
  CHECK(std::isnan(w2) && std::isnan(m2), "%s: NaN propagates", name);
}

// The canonical fma order (optim_math.h's header) transcribed literally (explicit fma, one rounding each), compared bitwise
// on random fp32 inputs: CPU and CUDA kernels agree bitwise only if this order is kept.
static void test_canonical_fma_order() {
  Bulk b("lion/tiger fp32 bitwise = canonical fma order");
  Rng rng(3);
  auto rnd = [&](float scale) { return scale * (float(rng.u32() >> 8) / 8388608.0f - 1.0f); };
  for (int n = 0; n < 200000; ++n) {
    const float w = rnd(2), m = rnd(0.1f), g = rnd(1), eta = 1e-3f * (1 + rnd(0.5f)), wd = 0.1f * (1 + rnd(0.5f));
    const float b1 = 0.9f, ob1 = float(1.0 - 0.9), b2 = 0.99f, ob2 = float(1.0 - 0.99);
    const float c = std::fma(b1, m, ob1 * g);
    const float sc = float((c > 0) - (c < 0));
    const float w_want = std::fma(-eta, std::fma(wd, w, sc), w);
    const float m_want = std::fma(b2, m, ob2 * g);
    float w1 = w, m1 = m;
    lion_update(w1, m1, g, LionCoeffs<float>{b1, ob1, b2, ob2}, eta, wd);
    // Tiger: m' = fma(b1', m, b2 g'); u = fma(lambda, theta, sign(m')); theta' = fma(-eta, u, theta).
    const float tb1 = 0.965f, tb2 = float((1.0 - 0.965) / 4);
    const float tm_want = std::fma(tb1, m, tb2 * g);
    const float tw_want = std::fma(-eta, std::fma(wd, w, float((tm_want > 0) - (tm_want < 0))), w);
    float tm = m, tw = w;
    tiger_momentum(tm, g, TigerCoeffs<float>{tb1, tb2});
    tiger_param(tw, tm, eta, wd);
    const float ts_want = std::fma(w - 1.0f, 0.99f, 1.0f);
    const float ts = tiger_shrink(w, 1.0f, 0.99f);
    if (fbits(w1) == fbits(w_want) && fbits(m1) == fbits(m_want) && fbits(tm) == fbits(tm_want) &&
        fbits(tw) == fbits(tw_want) && fbits(ts) == fbits(ts_want))
      b.ok();
    else if (b.report())
      std::printf("    w=%a m=%a g=%a: lion %a %a (want %a %a), tiger %a %a (want %a %a), shrink %a (want %a)\n", w, m,
                  g, w1, m1, w_want, m_want, tw, tm, tw_want, tm_want, ts, ts_want);
  }
  b.finish(__LINE__);
}

static void test_lion() {
  std::printf("lion_update on the known-answer Lion vector\n");
  test_lion_vector_t<double>("double", 1e-12, 1e-12);
  test_lion_vector_t<float>("float", 1e-6, 1e-6);
  test_canonical_fma_order();
}

template <typename T>
static void test_tiger_vectors_t(const char* name, double tol) {
  // Known-answer Tiger vectors: lr 1e-3, beta 0.965, lambda 0.01, k 1, schedule {0: 1} (alpha = lr).
  const double lr = 1e-3, beta = 0.965, wd = 0.01;
  const TigerCoeffs<T> k{T(beta), T((1.0 - beta) / 1.0)};
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
  CHECK(tiger_is_first_micro_step(0, 1) && tiger_is_update_step(0, 1), "%s", name);

  // K = [[0.5, -0.5], [1, 0]], g = [[0.2, 0], [-0.3, 0.1]], RMS 0.6123724357.
  const double K0[4] = {0.5, -0.5, 1, 0};
  double sumsq = 0;
  for (double x : K0) sumsq += x * x;
  const double eta_k = tiger_eta_from_sumsq(lr, sumsq, 4, 0.0);
  CHECK(close(eta_k, 1e-3 * 0.6123724357, 1e-13), "%s eta_K = %.12g", name, eta_k);
  {
    T w[4], m[4] = {0, 0, 0, 0};
    const double g[4] = {0.2, 0, -0.3, 0.1};
    const double theta1[4] = {0.4993845657, -0.4999969381, 1.0006062487, -0.0006123724};
    const double m1[4] = {0.007, 0, -0.0105, 0.0035};
    for (int j = 0; j < 4; ++j) {
      w[j] = T(K0[j]);
      tiger_momentum(m[j], T(g[j]), k);
      tiger_param(w[j], m[j], T(eta_k), T(wd));
      CHECK(close(w[j], theta1[j], tol), "%s K theta1[%d] = %.12g, want %.10f", name, j, double(w[j]), theta1[j]);
      CHECK(close(m[j], m1[j], 1e-300, std::is_same_v<T, double> ? 1e-12 : 1e-6), "%s K m1[%d] = %.12g", name, j,
            double(m[j]));
    }
    // Guard on, from (K, m1), g = [[NaN, 0], [0, 0]] (or +inf): the guard fires (per tensor),
    // theta shrinks toward 0 by 0.99 and m stays m1.
    const T gbad[2] = {nan, inf};
    for (T gb : gbad) {
      const T gg[4] = {gb, 0, 0, 0};
      bool finite = true;
      for (T x : gg) finite = finite && is_finite_bits(x);
      CHECK(!finite, "%s: the guard sees a non-finite gradient", name);
      const double want[4] = {0.495, -0.495, 0.99, 0};
      for (int j = 0; j < 4; ++j) {
        const T ws = tiger_shrink(T(K0[j]), T(0), T(0.99));
        CHECK(close(ws, want[j], tol), "%s shrink[%d] = %.12g", name, j, double(ws));
      }
    }
  }
  // Guard off, from (K, 0): NaN -> theta = [[NaN, -0.4999969381], [0.9999938763, 0]], m[0,0] = NaN;
  // +inf -> theta = [[0.4993845657, -0.4999969381], [0.9999938763, 0]], m[0,0] = inf.
  for (int which = 0; which < 2; ++which) {
    const T g00 = which == 0 ? nan : inf;
    T w[4], m[4] = {0, 0, 0, 0};
    const T g[4] = {g00, 0, 0, 0};
    for (int j = 0; j < 4; ++j) {
      w[j] = T(K0[j]);
      tiger_momentum(m[j], g[j], k);
      tiger_param(w[j], m[j], T(eta_k), T(wd));
    }
    if (which == 0) CHECK(std::isnan(w[0]) && std::isnan(m[0]), "%s guard off NaN", name);
    else CHECK(close(w[0], 0.4993845657, tol) && std::isinf(m[0]) && m[0] > 0, "%s guard off inf: %.12g", name, double(w[0]));
    CHECK(close(w[1], -0.4999969381, tol) && close(w[2], 0.9999938763, tol) && w[3] == T(0) && m[1] == T(0),
          "%s guard off: %.12g %.12g %.12g", name, double(w[1]), double(w[2]), double(w[3]));
  }
  // gamma (V, centre 1) = [1, 0.9], g = [0.5, -0.5]: eta = 0.5 alpha, lambda = 0 -> [0.9995, 0.9005];
  // guard on with g = [NaN, 0]: shrink toward 1 -> [1.0, 0.901].
  {
    const double gamma0[2] = {1, 0.9}, g[2] = {0.5, -0.5}, want[2] = {0.9995, 0.9005}, shrunk[2] = {1.0, 0.901};
    for (int j = 0; j < 2; ++j) {
      T w = T(gamma0[j]), m = T(0);
      tiger_momentum(m, T(g[j]), k);
      tiger_param(w, m, T(0.5 * lr), T(0));
      CHECK(close(w, want[j], tol), "%s V theta1[%d] = %.12g", name, j, double(w));
      const T ws = tiger_shrink(T(gamma0[j]), T(1), T(0.99));
      CHECK(close(ws, shrunk[j], tol), "%s V shrink[%d] = %.12g", name, j, double(ws));
    }
  }
  // E = [[0.1, -0.1], [3, 4]], g = [[1, -1], [0, 0]], row RMS [0.1, 3.5355339059]
  // -> theta1 = [[0.0998999, -0.0998999], [2.9998939340, 3.9998585786]].
  {
    const double E0[2][2] = {{0.1, -0.1}, {3, 4}}, g[2][2] = {{1, -1}, {0, 0}};
    const double want[2][2] = {{0.0998999, -0.0998999}, {2.9998939340, 3.9998585786}};
    const double rms[2] = {0.1, 3.5355339059};
    for (int r = 0; r < 2; ++r) {
      const double eta = tiger_eta_from_sumsq(lr, E0[r][0] * E0[r][0] + E0[r][1] * E0[r][1], 2, 0.0);
      CHECK(close(eta, lr * rms[r], 1e-13), "%s E eta[%d] = %.12g", name, r, eta);
      for (int c = 0; c < 2; ++c) {
        T w = T(E0[r][c]), m = T(0);
        tiger_momentum(m, T(g[r][c]), k);
        tiger_param(w, m, T(eta), T(wd));
        CHECK(close(w, want[r][c], tol), "%s E theta1[%d][%d] = %.12g", name, r, c, double(w));
      }
    }
  }
}

static void test_tiger() {
  std::printf("tiger_param / tiger_momentum / tiger_shrink on the known-answer Tiger vectors\n");
  test_tiger_vectors_t<double>("double", 6e-11);  // the vectors are printed to 10 decimals
  test_tiger_vectors_t<float>("float", 1e-6);

  // Schedule helpers with k = 4: decay on t mod 4 == 0, move on (t + 1) mod 4 == 0.
  bool ok = true;
  for (int64_t t = 0; t < 12; ++t)
    ok = ok && tiger_is_first_micro_step(t, 4) == (t % 4 == 0) && tiger_is_update_step(t, 4) == (t % 4 == 3);
  CHECK(ok);
  // rms_floor and zero RMS; NaN in theta propagates into eta.
  CHECK(tiger_eta_from_sumsq(1e-3, 0.0, 4, 0.0) == 0.0, "zero RMS freezes");
  CHECK(tiger_eta_from_sumsq(1e-3, 0.0, 4, 0.5) == 1e-3 * 0.5, "rms_floor");
  CHECK(tiger_eta_from_sumsq(1e-3, 0.0, 0, 0.0) == 0.0, "empty tensor");
  CHECK(std::isnan(tiger_eta_from_sumsq(1e-3, std::nan(""), 4, 0.5)), "NaN RMS stays NaN");
  // Accumulation inside the momentum: k micro-steps equal one step on the mean gradient.
  {
    const double beta = 0.965;
    const int kk = 4;
    const TigerCoeffs<double> first{beta, (1.0 - beta) / kk}, rest{1.0, (1.0 - beta) / kk};
    const double gs[4] = {0.3, -0.7, 0.2, 0.05};
    double m = 0.01;
    for (int t = 0; t < kk; ++t) tiger_momentum(m, gs[t], t == 0 ? first : rest);
    const double want = beta * 0.01 + (1.0 - beta) * (0.3 - 0.7 + 0.2 + 0.05) / 4;
    CHECK(close(m, want, 1e-17), "accumulated m = %.17g, want %.17g", m, want);
  }
}

// ---- ParamAccess: the precision modes ([note: precision modes], known-answer bf16 runs) -------------------------------

template <Precision kMode, typename P>
static void lion_steps(P* param, void* aux, int64_t n, int steps, float lr, float wd, uint32_t seed) {
  using Access = ParamAccess<kMode, P>;
  const LionCoeffs<float> k{0.9f, float(1.0 - 0.9), 0.99f, float(1.0 - 0.99)};
  std::vector<float> m(size_t(n), 0.0f);
  for (int t = 0; t < steps; ++t) {
    const SrKey key{seed, 0, uint64_t(t)};
    for (int64_t i = 0; i < n; ++i) {  // the loop of csrc/cpu/optim_kernels.h, g = +1
      const float w_old = Access::load(param, aux, i);
      float w = w_old;
      lion_update(w, m[size_t(i)], 1.0f, k, lr, wd);
      Access::store(param, aux, i, w_old, w, key);
    }
  }
}

static void test_precision_modes() {
  std::printf("ParamAccess precision modes (100 Lion steps, bf16)\n");
  // 100 Lion steps from w = 1.0, g = +1, lr 1e-4, lambda 0.1: ref = -10 + 11 (1 - 1e-5)^100.
  const double ref = -10.0 + 11.0 * std::pow(1.0 - 1e-5, 100);
  CHECK(close(ref, 0.98900544322, 1e-11), "ref = %.12g", ref);
  const double bf16_ulp = 1.0 / 256;  // spacing of bf16 in [0.5, 1)
  const uint16_t one = float_to_bf16_rne(1.0f);
  {  // none: every step is lost to RNE (1e-4 < half an ulp)
    bfloat16_t p{one};
    lion_steps<Precision::kNone>(&p, nullptr, 1, 100, 1e-4f, 0.1f, 0);
    CHECK(p.bits == one, "none: %.9g", double(bf16_to_float(p.bits)));
  }
  {  // kahan
    bfloat16_t p{one}, comp{0};
    lion_steps<Precision::kKahan>(&p, &comp, 1, 100, 1e-4f, 0.1f, 0);
    const double theta = bf16_to_float(p.bits), kappa = bf16_to_float(comp.bits);
    std::printf("    kahan: theta = %.9g, kappa = %.9g, |theta + kappa - ref| = %.3g\n", theta, kappa,
                std::fabs(theta + kappa - ref));
    CHECK(std::fabs(theta - ref) <= bf16_ulp, "kahan: theta = %.9g", theta);
    CHECK(theta == 0.98828125, "kahan: theta = %.9g (spec: 0.98828125)", theta);
    CHECK(std::fabs(theta + kappa - ref) < 2.5e-4, "kahan: |theta + kappa - ref| = %.3g (spec: ~1.6e-4)",
          std::fabs(theta + kappa - ref));
  }
  {  // master
    bfloat16_t p{one};
    float master = 1.0f;
    lion_steps<Precision::kMaster>(&p, &master, 1, 100, 1e-4f, 0.1f, 0);
    CHECK(std::fabs(double(master) - ref) <= 3e-7, "master: %.9g", double(master));
    CHECK(bf16_to_float(p.bits) == 0.98828125f, "master: bf16 copy %.9g", double(bf16_to_float(p.bits)));
    CHECK(p.bits == float_to_bf16_rne(master));
  }
  {  // one step from 0.5 with c > 0 (lambda 0): none keeps 0.5, master gives fp32(0.4999)
    bfloat16_t p{float_to_bf16_rne(0.5f)};
    lion_steps<Precision::kNone>(&p, nullptr, 1, 1, 1e-4f, 0.0f, 0);
    CHECK(bf16_to_float(p.bits) == 0.5f);
    bfloat16_t q{float_to_bf16_rne(0.5f)};
    float master = 0.5f;
    lion_steps<Precision::kMaster>(&q, &master, 1, 1, 1e-4f, 0.0f, 0);
    CHECK(master == 0.4999f && close(master, 0.49990001, 1e-8), "master %.9g", double(master));
    CHECK(bf16_to_float(q.bits) == 0.5f);
  }
  {  // stochastic: the mean over 4096 elements is within 4 SE (4e-4) of ref
    const int64_t n = 4096;
    std::vector<bfloat16_t> p(size_t(n), bfloat16_t{one});
    lion_steps<Precision::kStochastic>(p.data(), nullptr, n, 100, 1e-4f, 0.1f, 1234);
    double sum = 0;
    bool neighbours = true;  // every step moves down by one ulp or not at all
    for (const bfloat16_t& x : p) {
      const float v = bf16_to_float(x.bits);
      sum += v;
      neighbours = neighbours && v > 0.9f && v <= 1.0f;
    }
    const double mean = sum / double(n);
    std::printf("    stochastic: mean = %.9g, mean - ref = %.3g\n", mean, mean - ref);
    CHECK(std::fabs(mean - ref) <= 4e-4, "stochastic mean %.9g", mean);
    CHECK(neighbours);
    // The store uses the word of [note: stochastic rounding stream] for element i at step t.
    bfloat16_t a[6];
    for (int i = 0; i < 6; ++i) a[i].bits = one;
    const SrKey key{1234, 3, 9};
    for (int64_t i = 0; i < 6; ++i)
      ParamAccess<Precision::kStochastic, bfloat16_t>::store(a, nullptr, i, 1.0f, 1.00390625f - 0.0078125f, key);
    bool same = true;
    for (int64_t i = 0; i < 6; ++i)
      same = same && a[i].bits == float_to_bf16_stochastic(1.00390625f - 0.0078125f, sr_random_word(1234, 3, 9, uint64_t(i)));
    CHECK(same);
  }
  {  // fp16 kahan and master, same trajectory: within one fp16 ulp (2^-11 below 1)
    half_t p{float_to_fp16_rne(1.0f)}, comp{0};
    lion_steps<Precision::kKahan>(&p, &comp, 1, 100, 1e-4f, 0.1f, 0);
    CHECK(std::fabs(double(fp16_to_float(p.bits)) - ref) <= 1.0 / 2048, "fp16 kahan %.9g", double(fp16_to_float(p.bits)));
    half_t q{float_to_fp16_rne(1.0f)};
    float master = 1.0f;
    lion_steps<Precision::kMaster>(&q, &master, 1, 100, 1e-4f, 0.1f, 0);
    CHECK(std::fabs(double(master) - ref) <= 3e-7 && q.bits == float_to_fp16_rne(master));
    half_t r{float_to_fp16_rne(1.0f)};
    lion_steps<Precision::kNone>(&r, nullptr, 1, 100, 1e-4f, 0.1f, 0);
    CHECK(r.bits == float_to_fp16_rne(1.0f) , "fp16 none stalls at 1: %.9g", double(fp16_to_float(r.bits)));
  }
  {  // fp32 parameters: every mode stores w' as is
    float p = 1.0f;
    lion_steps<Precision::kNone>(&p, nullptr, 1, 100, 1e-4f, 0.1f, 0);
    CHECK(std::fabs(double(p) - ref) <= 1e-6, "fp32 %.9g", double(p));
  }
}

// ---- step_desc.h --------------------------------------------------------------------------
// The call descriptions are plain data (copied into CUDA kernel arguments), and the coefficients
// are the float64 values rounded once, with maximize folded into the gradient coefficients.

static void test_step_desc() {
  std::printf("step_desc.h\n");
  static_assert(std::is_trivially_copyable_v<StepCall> && std::is_standard_layout_v<StepCall>);
  static_assert(std::is_trivially_copyable_v<StepTensor> && std::is_standard_layout_v<StepTensor>);
  static_assert(std::is_trivially_copyable_v<SrKey> && std::is_trivially_copyable_v<LionCoeffs<float>>);
  CHECK(std::strcmp(dtype_name(DType::kFloat32), "float32") == 0 && std::strcmp(dtype_name(DType::kFloat64), "float64") == 0 &&
        std::strcmp(dtype_name(DType::kFloat16), "float16") == 0 && std::strcmp(dtype_name(DType::kBFloat16), "bfloat16") == 0);
  CHECK(int(Precision::kNone) == 0 && int(Precision::kKahan) == 1 && int(Precision::kStochastic) == 2 &&
        int(Precision::kMaster) == 3);
  StepHyper h{};
  h.algo = Algo::kTiger, h.maximize = true, h.beta = 0.965, h.grad_accum_steps = 3, h.weight_decay = 0.01;
  h.shrink_ratio = 0.99, h.shrink_center = 0.1;
  const Coefficients c = derive_coefficients(h);
  const double g = -(1.0 - 0.965) / 3.0;  // maximize: -(1-beta)/k, in float64 first
  CHECK(c.f64[kTigerGradCoef] == g && c.f32[kTigerGradCoef] == float(g) && c.f32[kTigerBeta] == 0.965f &&
        c.f32[kWeightDecay] == 0.01f && c.f64[kShrinkCentre] == 0.1 && c.f32[kShrinkRatio] == 0.99f);
  const TigerStep<float> first = make_tiger_step<float>(c, true), later = make_tiger_step<float>(c, false);
  CHECK(first.k.b1 == 0.965f && later.k.b1 == 1.0f && first.k.b2 == float(g) && first.wd == 0.01f);
  h.algo = Algo::kLion, h.beta1 = 0.9, h.beta2 = 0.99, h.maximize = false;
  const LionStep<double> lion = make_lion_step<double>(derive_coefficients(h), 1e-3);
  CHECK(lion.k.beta1 == 0.9 && lion.k.one_minus_beta1 == 1.0 - 0.9 && lion.k.one_minus_beta2 == 1.0 - 0.99 &&
        lion.eta == 1e-3 && lion.wd == 0.01);
}

// ---- dpm_math.h ---------------------------------------------------------------------------
// Oracles written differently from the header: the halving tree as the recursive split of the
// bit-reversed sequence, and segment_moments' tree as a literal simulation with full 64-padding.

static uint64_t bits_of(double x) {
  uint64_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}

template <typename T>
static T split_sum(const std::vector<T>& u, size_t lo, size_t n) {
  return n == 1 ? u[lo] : split_sum(u, lo, n / 2) + split_sum(u, lo + n / 2, n / 2);
}

template <typename T>
static T halving_oracle(const std::vector<T>& a) {
  const size_t n = a.size();
  int bits = 0;
  while ((size_t(1) << bits) < n) ++bits;
  std::vector<T> u(n);
  for (size_t m = 0; m < n; ++m) {
    size_t r = 0;
    for (int b = 0; b < bits; ++b) r |= ((m >> b) & 1) << (bits - 1 - b);
    u[m] = a[r];
  }
  return split_sum(u, 0, n);
}

static double segment_oracle(const std::vector<double>& rows, int levels) {
  if (rows.empty()) return 0.0;
  std::vector<double> v = rows;
  for (int level = 0; level < levels; ++level) {
    std::vector<double> next;
    for (size_t j = 0; j < v.size(); j += 64) {
      std::vector<double> chunk(64, 0.0);
      for (size_t i = 0; i < 64 && j + i < v.size(); ++i) chunk[i] = v[j + i];
      next.push_back(halving_oracle(chunk));
    }
    v = next;
  }
  return v[0];
}

static void test_dpm_math() {
  std::printf("dpm_math.h\n");
  Rng rng(77);
  auto value = [&] { return (double(rng.u32()) - 2147483648.0) * std::ldexp(1.0, int(rng.u32() % 40) - 50); };
  bool ok = true;
  for (int64_t n = 1; n <= 1024; n *= 2)
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<double> a(static_cast<size_t>(n));
      for (double& x : a) x = value();
      std::vector<double> b = a;
      ok = ok && bits_of(dpm::halving_sum(b.data(), n)) == bits_of(halving_oracle(a));
    }
  CHECK(ok, "halving_sum differs from the bit-reversed split");
  // eps_stats' fp32 tiles ([note: reference trees]): the tile tree against an oracle that splits
  // the rows recursively (adjacent pairs = halves of the row sequence, lane by lane) and then
  // halves the 32 lanes; and the regroupings the CPU kernels use: group sums of 8 rows combined
  // by the same tree, the first lane level as a[0:16] + a[16:32], tree = tree(even) + tree(odd).
  ok = true;
  bool split_ok = true, group_ok = true;
  for (int64_t n = 1; n <= 1024; n *= 2)
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> a(static_cast<size_t>(n));
      for (float& x : a) x = float(value());
      if (trial % 4 == 0)  // signed zeros and exact cancellations
        for (size_t i = 0; i < a.size(); ++i) a[i] = i % 3 == 0 ? -0.0f : i % 3 == 1 ? 0.0f : a[i];
      const int64_t lanes = std::min<int64_t>(n, dpm::kEpsRow), rows = n / lanes;
      const auto row_tree = [&](auto&& self, int64_t lo, int64_t m) -> std::vector<float> {
        if (m == 1) return std::vector<float>(a.begin() + lo * lanes, a.begin() + (lo + 1) * lanes);
        std::vector<float> l = self(self, lo, m / 2), r = self(self, lo + m / 2, m / 2);
        for (int64_t i = 0; i < lanes; ++i) l[size_t(i)] = l[size_t(i)] + r[size_t(i)];
        return l;
      };
      const std::vector<float> last = row_tree(row_tree, 0, rows);
      const float want = halving_oracle(last);
      std::vector<float> b = a;
      ok = ok && bits_of(double(dpm::tile_tree_sum(b.data(), n))) == bits_of(double(want));
      if (rows >= 16) {  // the 8-row group sums, then the tree of the groups
        std::vector<float> groups;
        for (int64_t g = 0; g < rows / 8; ++g) {
          const std::vector<float> s = row_tree(row_tree, g * 8, 8);
          groups.insert(groups.end(), s.begin(), s.end());
        }
        group_ok = group_ok && bits_of(double(dpm::tile_tree_sum(groups.data(), int64_t(groups.size())))) == bits_of(double(want));
      }
      if (lanes == 32) {
        std::vector<float> folded(16), even, odd;
        for (size_t i = 0; i < 16; ++i) folded[i] = last[i] + last[i + 16];
        for (size_t i = 0; i < 32; ++i) (i % 2 ? odd : even).push_back(last[i]);
        split_ok = split_ok && bits_of(double(halving_oracle(folded))) == bits_of(double(want)) &&
                   bits_of(double(halving_oracle(even) + halving_oracle(odd))) == bits_of(double(want));
      }
    }
  CHECK(ok, "tile_tree_sum differs from the recursive row split + lane halving");
  CHECK(group_ok, "the tile tree is not the tree of its 8-row group sums");
  CHECK(split_ok, "the 32-lane halving is not halving(a[0:16] + a[16:32]) and tree(even) + tree(odd)");
  {
    const float x = 1.0f + 3.0f * std::ldexp(1.0f, -13);  // x*x needs more than 24 bits
    const double xd = x;
    CHECK(dpm::sq(x) == float(xd * xd) && double(dpm::sq(x)) != dpm::sq(xd),
          "sq in float is the correctly rounded fp32 square (not the exact fp64 one)");
    CHECK(dpm::u_term(3.0f, 1.0f) == 8.0f && dpm::z_term(3.0f, 1.0f) == 4.0f, "float u_term / z_term");
    bool loads = true;
    for (uint32_t h = 0; h < 65536; ++h) {
      const half_t hv{uint16_t(h)};
      const bfloat16_t bv{uint16_t(h)};
      const float hf = dpm::load_as<float>(&hv, 0), bf = dpm::load_as<float>(&bv, 0);
      loads = loads && float_as_bits(hf) == float_as_bits(fp16_to_float(uint16_t(h))) &&
              float_as_bits(bf) == float_as_bits(bf16_to_float(uint16_t(h)));
      if (!std::isnan(hf)) loads = loads && dpm::load_as<double>(&hv, 0) == double(hf);
    }
    CHECK(loads, "load_as<float> / load_as<double> decode fp16 and bf16 exactly");
  }
  ok = true;
  for (int64_t m = 1; m <= 64; ++m)
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<double> a(64, 0.0);
      for (int64_t i = 0; i < m; ++i) a[size_t(i)] = trial % 3 == 0 ? -0.0 : (rng.u32() % 4 == 0 ? -0.0 : value());
      std::vector<double> b = a;
      ok = ok && bits_of(dpm::halving_sum_padded64(b.data(), m)) == bits_of(halving_oracle(a));
    }
  CHECK(ok, "halving_sum_padded64 differs from the zero-padded 64-wide tree (signs of zero included)");
  CHECK(dpm::segment_levels(0) == 0 && dpm::segment_levels(1) == 0 && dpm::segment_levels(2) == 1 &&
        dpm::segment_levels(64) == 1 && dpm::segment_levels(65) == 2 && dpm::segment_levels(4096) == 2 &&
        dpm::segment_levels(4097) == 3);
  ok = true;
  for (int64_t n : {1, 2, 5, 63, 64, 65, 300, 4096, 4097}) {
    std::vector<double> rows(static_cast<size_t>(n));
    for (double& x : rows) x = rng.u32() % 5 == 0 ? -0.0 : value();
    for (int extra = 0; extra < 2; ++extra) {
      const int levels = dpm::segment_levels(n) + extra;  // a shorter segment in a call with a longer one
      std::vector<double> scratch(static_cast<size_t>((n + 63) / 64));
      const double got = dpm::segment_tree_sum([&](int64_t r) { return rows[size_t(r)]; }, n, levels, scratch.data());
      ok = ok && bits_of(got) == bits_of(segment_oracle(rows, levels));
    }
  }
  for (double v : {-0.0, 0.0, 1.5, -2.25, double(NAN), double(INFINITY)})  // the single-row shortcut
    for (int levels = 0; levels <= 3; ++levels) {
      const std::vector<double> rows{v};
      double scratch[1];
      const double got = dpm::segment_tree_sum([&](int64_t) { return v; }, 1, levels, scratch);
      ok = ok && bits_of(got) == bits_of(segment_oracle(rows, levels));
    }
  CHECK(ok, "segment_tree_sum differs from the literal 64-padded simulation");
  double best = INFINITY;
  int64_t arg = -1;
  dpm::minplus_relax(INFINITY, 0, best, arg);
  CHECK(arg == -1 && dpm::minplus_arg(best, arg) == -1, "+inf candidates leave no argmin");
  dpm::minplus_relax(2.0, 3, best, arg);
  dpm::minplus_relax(2.0, 4, best, arg);
  dpm::minplus_relax(NAN, 5, best, arg);
  CHECK(best == 2.0 && arg == 3, "ties keep the first s, NaN never wins");
  dpm::minplus_relax(-INFINITY, 6, best, arg);
  CHECK(arg == 6 && dpm::minplus_arg(best, arg) == -1, "a -inf best reports s = -1 like the reference");
  CHECK(dpm::u_term(3.0, 1.0) == 8.0 && dpm::z_term(3.0, 1.0) == 4.0 && dpm::eps_tile_len(1) == 1 &&
        dpm::eps_tile_len(7) == 8 && dpm::eps_tile_len(1025) == 1024);
}

int main() {
  test_exhaustive_round_trip();
  test_rne_boundaries();
  test_rne_random();
  test_storage_traits();
  test_philox();
  test_sr_bf16();
  test_sr_fp16();
  test_sign();
  test_lion();
  test_tiger();
  test_precision_modes();
  test_step_desc();
  test_dpm_math();
  std::printf("test_math: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
