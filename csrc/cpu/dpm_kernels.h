// dpm_kernels.h — CPU loops of the Analytic-DPM ops eps_stats and minplus_dp (spec §9). Included
// by kernels_{generic,avx2,avx512}.cpp, each with its own TC_ISA namespace, target pragma and
// vector width, so the same code is vectorised for each instruction set. The arithmetic is
// tigercore/dpm_math.h; the launch layer is dpm_ops.cpp. Reference: tigercore/reference/dpm.py.
#pragma once
#include <algorithm>
#include <type_traits>

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
// GCC vector extensions: one VD is one register of doubles of this ISA (2, 4 or 8 lanes), holding
// consecutive elements.
constexpr int kVecBytes = TC_VEC_BYTES;
constexpr int64_t kLanes = kVecBytes / 8;
typedef double VD __attribute__((vector_size(kVecBytes)));
typedef float VF __attribute__((vector_size(kVecBytes / 2)));

template <typename V, typename T>
TC_FORCEINLINE V load_vec(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
TC_FORCEINLINE void store_vec(T* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }

// [note: upcast loads]
// kLanes elements from p, upcast exactly to double (as load_f64). GCC 12 lowers
// __builtin_convertvector between different widths into 128-bit halves and inserts, about twice
// the work of the one AVX2 / AVX-512 instruction, so those variants use the conversion intrinsics
// (F16C for fp16: exact, like fp16_to_float; NaN payloads aside, which stay NaN). The generic
// variant decodes lane by lane with float_bits.h.
template <typename S>
TC_FORCEINLINE VD load_vd(const S* p) {
  if constexpr (std::is_same_v<S, double>) {
    return load_vec<VD>(p);
#if TC_VEC_BYTES == 64
  } else if constexpr (std::is_same_v<S, float>) {
    return (VD)_mm512_cvtps_pd(_mm256_loadu_ps(p));
  } else if constexpr (std::is_same_v<S, bfloat16_t>) {
    const __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
    return (VD)_mm512_cvtps_pd(_mm256_castsi256_ps(u));
  } else {
    return (VD)_mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
#elif TC_VEC_BYTES == 32
  } else if constexpr (std::is_same_v<S, float>) {
    return (VD)_mm256_cvtps_pd(_mm_loadu_ps(p));
  } else if constexpr (std::is_same_v<S, bfloat16_t>) {
    const __m128i u = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))), 16);
    return (VD)_mm256_cvtps_pd(_mm_castsi128_ps(u));
  } else {
    return (VD)_mm256_cvtps_pd(_mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
#else
  } else {
    float f[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) f[l] = storage<S>::load(p, l);
    return __builtin_convertvector(load_vec<VF>(f), VD);
  }
#endif
}

// ---- eps_stats ---------------------------------------------------------------------------------
// GCC cannot see that the loops below write acc[col][0, n) and buf[0, tile) before the halving
// sums read exactly that range; zero-filling them for its sake would double the stores of a tile.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

struct Terms { VD y, c, u, z, w; };
TC_FORCEINLINE Terms operator+(const Terms& a, const Terms& b) {
  return {a.y + b.y, a.c + b.c, a.u + b.u, a.z + b.z, a.w + b.w};
}

// The terms of elements [i, i + kLanes) plus those of [j, j + kLanes): one halving level.
template <typename S, bool kEps, bool kX0>
TC_FORCEINLINE Terms level1(const S* eh, const S* e, const S* x, const S* xh, int64_t i, int64_t j) {
  Terms r{};
  const VD h0 = load_vd(eh + i), h1 = load_vd(eh + j);
  r.y = sq(h0) + sq(h1);
  if constexpr (kEps) {
    const VD g0 = load_vd(e + i), g1 = load_vd(e + j);
    r.c = sq(g0) + sq(g1);
    r.u = u_term(g0, h0) + u_term(g1, h1);
    r.z = z_term(g0, h0) + z_term(g1, h1);
  }
  if constexpr (kX0) r.w = z_term(load_vd(x + i), load_vd(xh + i)) + z_term(load_vd(x + j), load_vd(xh + j));
  return r;
}

// Σ of the s8 = kLanes·n values in a[0, n) by the halving tree: vectors first, then lanes.
TC_FORCEINLINE double halving_sum_vec(VD* a, int64_t n) {
  for (int64_t h = n / 2; h > 0; h /= 2)
    for (int64_t j = 0; j < h; ++j) a[j] = a[j] + a[j + h];
  double lanes[kLanes];
  store_vec(lanes, a[0]);
  return halving_sum(lanes, kLanes);
}

