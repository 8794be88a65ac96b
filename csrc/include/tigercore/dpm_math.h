// dpm_math.h — host+device arithmetic of the Analytic-DPM reductions (docs/semantics-dpm.md §9):
// eps_stats' per-element terms and fixed halving trees, segment_moments' per-timestep tree, and
// minplus_dp's first-argmin relaxation, plus the POD launch structs. Torch-free: the per-ISA CPU
// kernels (csrc/cpu/dpm_kernels.h), the CUDA kernels (csrc/cuda/dpm.cu) and csrc/tests compile
// the same code. Reference (the function these reproduce bit for bit): tigercore/reference/dpm.py.
#pragma once
#include "tigercore/dtype.h"
#include "tigercore/float_bits.h"

namespace tigercore {
namespace dpm {

// Columns of eps_stats' output (reference EPS_STATS_COLUMNS).
enum StatCol : int { kY = 0, kC = 1, kU = 2, kZ = 3, kW = 4 };
constexpr int kStatCols = 5;
constexpr int64_t kEpsTile = 1024;    // reference EPS_STATS_TILE
constexpr int64_t kSegmentTile = 64;  // reference SEGMENT_TILE

// [note: reference trees]
// The reference sums with balanced trees built from element-wise adds. The halving tree of a
// power-of-two array a[0..n) replaces it by a[i] + a[i + n/2] (i < n/2), repeatedly, down to one
// value; shorter inputs are zero-padded (+0.0 is exact). eps_stats ([note: fixed reduction tree]
// in tigercore/reference/dpm.py): every element is upcast to the compute type C — float for
// fp16/bf16/fp32 inputs, double for fp64 (eps_compute_double) — and the terms are formed in C with
// one rounding per operation in the order of sq/u_term/z_term below (builds use -ffp-contract=off
// / --fmad=false: no fma). Each row is cut into tiles of T = min(1024, pow2(d)) terms (the last
// tile padded). A tile is summed in C by the tile tree, which reads it in address order: for
// T > 32 it is R = T/32 rows of kEpsRow = 32 lanes, and adjacent rows are added pairwise, lane by
// lane (row 2i + row 2i+1), down to one row; the 32 lanes (or the T < 32 terms) are then halved.
// The tile sum is converted to double (exact), and the partials of a row (padded to a power of
// two) are halved in double; then / d. Error for C = float: ~13·2^-24 of Σ|term| at worst (10
// tree levels, up to 3 roundings in a term), stated in the reference's note. Native kernels
// evaluate exactly these trees, so they agree with the reference bitwise, for any thread count,
// block count or batch split. Identities that let them regroup the work without changing a bit:
//   the row levels act lane by lane, so the 32 lanes of a row may sit in registers in any layout;
//   the row tree of R rows = the row tree of the R/G sums of G consecutive rows (G | R, both
//     powers of two): a kernel sums groups of rows in registers and combines the group sums as a
//     binary counter (tile_tree_sum below is the plain statement);
//   halving(a, 32) = halving(a[0:16] + a[16:32], 16)  (its first level), and
//   halving(a, n) = halving(a[0::2], n/2) + halving(a[1::2], n/2) for n >= 2
//     (the last level adds the tree of the even-indexed elements to that of the odd ones).
constexpr int64_t kEpsRow = 32;

TC_FN int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

TC_FN int64_t eps_tile_len(int64_t d) {
  const int64_t p = pow2_at_least(d);
  return p < kEpsTile ? p : kEpsTile;
}

// In-place halving sum of a[0..n), n a power of two (n >= 1).
template <typename T>
TC_FN T halving_sum(T* a, int64_t n) {
  for (int64_t h = n / 2; h > 0; h /= 2)
    for (int64_t i = 0; i < h; ++i) a[i] = a[i] + a[i + h];
  return a[0];
}

// In-place tile tree of a[0..t), t a power of two ([note: reference trees]): for t > kEpsRow the
// rows [32r, 32r + 32) are added in adjacent pairs (row 2i + row 2i+1 into row i) down to row 0;
// then the first min(t, 32) values are halved.
template <typename T>
TC_FN T tile_tree_sum(T* a, int64_t t) {
  if (t <= kEpsRow) return halving_sum(a, t);
  for (int64_t rows = t / kEpsRow; rows > 1; rows /= 2)
    for (int64_t i = 0; i < rows / 2; ++i)
      for (int64_t l = 0; l < kEpsRow; ++l)
        a[i * kEpsRow + l] = a[2 * i * kEpsRow + l] + a[(2 * i + 1) * kEpsRow + l];
  return halving_sum(a, kEpsRow);
}

// Per-element terms in the compute type, from upcast inputs, in the reference's operation order.
// T is float or double, or a CPU vector of them (the same operations lane by lane).
template <typename T>
TC_FN T sq(T a) { return a * a; }
template <typename T>
TC_FN T u_term(T e, T eh) { return (e - eh) * (e + eh); }
template <typename T>
TC_FN T z_term(T e, T eh) { return sq(e - eh); }

// Element i of p upcast to the compute type C (fp16/bf16 -> fp32 -> fp64: each step exact).
template <typename C, typename S>
TC_FN C load_as(const S* p, int64_t i) {
  return C(storage<S>::load(p, i));
}

// What one eps_stats call reads (contiguous [B, d] inputs of one dtype; absent ones are null).
struct EpsStatsCall {
  DType dtype;          // storage type; the compute type is double iff it is kFloat64
  const void* eps_pred;
  const void* eps;      // with it: columns c, u, z
  const void* x0;       // with x0_pred: column w
  const void* x0_pred;
  int64_t rows, d, tile, ntiles;
};

TC_FN bool eps_compute_double(const EpsStatsCall& c) { return c.dtype == DType::kFloat64; }

// [note: segment tree]
// The reference's _segment_sum: the rows of each timestep, in sample order, are reduced in chunks
// of 64 consecutive rows by the 64-wide halving tree (zero padded), the chunk sums likewise, and so
// on. The number of such passes, `levels`, is the same for every timestep: the smallest L with
// 64^L >= the largest count of the call (0 if every count is <= 1, when single rows pass through
// untouched). A timestep with fewer rows still goes through all passes, adding +0.0.
TC_FN int segment_levels(int64_t max_count) {
  int levels = 0;
  for (int64_t cap = 1; cap < max_count; cap *= kSegmentTile) ++levels;
  return levels;
}

// The 64-wide halving tree of m <= 64 values followed by zeros. With p = pow2(m) < 64, the levels
// h >= p only add +0.0 to each value, which changes nothing but the sign of a zero (-0 -> +0); the
// remaining levels are the halving tree of the first p values. Hence the tree of p, plus +0.0.
TC_FN double halving_sum_padded64(double* buf, int64_t m) {
  const int64_t p = pow2_at_least(m);
  for (int64_t i = m; i < p; ++i) buf[i] = 0.0;
  const double s = halving_sum(buf, p);
  return p < kSegmentTile ? s + 0.0 : s;
}

// Σ rows(i), i < n, by the tree above; scratch holds ceil(n / 64) doubles (unused if levels == 0).
template <typename Rows>
TC_FN double segment_tree_sum(const Rows& rows, int64_t n, int levels, double* scratch) {
  if (n == 0) return 0.0;
  if (levels == 0) return rows(0);
  // A single row passes through every level as the 64-wide tree of one value, i.e. + 0.0 each
  // time, which is idempotent ((v + 0) + 0 == v + 0 bitwise: only -0 changes, to +0). The common
  // case when a batch spreads over many timesteps; it skips the buffers.
  if (n == 1) return rows(0) + 0.0;
  double buf[kSegmentTile];
  int64_t r = n;
  for (int level = 1; level <= levels; ++level) {
    const int64_t chunks = (r + kSegmentTile - 1) / kSegmentTile;
    for (int64_t j = 0; j < chunks; ++j) {  // in place: chunk j reads [64j, 64j+64) >= j
      const int64_t m = r - j * kSegmentTile < kSegmentTile ? r - j * kSegmentTile : kSegmentTile;
      for (int64_t i = 0; i < m; ++i) buf[i] = level == 1 ? rows(j * kSegmentTile + i) : scratch[j * kSegmentTile + i];
      scratch[j] = halving_sum_padded64(buf, m);
    }
    r = chunks;
  }
  return scratch[0];
}

// The rows of segment_moments' two passes over the sorted [B, k] statistics x of one timestep:
// column i (for the mean), and the centred product of columns i and j (for the co-moment), in the
// reference's operation order (x - mean[ts]) * (x - mean[ts]).
struct SegmentColumn {
  const double* x;
  int64_t k, i;
  TC_FORCEINLINE TC_HOST_DEVICE double operator()(int64_t r) const { return x[r * k + i]; }
};
struct SegmentProduct {
  const double* x;
  const double* mean;
  int64_t k, i, j;
  TC_FORCEINLINE TC_HOST_DEVICE double operator()(int64_t r) const {
    return (x[r * k + i] - mean[i]) * (x[r * k + j] - mean[j]);
  }
};

// [note: first argmin]
// minplus_dp keeps, per (k, t), the smallest candidate C[k-1, s] + F[s, t] and its s. Candidates
// are visited in increasing s and replace the best only when strictly smaller, so ties keep the
// smallest s (np.argmin's order). Best starts at +inf with s = -1; an entry whose best is not
// finite reports s = -1, as the reference does.
TC_FN void minplus_relax(double cand, int64_t s, double& best, int64_t& arg) {
  const bool better = cand < best;
  best = better ? cand : best;
  arg = better ? s : arg;
}

TC_FN int64_t minplus_arg(double best, int64_t arg) { return is_finite_bits(best) ? arg : -1; }

// One minplus_dp problem: F is [P, P] row-major (P = N + 1), C and D are [K + 1, P].
struct MinplusCall {
  const double* F;
  double* C;
  int64_t* D;
  int64_t P, K, start;
};

TC_FN int64_t minplus_lo(const MinplusCall& c, int64_t k) { return c.start + k - 2; }  // first s of row k

}  // namespace dpm
}  // namespace tigercore
