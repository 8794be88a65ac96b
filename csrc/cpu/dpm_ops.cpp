// dpm_ops.cpp — CPU entry points of tigercore::eps_stats, segment_moments and minplus_dp
// (docs/semantics-dpm.md §9): checks (host/dpm_plan.h), then threads over work whose split never
// changes a result — eps_stats over fixed tiles, segment_moments over timesteps, minplus_dp over
// rows of a column block. The loops are the per-ISA dpm_kernels.h; the trees and the argmin are
// tigercore/dpm_math.h. Every result equals the reference (tigercore/reference/dpm.py) bitwise.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "host/dpm_plan.h"
#include "kernel_table.h"
#include "work_queue.h"

namespace tigercore {
namespace cpu {
namespace {

using namespace ::tigercore::dpm;

// Work below kParallelWork units (elements, products, candidates) runs inline: a parallel region
// ends in a barrier, which a descheduled worker can delay by a whole time slice. Chunks are handed
// out from a shared counter (parallel_ranges, work_queue.h), so a thread whose core is busy takes
// fewer of them; no result depends on which thread computes an item.
constexpr int64_t kParallelWork = int64_t(1) << 18;

template <typename Body>
void parallel_chunks(int64_t n, int64_t chunk, int64_t work, const Body& body) {
  parallel_ranges(n, chunk, work, kParallelWork, body);
}

// ---- eps_stats ---------------------------------------------------------------------------------

at::Tensor eps_stats_cpu(const at::Tensor& eps_pred, const std::optional<at::Tensor>& eps,
                         const std::optional<at::Tensor>& x0, const std::optional<at::Tensor>& x0_pred) {
  EpsStatsPlan p = prepare_eps_stats(eps_pred, eps, x0, x0_pred);
  const EpsStatsCall& c = p.call;
  if (c.rows == 0) return p.out;
  const int64_t items = c.rows * c.ntiles;
  // [note: eps_stats partials buffer] The tile partials (0.5 MB for 4096 x 3072 or 64 x 196608)
  // live in a per-thread buffer kept across calls: a fresh buffer of that size is a fresh mmap,
  // whose pages fault in while the tile loop writes them, a cost comparable to the loop itself.
  // Buffers above 16 MB are not kept. Only the entries of the call's columns are written, and
  // only those are read.
  const size_t n_partials = size_t(items * kStatCols);
  thread_local std::vector<double> kept;
  std::vector<double> fresh;
  std::vector<double>& buffer = n_partials <= (size_t(16) << 20) / sizeof(double) ? kept : fresh;
  if (buffer.size() < n_partials) buffer.resize(n_partials);
  double* partials = buffer.data();
  const DpmKernelTable& kt = active_dpm_kernels();
  // 256 K elements a grab: each thread then reads long runs of consecutive tiles, which the
  // hardware prefetchers follow; with small grabs the two threads' reads interleave in memory and
  // two threads read no faster than one.
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 18) / c.tile);  // 256 K elements a chunk
  parallel_chunks(items, chunk, c.rows * c.d, [&](int64_t b, int64_t e) { kt.eps_stats_tiles(c, b, e, partials); });
  // Second level of the tree: the tile partials of a row, zero-padded to a power of two.
  const int64_t width = pow2_at_least(c.ntiles);
  double* out = p.out.mutable_data_ptr<double>();
  parallel_chunks(c.rows, std::max<int64_t>(1, kParallelWork / width), c.rows * width, [&](int64_t b, int64_t e) {
    std::vector<double> buf(static_cast<size_t>(width));
    for (int64_t row = b; row < e; ++row)
      for (int col = 0; col < kStatCols; ++col) {
        if (!eps_has_column(c, col)) continue;
        for (int64_t j = 0; j < width; ++j)
          buf[j] = j < c.ntiles ? partials[size_t((row * c.ntiles + j) * kStatCols + col)] : 0.0;
        out[row * kStatCols + col] = halving_sum(buf.data(), width) / double(c.d);
      }
  });
  return p.out;
}

// ---- segment_moments ---------------------------------------------------------------------------

// [note: segment plan on the host]
// The CPU entry plans in one pass over the timesteps instead of a dozen tensor ops (sort, gather,
// bincount, cumsums, reductions read back): a counting sort, stable, so the rows of a timestep
// keep sample order, and the rows gathered in float64 (exact). At B = 256 the tensor-op plan was
// ~40 us of a ~70 us call. The same plan as plan_segments (host/dpm_plan.h), hence the same bits.
struct HostSegments {
  at::Tensor x;                       // [B, k] float64, rows sorted stably by timestep
  std::vector<int64_t> first, count;  // per timestep 0..N
  int levels = 0;                     // [note: segment tree]
};

HostSegments plan_segments_host(const at::Tensor& stats, const at::Tensor& timesteps, int64_t num_steps) {
  check_segment_inputs(stats, timesteps, num_steps);
  const at::Tensor ts = timesteps.to(at::kCPU, at::kLong).contiguous();
  const at::Tensor src = stats.to(at::kDouble).contiguous();
  const int64_t rows = ts.size(0), k = stats.size(1);
  const int64_t* t = ts.const_data_ptr<int64_t>();
  if (rows > 0) {
    const auto [lo, hi] = std::minmax_element(t, t + rows);
    check_segment_range(*lo, *hi, num_steps);
  }
  HostSegments h;
  h.count.assign(size_t(num_steps + 1), 0);
  for (int64_t i = 0; i < rows; ++i) ++h.count[size_t(t[i])];
  h.first.assign(h.count.size(), 0);
  int64_t max_count = 0;
  for (size_t n = 1; n < h.count.size(); ++n) h.first[n] = h.first[n - 1] + h.count[n - 1];
  for (const int64_t c : h.count) max_count = std::max(max_count, c);
  h.levels = segment_levels(max_count);
  h.x = at::empty({rows, k}, src.options());
  std::vector<int64_t> next = h.first;
  const double* in = src.const_data_ptr<double>();
  double* out = h.x.mutable_data_ptr<double>();
  for (int64_t i = 0; i < rows; ++i) std::copy_n(in + i * k, k, out + next[size_t(t[i])]++ * k);
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> segment_moments_cpu(const at::Tensor& stats, const at::Tensor& timesteps,
                                                                   int64_t num_steps) {
  const HostSegments p = plan_segments_host(stats, timesteps, num_steps);
  const int64_t k = stats.size(1), nseg = num_steps + 1;
  const at::TensorOptions f64 = stats.options().dtype(at::kDouble);
  at::Tensor mean = at::zeros({nseg, k}, f64), com = at::zeros({nseg, k, k}, f64);
  at::Tensor counts = at::empty({nseg}, f64);
  std::copy(p.count.begin(), p.count.end(), counts.mutable_data_ptr<double>());
  const double* x = p.x.const_data_ptr<double>();
  const int64_t* first = p.first.data();
  const int64_t* count = p.count.data();
  double* m = mean.mutable_data_ptr<double>();
  double* cm = com.mutable_data_ptr<double>();
  // Timesteps are independent: any split over threads gives the same bits.
  parallel_chunks(nseg, 16, p.x.size(0) * k * k, [&](int64_t b, int64_t e) {
    std::vector<double> scratch;
    for (int64_t n = b; n < e; ++n) {
      const int64_t cnt = count[n];
      if (cnt == 0) continue;
      scratch.resize(size_t((cnt + kSegmentTile - 1) / kSegmentTile));
      const double* xs = x + first[n] * k;
      for (int64_t i = 0; i < k; ++i)
        m[n * k + i] = segment_tree_sum(SegmentColumn{xs, k, i}, cnt, p.levels, scratch.data()) / double(cnt);
      // (x_i − m_i)(x_j − m_j) and (x_j − m_j)(x_i − m_i) are the same rounded products (fp
      // multiplication commutes), summed by the same tree: the matrix is symmetric bit for bit
      // (NaN payloads aside: with two different NaNs in a row, x86 keeps the first operand's).
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = i; j < k; ++j)
          cm[(n * k + i) * k + j] = cm[(n * k + j) * k + i] =
              segment_tree_sum(SegmentProduct{xs, m + n * k, k, i, j}, cnt, p.levels, scratch.data());
    }
  });
  return {counts, mean, com};
}

// ---- minplus_dp --------------------------------------------------------------------------------

// [note: minplus blocking] in dpm_kernels.h. Valid when F has no -inf (then no candidate is NaN).
void minplus_fast(const MinplusCall& c) {
  const DpmKernelTable& kt = active_dpm_kernels();
  constexpr int64_t kBlockT = 64, kGroupRows = 32;
  const int64_t N = c.P - 1;
  for (int64_t tb = c.start + 1; tb <= N; tb += kBlockT) {
    const int64_t te = std::min(N + 1, tb + kBlockT);
    const int64_t k_last = std::min(c.K, te - c.start);       // rows with some t >= lo_k + 1 here
    const int64_t k_outer = std::min(k_last, tb - c.start + 1);  // rows with some s = lo_k.. < tb
    // rows 2..k_outer in groups, the longest (small k: most candidates) handed out first; row k has
    // tb - lo_k candidates s for each of the te - tb columns
    const int64_t work = (k_outer - 1) * (tb - minplus_lo(c, (2 + k_outer) / 2)) * (te - tb);
    parallel_chunks(k_outer - 1, kGroupRows, work, [&](int64_t b, int64_t e) { kt.minplus_outer(c, tb, te, 2 + b, 2 + e); });
    kt.minplus_inner(c, tb, te, 2, k_last + 1);
  }
}

// Every candidate checked for NaN (inf - inf), as the reference does; used when F holds -inf or a
// sum overflowed to -inf.
void minplus_exact(const MinplusCall& c) {
  const int64_t N = c.P - 1;
  for (int64_t k = 2; k <= c.K && minplus_lo(c, k) + 1 <= N; ++k) {
    const int64_t lo = minplus_lo(c, k);
    std::atomic<int64_t> nan_t{-1};
    parallel_chunks(N - lo, std::max<int64_t>(1, kParallelWork / (N - lo)), (N - lo) * (N - lo), [&](int64_t b, int64_t e) {
      for (int64_t t = lo + 1 + b; t < lo + 1 + e; ++t) {
        double best = std::numeric_limits<double>::infinity();
        int64_t arg = -1;
        bool nan = false;
        for (int64_t s = lo; s < t; ++s) {
          const double cand = c.C[(k - 1) * c.P + s] + c.F[s * c.P + t];
          nan = nan || cand != cand;
          minplus_relax(cand, s, best, arg);
        }
        if (nan) nan_t.store(t);
        c.C[k * c.P + t] = best;
        c.D[k * c.P + t] = minplus_arg(best, arg);
      }
    });
    TORCH_CHECK_VALUE(nan_t.load() < 0, "tigercore::minplus_dp: F is NaN for a candidate of t = ", nan_t.load(),
                      " in row k = ", k, " (+inf + -inf)");
  }
}

std::tuple<at::Tensor, at::Tensor> minplus_dp_cpu(const at::Tensor& F_in, int64_t K, int64_t start) {
  const at::Tensor F = prepare_minplus(F_in, K, start);
  auto [C, D] = minplus_outputs(F, K, start);
  const MinplusCall c = minplus_call(F, C, D, K, start);
  const bool neg_inf = (F == -std::numeric_limits<double>::infinity()).any().item<bool>();
  if (!neg_inf) {
    minplus_fast(c);
    if (!(C == -std::numeric_limits<double>::infinity()).any().item<bool>()) return {C, D};
    std::tie(C, D) = minplus_outputs(F, K, start);  // a sum overflowed to -inf: start over, exactly
  }
  minplus_exact(minplus_call(F, C, D, K, start));
  return {C, D};
}

}  // namespace

TORCH_LIBRARY_IMPL(tigercore, CPU, m) {
  m.impl("eps_stats", &eps_stats_cpu);
  m.impl("segment_moments", &segment_moments_cpu);
  m.impl("minplus_dp", &minplus_dp_cpu);
}

}  // namespace cpu
}  // namespace tigercore
