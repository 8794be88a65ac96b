// dpm_kernels.h — CPU loops of the Analytic-DPM ops eps_stats and minplus_dp (docs/semantics-dpm.md §9). Included
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
// A load is what one step reads from each input: one register of C (kLanes or 2·kLanes elements),
// upcast exactly. bf16 is the exception: its load is one register of 32-bit words, i.e. 2·(floats
// per register) elements, and w << 16 holds the even elements and w & 0xFFFF0000 the odd ones as
// two exact fp32 vectors (two "parts"); the tile's lane halving is then the halving of its even
// lanes plus that of its odd ones ([note: reference trees]). One load and one ALU operation per
// 16 elements on AVX-512, where a widening conversion takes a cross-lane zero-extension and a
// shift. fp16 goes through F16C (AVX2 / AVX-512; exact, like fp16_to_float, NaN payloads aside);
// the generic variant decodes fp16 lane by lane with float_bits.h.
template <typename S>
struct Leaf {
  using C = ComputeOf<S>;
  using V = VecOf<C>;
  static constexpr int kParts = std::is_same_v<S, bfloat16_t> ? 2 : 1;
  static constexpr int64_t kElems = kParts * int64_t(kVecBytes / sizeof(C));  // elements per load
  static constexpr int kRegs = int(kEpsRow / kElems);                         // loads per 32-lane row
  static_assert(kRegs >= 1 && kRegs * kElems == kEpsRow, "a row is a whole number of loads");

  // Part `part` of the load at p (bf16: 0 = even elements, 1 = odd ones).
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

// [note: eps_stats streaming]
// A tile of T >= 32 terms is read strictly in address order, one 32-lane row after the other, and
// summed by the tile tree of [note: reference trees]: the rows of a group of up to 8 are added in
// adjacent pairs in registers (group<G>: the left half's sum is finished before the right half is
// read), and the group sums of a 16- or 32-row tile likewise (the row tree of R rows is the tree
// of its groups' sums, combined as a binary counter in rows()). Within a group, one lane set
// (bf16's even or odd elements, or one register of a row) is summed after the other, so that
// only one lane set's partial sums are live (group_all). Why: the hardware prefetchers follow a
// single forward stream with no help, so no software prefetch is issued; a whole tile written as
// one unrolled expression lets the compiler reorder its loads out of address order and spill, so
// the groups are a loop; and with every lane set live at once the partial sums no longer fit in
// the registers. (The measurements behind these choices are in docs/performance.md.)

// GCC cannot see that scalar() writes buf[0, tile) before the halving sum reads exactly that range;
// zero-filling it for its sake would double the stores.
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
  static constexpr int NR = L::kRegs;

  // The columns this variant computes, in slot order: y, then c, u, z with eps, then w with x0.
  static constexpr int NC = 1 + (kEps ? 3 : 0) + (kX0 ? 1 : 0);
  static constexpr int column_of(int slot) {
    return slot == 0 ? kY : (kEps && slot <= 3) ? kC + (slot - 1) : kW;
  }
  // [note: eps_stats pipes] With eps, a leaf part costs 4 multiplies and 2 + 4 additions (u's
  // e ∓ ê, then one tree addition per column): the add pipes would be the bottleneck (Zen 4: two
  // 256-bit FADD and two FMUL/FMA pipes). The tree additions of c and z go through add_via_fma
  // instead, which balances the two kinds. Same bits either way.
  static constexpr bool on_fma_pipe(int c) { return column_of(c) == kC || column_of(c) == kZ; }

  // The terms of a row (or a lane-wise sum of rows): one vector per (column slot, part, load of
  // the row), flat, so that every index is a constant once for_each is expanded and GCC keeps
  // the whole struct in registers (with nested loops over a [5][P][NR] array GCC keeps them on
  // the stack).
  static constexpr int kSlots = NC * P * NR;
  static constexpr int slot(int c, int q, int k) { return (c * P + q) * NR + k; }
  template <typename F, size_t... I>
  static TC_FORCEINLINE void for_each(F&& f, std::index_sequence<I...>) {
    (f(std::integral_constant<int, int(I)>{}), ...);
  }
  template <typename F>
  static TC_FORCEINLINE void for_each(F&& f) { for_each(f, std::make_index_sequence<kSlots>{}); }

