// dpm_kernels.h — CPU loops of the Analytic-DPM ops eps_stats and minplus_dp (spec §9). Included
// by kernels_{generic,avx2,avx512}.cpp, each with its own TC_ISA namespace, target pragma and
// vector width, so the same code is vectorised for each instruction set. The arithmetic is
// tigercore/dpm_math.h; the launch layer is dpm_ops.cpp. Reference: tigercore/reference/dpm.py.
#pragma once
#include <algorithm>
#include <type_traits>
#include <utility>

#include "kernel_table.h"

#if !defined(TC_ISA) || !defined(TC_VEC_BYTES) || !defined(TC_MINPLUS_ROWS)
#error "define TC_ISA, TC_VEC_BYTES and TC_MINPLUS_ROWS before including dpm_kernels.h"
#endif

namespace tigercore {
namespace cpu {
namespace TC_ISA {
namespace dpm_loops {  // beside optim_kernels.h's loops in the same namespace

using namespace ::tigercore::dpm;

// ---- vectors -----------------------------------------------------------------------------------
// GCC vector extensions: one VD / VF / VU is one register of this ISA (16, 32 or 64 bytes) of
// doubles, floats or 32-bit words, holding consecutive elements.
constexpr int kVecBytes = TC_VEC_BYTES;
constexpr int64_t kLanes = kVecBytes / 8;  // doubles per register
typedef double VD __attribute__((vector_size(kVecBytes)));
typedef float VF __attribute__((vector_size(kVecBytes)));
typedef uint32_t VU __attribute__((vector_size(kVecBytes)));

template <typename V, typename T>
TC_FORCEINLINE V load_vec(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
TC_FORCEINLINE void store_vec(T* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }

// ---- eps_stats ---------------------------------------------------------------------------------
// The compute type C of [note: reference trees] (float, or double for fp64 storage) and its vector.
template <typename S>
using ComputeOf = std::conditional_t<std::is_same_v<S, double>, double, float>;
template <typename C>
using VecOf = std::conditional_t<std::is_same_v<C, float>, VF, VD>;

// [note: upcast loads]
// A leaf is what one step reads from each input: one register of C (kLanes or 2·kLanes elements),
// upcast exactly. bf16 is the exception: its leaf is one register of 32-bit words, i.e. 2·(floats
// per register) elements, and w << 16 holds the even elements and w & 0xFFFF0000 the odd ones as
// two exact fp32 vectors (two "parts"); the tile's tree is then the tree of its even elements plus
// that of its odd ones ([note: reference trees]), each of them a tree over whole vectors first.
// The parts are summed one after the other (EpsTile::group8), each reading the leaf again from
// L1: one load and one ALU operation per 16 elements on AVX-512, where a widening conversion
// takes a cross-lane zero-extension and a shift (chosen on that count; the two variants were not
// timed against each other). fp16 goes through
// F16C (AVX2 / AVX-512; exact, like fp16_to_float, NaN payloads aside); the generic variant
// decodes fp16 lane by lane with float_bits.h.
template <typename S>
struct Leaf {
  using C = ComputeOf<S>;
  using V = VecOf<C>;
  static constexpr int kParts = std::is_same_v<S, bfloat16_t> ? 2 : 1;
  static constexpr int64_t kElems = kParts * int64_t(kVecBytes / sizeof(C));

  // Part `part` of the leaf at p (bf16: 0 = even elements, 1 = odd ones).
  template <int part>
  static TC_FORCEINLINE V load(const S* p) {
    if constexpr (std::is_same_v<S, double> || std::is_same_v<S, float>) {
      return load_vec<V>(p);
    } else if constexpr (std::is_same_v<S, bfloat16_t>) {
      const VU w = load_vec<VU>(p);
      if constexpr (part == 0) return (VF)(w << 16);
      else return (VF)(w & 0xFFFF0000u);
    } else {
#if TC_VEC_BYTES == 64
      return (VF)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif TC_VEC_BYTES == 32
      return (VF)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
      float f[kElems];
      for (int64_t l = 0; l < kElems; ++l) f[l] = fp16_to_float(p[l].bits);
      return load_vec<VF>(f);
#endif
    }
  }
};

// The halving tree over the lanes of one register (lane k + lane k + n/2, ..., as halving_sum):
// each level adds the upper half of the vector to the lower half. GCC turns the shuffles into
// vshuff32x4 / vperm2f128 / vpermilps (the cast/extract intrinsics trip its -Wuninitialized).
template <typename V, size_t... I>
TC_FORCEINLINE auto add_halves(const V& v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, I...) + __builtin_shufflevector(v, v, (I + sizeof...(I))...);
}
template <typename V>
TC_FORCEINLINE auto lane_halving(const V& v) {
  using C = std::remove_cvref_t<decltype(v[0])>;
  constexpr size_t n = sizeof(V) / sizeof(C);
  if constexpr (n == 1) return C(v[0]);
  else return lane_halving(add_halves(v, std::make_index_sequence<n / 2>{}));
}

// a + b computed as fma(a, 1, b): a·1 is exact, so this is the same rounded sum, bit for bit
// (NaN payloads aside), but it runs on the multiply pipes.
template <typename V>
TC_FORCEINLINE V add_via_fma(const V& a, const V& b) {
#if TC_VEC_BYTES == 64 || TC_VEC_BYTES == 32
  using C = std::remove_cvref_t<decltype(a[0])>;
#endif
#if TC_VEC_BYTES == 64
  if constexpr (std::is_same_v<C, float>) return (V)_mm512_fmadd_ps((__m512)a, _mm512_set1_ps(1.0f), (__m512)b);
  else return (V)_mm512_fmadd_pd((__m512d)a, _mm512_set1_pd(1.0), (__m512d)b);
#elif TC_VEC_BYTES == 32
  if constexpr (std::is_same_v<C, float>) return (V)_mm256_fmadd_ps((__m256)a, _mm256_set1_ps(1.0f), (__m256)b);
  else return (V)_mm256_fmadd_pd((__m256d)a, _mm256_set1_pd(1.0), (__m256d)b);
#else
  return a + b;
#endif
}

// GCC cannot see that the loops below write acc[part][col][0, s) and buf[0, tile) before the
// halving sums read exactly that range; zero-filling them for its sake would double the stores.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

template <typename S, bool kEps, bool kX0>
struct EpsTile {
  using L = Leaf<S>;
  using C = typename L::C;
  using V = typename L::V;
  static constexpr int P = L::kParts;
  static constexpr int64_t kMinFull = 8 * L::kElems;          // tiles at least this long are vectorised
  static constexpr int64_t kMaxS = kEpsTile / kMinFull;       // leaves per stream of a 1024 tile

