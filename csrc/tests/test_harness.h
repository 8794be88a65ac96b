// test_harness.h — the tiny test harness shared by the C++ unit tests in csrc/tests (no framework):
// CHECK counts one check, Bulk counts a comparison over many inputs as one check and prints its
// first mismatches, Rng is a fixed portable stream of inputs (splitmix64). Each test's main prints
// "<name>: N passed, M failed" and returns non-zero if M > 0 (ctest matches that line).
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>

static int g_passed = 0;
static int g_failed = 0;

#define CHECK(cond, ...)                                                              \
  do {                                                                                \
    if (cond) {                                                                       \
      ++g_passed;                                                                     \
    } else {                                                                          \
      ++g_failed;                                                                     \
      std::printf("  FAIL %s:%d: %s", __FILE__, __LINE__, #cond);                     \
      __VA_OPT__(std::printf(" -- "); std::printf(__VA_ARGS__);)                      \
      std::printf("\n");                                                              \
    }                                                                                 \
  } while (0)

// A bulk comparison (thousands to millions of cases) counts as one check; the first few
// mismatches are printed.
struct Bulk {
  const char* name;
  long long cases = 0, bad = 0;
  explicit Bulk(const char* n) : name(n) {}
  bool report() {
    ++cases;
    return ++bad <= 5;  // caller prints the details of the first five mismatches
  }
  void ok() { ++cases; }
  void finish(int line, const char* file = __builtin_FILE()) {
    if (bad == 0) {
      ++g_passed;
      std::printf("  ok   %s (%lld cases)\n", name, cases);
    } else {
      ++g_failed;
      std::printf("  FAIL %s:%d: %s: %lld of %lld cases wrong\n", file, line, name, bad, cases);
    }
  }
};

[[maybe_unused]] static uint32_t fbits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
[[maybe_unused]] static float bitsf(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// splitmix64: a fixed, portable stream of test inputs.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint32_t u32() { return uint32_t(next() >> 32); }
};