  struct Terms {
    V v[kSlots];
    TC_FORCEINLINE Terms operator+(const Terms& b) const {
      Terms r;
      for_each([&](auto i) {
        constexpr int c = int(i) / (P * NR);
        r.v[i] = on_fma_pipe(c) ? add_via_fma(v[i], b.v[i]) : v[i] + b.v[i];
      });
      return r;
    }
  };

  struct Inputs {
    const S* eh;
    const S* e;
    const S* x;
    const S* xh;
  };

  // One lane set of a row (part q of load k) or of a lane-wise sum of rows: a vector per column.
  struct Lanes {
    V v[NC];
    TC_FORCEINLINE Lanes operator+(const Lanes& b) const {
      Lanes r;
      for (int c = 0; c < NC; ++c) r.v[c] = on_fma_pipe(c) ? add_via_fma(v[c], b.v[c]) : v[c] + b.v[c];
      return r;
    }
  };

  // The terms of lane set (q, k) of the 32-lane row at element offset i.
  template <int q, int k>
  static TC_FORCEINLINE Lanes row(const Inputs& in, int64_t i) {
    Lanes t;
    i += k * L::kElems;
    const V h = L::template load<q>(in.eh + i);
    t.v[0] = sq(h);
    if constexpr (kEps) {
      const V g = L::template load<q>(in.e + i);
      t.v[1] = sq(g);
      t.v[2] = u_term(g, h);
      t.v[3] = z_term(g, h);
    }
    if constexpr (kX0) t.v[NC - 1] = z_term(L::template load<q>(in.x + i), L::template load<q>(in.xh + i));
    return t;
  }

  // The row tree of lane set (q, k) of the G rows from element offset i, the left half first.
  template <int G, int q, int k>
  static TC_FORCEINLINE Lanes group(const Inputs& in, int64_t i) {
    if constexpr (G == 1) {
      return row<q, k>(in, i);
    } else {
      const Lanes left = group<G / 2, q, k>(in, i);
      const Lanes right = group<G / 2, q, k>(in, i + (G / 2) * kEpsRow);
      return left + right;
    }
  }

  // A compiler barrier: l is computed here, and no later load is moved above this point. Without
  // it GCC interleaves the lane sets of group() again, and their partial sums spill.
  static TC_FORCEINLINE void finished(Lanes& l) {
#if defined(__x86_64__) || defined(_M_X64)
    for (int c = 0; c < NC; ++c) asm volatile("" : "+v"(l.v[c]) : : "memory");
#else
    asm volatile("" : : : "memory");
#endif
  }

  // The row tree of the G rows from element offset i, one lane set after the other: the first
  // reads the rows from memory in address order, the others again from L1. A lane set's partial
  // sums fit in registers; all of them at once (P·NR·NC vectors, 8 zmm a row for bf16 with eps)
  // do not, and would spill.
  template <int G, size_t... I>
  static TC_FORCEINLINE Terms group_all(const Inputs& in, int64_t i, std::index_sequence<I...>) {
    Terms t;
    const auto put = [&](auto lane_set, Lanes l) {
      constexpr int q = int(lane_set) / NR, k = int(lane_set) % NR;
      finished(l);
      for (int c = 0; c < NC; ++c) t.v[slot(c, q, k)] = l.v[c];
    };
    (put(std::integral_constant<int, int(I)>{}, group<G, int(I) / NR, int(I) % NR>(in, i)), ...);
    return t;
  }
  template <int G>
  static TC_FORCEINLINE Terms group(const Inputs& in, int64_t i) {
    return group_all<G>(in, i, std::make_index_sequence<P * NR>{});
  }

  // The row tree of a whole tile of R rows (R a power of two, 1 <= R <= 32): one group of up to
  // 8 rows in registers, or the groups of 8 one after the other (a loop, so that the compiler
  // keeps each group's loads in address order), their sums combined as a binary counter.
  static TC_FORCEINLINE Terms rows(const Inputs& in, int64_t R) {
    switch (R) {
      case 1: return group<1>(in, 0);
      case 2: return group<2>(in, 0);
      case 4: return group<4>(in, 0);
      default: break;
    }
    constexpr int G = 8;
    Terms done[3];  // done[k]: the sum of 2^k groups (R / G <= 4), waiting for its right neighbour
    Terms v;
#pragma GCC unroll 1
    for (int64_t g = 0; g < R / G; ++g) {
      v = group<G>(in, g * G * kEpsRow);
      int k = 0;
      for (int64_t idx = g; idx & 1; idx >>= 1, ++k) v = done[k] + v;
      done[k] = v;
    }
    return v;
  }