  static constexpr bool has(int col) { return col == kY || (col == kW ? kX0 : kEps); }
  // [note: eps_stats pipes] With eps, a leaf part costs 4 multiplies and 2 + 4 additions (u's
  // e ∓ ê, then one tree addition per column): the add pipes would be the bottleneck (Zen 4: two
  // 256-bit FADD and two FMUL/FMA pipes). The tree additions of c and z go through add_via_fma
  // instead, which balances the two kinds (measured: ~0.65 -> ~0.9 of read bandwidth with eps,
  // bf16, one thread). Same bits either way.
  static constexpr bool on_fma_pipe(int col) { return kEps && (col == kC || col == kZ); }

  // The terms of one part of one leaf, per column.
  struct Terms {
    V v[kStatCols];
    TC_FORCEINLINE Terms operator+(const Terms& b) const {
      Terms r{};
      for (int col = 0; col < kStatCols; ++col)
        if (has(col)) r.v[col] = on_fma_pipe(col) ? add_via_fma(v[col], b.v[col]) : v[col] + b.v[col];
      return r;
    }
  };

  // Part `part` of the terms of the leaf at element offset i.
  template <int part>
  static TC_FORCEINLINE Terms leaf(const S* eh, const S* e, const S* x, const S* xh, int64_t i) {
    Terms t{};
    const V h = L::template load<part>(eh + i);
    t.v[kY] = sq(h);
    if constexpr (kEps) {
      const V g = L::template load<part>(e + i);
      t.v[kC] = sq(g);
      t.v[kU] = u_term(g, h);
      t.v[kZ] = z_term(g, h);
    }
    if constexpr (kX0) t.v[kW] = z_term(L::template load<part>(x + i), L::template load<part>(xh + i));
    return t;
  }

  // halving8 of the leaves i + q·st (q < 8) for one part, evaluated depth first (each operand of
  // an addition is finished before the next leaf is read) so that at most three sums and the leaf
  // in flight are live — written out because function arguments would all be evaluated first.
  template <int part>
  static TC_FORCEINLINE Terms group8(const S* eh, const S* e, const S* x, const S* xh, int64_t i, int64_t st) {
    const auto at = [&](int q) { return leaf<part>(eh, e, x, xh, i + q * st); };
    Terms a = at(0) + at(4);
    a = a + (at(2) + at(6));
    Terms b = at(1) + at(5);
    b = b + (at(3) + at(7));
    return a + b;
  }