// A whole tile of T = 8·s8 elements (s8 a multiple of kLanes): the first three halving levels
// straight from the inputs, for i < s8 ((p_i + p_i+4s) + (p_i+2s + p_i+6s)) + ((p_i+s + p_i+5s) +
// (p_i+3s + p_i+7s)) with s = s8 — the same expressions as dpm::halving8 — kLanes values of i
// per step, then the remaining levels on the s8 partials.
template <typename S, bool kEps, bool kX0>
void eps_full_tile(const S* __restrict__ eh, const S* __restrict__ e, const S* __restrict__ x,
                   const S* __restrict__ xh, int64_t s8, double* out) {
  VD acc[kStatCols][kEpsTile / 8 / kLanes];
  const int64_t n = s8 / kLanes;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t i = j * kLanes;
    const Terms a = level1<S, kEps, kX0>(eh, e, x, xh, i, i + 4 * s8) + level1<S, kEps, kX0>(eh, e, x, xh, i + 2 * s8, i + 6 * s8);
    const Terms b = level1<S, kEps, kX0>(eh, e, x, xh, i + s8, i + 5 * s8) + level1<S, kEps, kX0>(eh, e, x, xh, i + 3 * s8, i + 7 * s8);
    acc[kY][j] = a.y + b.y;
    if constexpr (kEps) {
      acc[kC][j] = a.c + b.c;
      acc[kU][j] = a.u + b.u;
      acc[kZ][j] = a.z + b.z;
    }
    if constexpr (kX0) acc[kW][j] = a.w + b.w;
  }
  out[kY] = halving_sum_vec(acc[kY], n);
  if constexpr (kEps) {
    out[kC] = halving_sum_vec(acc[kC], n);
    out[kU] = halving_sum_vec(acc[kU], n);
    out[kZ] = halving_sum_vec(acc[kZ], n);
  }
  if constexpr (kX0) out[kW] = halving_sum_vec(acc[kW], n);
}

// A tile with fewer than T elements (the last one of a row) or T < 8: products zero-padded to T.
template <typename S, bool kEps, bool kX0>
void eps_partial_tile(const S* eh, const S* e, const S* x, const S* xh, int64_t len, int64_t tile,
                      double* out) {
  double buf[kEpsTile];
  auto column = [&](int col, auto&& term) {
    for (int64_t i = 0; i < len; ++i) buf[i] = term(i);
    for (int64_t i = len; i < tile; ++i) buf[i] = 0.0;
    out[col] = halving_sum(buf, tile);
  };
  column(kY, [&](int64_t i) { return sq(load_f64(eh, i)); });
  if constexpr (kEps) {
    column(kC, [&](int64_t i) { return sq(load_f64(e, i)); });
    column(kU, [&](int64_t i) { return u_term(load_f64(e, i), load_f64(eh, i)); });
    column(kZ, [&](int64_t i) { return z_term(load_f64(e, i), load_f64(eh, i)); });
  }
  if constexpr (kX0) column(kW, [&](int64_t i) { return z_term(load_f64(x, i), load_f64(xh, i)); });
}

// [note: eps_stats prefetch]
// A tile is read as eight short streams (stride T/8); hardware prefetchers do not follow them into
// the next page, so each work item first requests the next item's tile of every input.
template <typename S>
TC_FORCEINLINE void prefetch(const void* base, int64_t off, int64_t len) {
  if (base == nullptr) return;
  const char* p = reinterpret_cast<const char*>(static_cast<const S*>(base) + off);
  for (int64_t b = 0; b < len * int64_t(sizeof(S)); b += 64) __builtin_prefetch(p + b);
}

template <typename S, bool kEps, bool kX0>
void eps_tiles(const EpsStatsCall& a, int64_t w_begin, int64_t w_end, double* partials) {
  const auto offset = [&](int64_t w) { return w / a.ntiles * a.d + w % a.ntiles * a.tile; };
  const auto length = [&](int64_t w) { return std::min(a.tile, a.d - w % a.ntiles * a.tile); };
  for (int64_t w = w_begin; w < w_end; ++w) {
    if (w + 1 < a.rows * a.ntiles) {
      const int64_t off = offset(w + 1), len = length(w + 1);
      for (const void* base : {a.eps_pred, a.eps, a.x0, a.x0_pred}) prefetch<S>(base, off, len);
    }
    const int64_t off = offset(w), len = length(w);
    const S* eh = static_cast<const S*>(a.eps_pred) + off;
    const S* e = kEps ? static_cast<const S*>(a.eps) + off : nullptr;
    const S* x = kX0 ? static_cast<const S*>(a.x0) + off : nullptr;
    const S* xh = kX0 ? static_cast<const S*>(a.x0_pred) + off : nullptr;
    double* out = partials + w * kStatCols;
    if (len == a.tile && a.tile >= 8 * kLanes) eps_full_tile<S, kEps, kX0>(eh, e, x, xh, a.tile / 8, out);
    else eps_partial_tile<S, kEps, kX0>(eh, e, x, xh, len, a.tile, out);
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

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

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