  // The lane halving of the final row, per column: over the row's loads (load k + load k + NR/2,
  // i.e. lane l + lane l + 16), then over the lanes of the last register; bf16's even and odd
  // lanes separately, added last.
  static TC_FORCEINLINE void finish(Terms& t, double* out) {
    for (int c = 0; c < NC; ++c) {
      C total = lane_halving(halving_sum(&t.v[slot(c, 0, 0)], NR));
      if constexpr (P == 2) total = total + lane_halving(halving_sum(&t.v[slot(c, 1, 0)], NR));
      out[column_of(c)] = double(total);
    }
  }

  // A whole tile of T >= 32 terms.
  static void full(const Inputs& in, int64_t tile, double* out) {
    Terms t = rows(in, tile / kEpsRow);
    finish(t, out);
  }

  // A tile of T < 32 terms: the terms one by one into a buffer, halved.
  static void scalar(const Inputs& in, int64_t len, int64_t tile, double* out) {
    C buf[kEpsRow];
    const auto column = [&](int col, auto&& term) {
      for (int64_t i = 0; i < len; ++i) buf[i] = term(i);
      for (int64_t i = len; i < tile; ++i) buf[i] = C(0);
      out[col] = double(halving_sum(buf, tile));
    };
    const auto ld = [](const S* p, int64_t i) { return load_as<C>(p, i); };
    column(kY, [&](int64_t i) { return sq(ld(in.eh, i)); });
    if constexpr (kEps) {
      column(kC, [&](int64_t i) { return sq(ld(in.e, i)); });
      column(kU, [&](int64_t i) { return u_term(ld(in.e, i), ld(in.eh, i)); });
      column(kZ, [&](int64_t i) { return z_term(ld(in.e, i), ld(in.eh, i)); });
    }
    if constexpr (kX0) column(kW, [&](int64_t i) { return z_term(ld(in.x, i), ld(in.xh, i)); });
  }

  // Any tile: a short last tile is copied into zero-padded buffers (zero inputs give +0.0 terms,
  // the reference's padding) and summed as a whole one.
  static void any(const Inputs& in, int64_t len, int64_t tile, double* out) {
    if (tile < kEpsRow) return scalar(in, len, tile, out);
    if (len == tile) return full(in, tile, out);
    alignas(64) S pad[4][kEpsTile];
    const S* src[4] = {in.eh, in.e, in.x, in.xh};
    for (int k = 0; k < 4; ++k) {
      if (src[k] == nullptr) continue;
      std::memcpy(pad[k], src[k], size_t(len) * sizeof(S));
      std::memset(static_cast<void*>(pad[k] + len), 0, size_t(tile - len) * sizeof(S));
    }
    full({pad[0], kEps ? pad[1] : nullptr, kX0 ? pad[2] : nullptr, kX0 ? pad[3] : nullptr}, tile, out);
  }
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

template <typename S, bool kEps, bool kX0>
void eps_tiles(const EpsStatsCall& a, int64_t w_begin, int64_t w_end, double* partials) {
  for (int64_t w = w_begin; w < w_end; ++w) {
    const int64_t off = w / a.ntiles * a.d + w % a.ntiles * a.tile;
    const int64_t len = std::min(a.tile, a.d - w % a.ntiles * a.tile);
    const typename EpsTile<S, kEps, kX0>::Inputs in{
        static_cast<const S*>(a.eps_pred) + off, kEps ? static_cast<const S*>(a.eps) + off : nullptr,
        kX0 ? static_cast<const S*>(a.x0) + off : nullptr, kX0 ? static_cast<const S*>(a.x0_pred) + off : nullptr};
    EpsTile<S, kEps, kX0>::any(in, len, a.tile, partials + w * kStatCols);
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