  // A whole tile of T = 8·s leaves (T >= kMinFull, a power of two): for each j < s and part, the
  // first three halving levels straight from the eight leaves j + q·s (group8), then the remaining
  // levels on the s vectors, then the lanes; bf16's even and odd trees are added last.
  static void full(const S* __restrict__ eh, const S* __restrict__ e, const S* __restrict__ x,
                   const S* __restrict__ xh, int64_t tile, double* out) {
    V acc[P][kStatCols][kMaxS];
    const int64_t s = tile / kMinFull, st = s * L::kElems;
    for (int64_t j = 0; j < s; ++j) {
      const int64_t i = j * L::kElems;
      const Terms r0 = group8<0>(eh, e, x, xh, i, st);
      for (int col = 0; col < kStatCols; ++col)
        if (has(col)) acc[0][col][j] = r0.v[col];
      if constexpr (P == 2) {
        const Terms r1 = group8<1>(eh, e, x, xh, i, st);
        for (int col = 0; col < kStatCols; ++col)
          if (has(col)) acc[1][col][j] = r1.v[col];
      }
    }
    for (int col = 0; col < kStatCols; ++col) {
      if (!has(col)) continue;
      C total = lane_halving(halving_sum(acc[0][col], s));
      if constexpr (P == 2) total = total + lane_halving(halving_sum(acc[1][col], s));
      out[col] = double(total);
    }
  }

  // Fewer than kMinFull elements in the tile: the terms one by one into a zero-padded buffer.
  static void scalar(const S* eh, const S* e, const S* x, const S* xh, int64_t len, int64_t tile, double* out) {
    C buf[kMinFull];
    const auto column = [&](int col, auto&& term) {
      for (int64_t i = 0; i < len; ++i) buf[i] = term(i);
      for (int64_t i = len; i < tile; ++i) buf[i] = C(0);
      out[col] = double(halving_sum(buf, tile));
    };
    const auto ld = [](const S* p, int64_t i) { return load_as<C>(p, i); };
    column(kY, [&](int64_t i) { return sq(ld(eh, i)); });
    if constexpr (kEps) {
      column(kC, [&](int64_t i) { return sq(ld(e, i)); });
      column(kU, [&](int64_t i) { return u_term(ld(e, i), ld(eh, i)); });
      column(kZ, [&](int64_t i) { return z_term(ld(e, i), ld(eh, i)); });
    }
    if constexpr (kX0) column(kW, [&](int64_t i) { return z_term(ld(x, i), ld(xh, i)); });
  }

  // Any tile: a short last tile of a long tile size is copied into zero-padded buffers (zero inputs
  // give +0.0 terms, the reference's padding) and summed as a whole one.
  static void any(const S* eh, const S* e, const S* x, const S* xh, int64_t len, int64_t tile, double* out) {
    if (tile < kMinFull) return scalar(eh, e, x, xh, len, tile, out);
    if (len == tile) return full(eh, e, x, xh, tile, out);
    alignas(64) S pad[4][kEpsTile];
    const S* src[4] = {eh, e, x, xh};
    for (int k = 0; k < 4; ++k) {
      if (src[k] == nullptr) continue;
      std::memcpy(pad[k], src[k], size_t(len) * sizeof(S));
      std::memset(static_cast<void*>(pad[k] + len), 0, size_t(tile - len) * sizeof(S));
    }
    full(pad[0], kEps ? pad[1] : nullptr, kX0 ? pad[2] : nullptr, kX0 ? pad[3] : nullptr, tile, out);
  }
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// [note: eps_stats prefetch]
// A tile is read as eight short streams (stride T/8), an order hardware prefetchers follow
// poorly. So each work item first touches every cache line of its own tile in address order
// (prefetcht0, just before the eight streams read them): the misses are requested together and
// in sequence, which also keeps the hardware stream prefetchers running ahead of the tiles.
// Measured alternatives, bf16, one thread: no software prefetch ~0.35 of read bandwidth;
// prefetching the next tiles into L1 instead halves the throughput with eps (two inputs' whole
// tiles occupy the miss buffers); adding the tile 2, 4, 8 or 16 items ahead into L2
// (prefetcht1) was no better than this alone. The prefetch is an asm statement: GCC 12 at -O3
// deleted the previous __builtin_prefetch loop of this file as free of side effects (it compiled
// to no prefetch instruction at all).
TC_FORCEINLINE void prefetch_line(const char* p) {
#if defined(__x86_64__) || defined(_M_X64)
  asm volatile("prefetcht0 %0" : : "m"(*p));
#else
  __builtin_prefetch(p);
#endif
}

template <typename S, bool kEps, bool kX0>
void eps_tiles(const EpsStatsCall& a, int64_t w_begin, int64_t w_end, double* partials) {
  const auto offset = [&](int64_t w) { return w / a.ntiles * a.d + w % a.ntiles * a.tile; };
  const auto length = [&](int64_t w) { return std::min(a.tile, a.d - w % a.ntiles * a.tile); };
  const char* bases[4] = {static_cast<const char*>(a.eps_pred), static_cast<const char*>(a.eps),
                          static_cast<const char*>(a.x0), static_cast<const char*>(a.x0_pred)};
  constexpr int kInputs = 1 + (kEps ? 1 : 0);
  for (int64_t w = w_begin; w < w_end; ++w) {
    const int64_t off = offset(w), len = length(w);
    for (int k = 0; k < kInputs + (kX0 ? 2 : 0); ++k) {
      const char* p = bases[k < kInputs ? k : k - kInputs + 2] + off * int64_t(sizeof(S));
      for (int64_t b = 0; b < len * int64_t(sizeof(S)); b += 64) prefetch_line(p + b);
    }
    const S* eh = static_cast<const S*>(a.eps_pred) + off;
    const S* e = kEps ? static_cast<const S*>(a.eps) + off : nullptr;
    const S* x = kX0 ? static_cast<const S*>(a.x0) + off : nullptr;
    const S* xh = kX0 ? static_cast<const S*>(a.x0_pred) + off : nullptr;
    EpsTile<S, kEps, kX0>::any(eh, e, x, xh, len, a.tile, partials + w * kStatCols);
  }
}

template <typename S>
void eps_tiles_as(const EpsStatsCall& a, int64_t b, int64_t e, double* p) {
  const bool eps = a.eps != nullptr, x0 = a.x0 != nullptr;
  if (eps && x0) eps_tiles<S, true, true>(a, b, e, p);
  else if (eps) eps_tiles<S, true, false>(a, b, e, p);
  else if (x0) eps_tiles<S, false, true>(a, b, e, p);
  else eps_tiles<S, false, false>(a, b, e, p);
}

inline void eps_stats_tiles(const EpsStatsCall& a, int64_t b, int64_t e, double* partials) {
  switch (a.dtype) {
    case DType::kFloat32: return eps_tiles_as<float>(a, b, e, partials);
    case DType::kFloat64: return eps_tiles_as<double>(a, b, e, partials);
    case DType::kFloat16: return eps_tiles_as<half_t>(a, b, e, partials);
    default: return eps_tiles_as<bfloat16_t>(a, b, e, partials);
  }
}

// ---- minplus_dp --------------------------------------------------------------------------------
// [note: minplus blocking] (the driver is minplus_fast in dpm_ops.cpp)
// C[k, t] = min_{lo_k <= s < t} C[k-1, s] + F[s, t] for a block of columns t in [tb, te) is split
// into the candidates s < tb, whose C[k-1, s] are final for every k once the earlier blocks are
// done (minplus_outer: independent rows k, parallel, a min-plus "GEMM" over s with F's rows s
// contiguous in t), and the triangle tb <= s < t (minplus_inner: row after row, as row k needs
// row k-1 of this block). Each candidate is visited in increasing s ([note: first argmin]), so C
// and D equal the reference's exactly. Rows of a register tile may start at different lo_k; the
// extra candidates s < lo_k have C[k-1, s] = +inf and cannot win, because the launch layer takes
// this path only when F holds no -inf (so +inf + F is never NaN).

using VI = decltype(VD{} < VD{});  // the comparison mask type: one int64 per lane
constexpr int kNV = 2;                       // vectors per row of a register tile
constexpr int64_t kTileT = kLanes * kNV;     // columns of a register tile
constexpr int kRows = TC_MINPLUS_ROWS;       // rows k of a register tile
constexpr int64_t kChunkS = 256;             // candidates s per pass (F panel: 256 x 64 doubles)

// Register tile: rows k0..k0+R-1, columns [t, t + kTileT), candidates s in [s0, s1).
template <int R>
void minplus_tile(const MinplusCall& c, int64_t k0, int64_t t, int64_t s0, int64_t s1) {
  VD best[R][kNV];
  VI arg[R][kNV];
  const double* prev[R];
  for (int r = 0; r < R; ++r) {
    prev[r] = c.C + (k0 + r - 1) * c.P;
    for (int v = 0; v < kNV; ++v) {
      best[r][v] = load_vec<VD>(c.C + (k0 + r) * c.P + t + v * kLanes);
      arg[r][v] = load_vec<VI>(c.D + (k0 + r) * c.P + t + v * kLanes);
    }
  }
  for (int64_t s = s0; s < s1; ++s) {
    const double* f = c.F + s * c.P + t;
    VD fv[kNV];
    for (int v = 0; v < kNV; ++v) fv[v] = load_vec<VD>(f + v * kLanes);
    const VI sv = VI{} + s;
    for (int r = 0; r < R; ++r) {
      const double p = prev[r][s];
      for (int v = 0; v < kNV; ++v) {
        const VD cand = p + fv[v];
        const VI better = cand < best[r][v];
        best[r][v] = better ? cand : best[r][v];
        arg[r][v] = better ? sv : arg[r][v];
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kNV; ++v) {
      store_vec(c.C + (k0 + r) * c.P + t + v * kLanes, best[r][v]);
      store_vec(c.D + (k0 + r) * c.P + t + v * kLanes, arg[r][v]);
    }
}

// Columns [t0, t1) (fewer than a register tile) of rows [k0, k1), one at a time.
inline void minplus_columns(const MinplusCall& c, int64_t k0, int64_t k1, int64_t t0, int64_t t1,
                            int64_t s0, int64_t s1) {
  for (int64_t k = k0; k < k1; ++k)
    for (int64_t t = t0; t < t1; ++t) {
      double best = c.C[k * c.P + t];
      int64_t arg = c.D[k * c.P + t];
      for (int64_t s = s0; s < s1; ++s) minplus_relax(c.C[(k - 1) * c.P + s] + c.F[s * c.P + t], s, best, arg);
      c.C[k * c.P + t] = best;
      c.D[k * c.P + t] = arg;
    }
}

// Rows [k_begin, k_end), columns [tb, te), candidates lo_k <= s < tb.
inline void minplus_outer(const MinplusCall& c, int64_t tb, int64_t te, int64_t k_begin, int64_t k_end) {
  const int64_t t_vec = tb + (te - tb) / kTileT * kTileT;
  for (int64_t sc = minplus_lo(c, k_begin); sc < tb; sc += kChunkS) {
    const int64_t se = std::min(tb, sc + kChunkS);
    for (int64_t k = k_begin; k < k_end; k += kRows) {
      const int64_t s0 = std::max(sc, minplus_lo(c, k));
      if (s0 >= se) break;  // lo_k grows with k: later rows have nothing in this chunk either
      const int64_t rows = std::min<int64_t>(kRows, k_end - k);
      for (int64_t t = tb; t < t_vec; t += kTileT) {
        if (rows == kRows) minplus_tile<kRows>(c, k, t, s0, se);
        else
          for (int64_t r = 0; r < rows; ++r) minplus_tile<1>(c, k + r, t, s0, se);
      }
      minplus_columns(c, k, k + rows, t_vec, te, s0, se);
    }
  }
}

// Rows [k_begin, k_end) in order, columns [tb, te), candidates max(lo_k, tb) <= s < t.
inline void minplus_inner(const MinplusCall& c, int64_t tb, int64_t te, int64_t k_begin, int64_t k_end) {
  for (int64_t k = k_begin; k < k_end; ++k) {
    double* __restrict__ ck = c.C + k * c.P;
    int64_t* __restrict__ dk = c.D + k * c.P;
    const double* prev = c.C + (k - 1) * c.P;
    for (int64_t s = std::max(minplus_lo(c, k), tb); s + 1 < te; ++s) {
      const double p = prev[s];
      const double* __restrict__ f = c.F + s * c.P;
      for (int64_t t = s + 1; t < te; ++t) minplus_relax(p + f[t], s, ck[t], dk[t]);
    }
  }
}

}  // namespace dpm_loops
}  // namespace TC_ISA
}  // namespace cpu
}  // namespace tigercore
