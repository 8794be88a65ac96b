// dpm.cu — CUDA entry points of tigercore::eps_stats, segment_moments and minplus_dp
// (docs/semantics-dpm.md §9). Thin by design: eps_stats is one warp per (sample, tile), summing in fp32
// (fp64 for fp64 inputs), plus one thread per (sample, column) for the fp64 tile partials,
// segment_moments one thread per (timestep, entry), minplus_dp one launch per row k with a thread
// per t. No floating-point atomics; every tree and
// the argmin are tigercore/dpm_math.h, shared with the CPU, so the results equal the reference
// (tigercore/reference/dpm.py) and the CPU kernels bitwise. Checks: csrc/host/dpm_plan.h.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>
#include <type_traits>

#include "host/dpm_plan.h"

namespace tigercore {
namespace cuda {
namespace {

using namespace ::tigercore::dpm;

constexpr int kThreads = 256;  // eps_stats: eight warps, a tile each
constexpr int kWarp = 32;

unsigned blocks_for(int64_t n) { return unsigned((n + kThreads - 1) / kThreads); }

// ---- eps_stats ---------------------------------------------------------------------------------

// The terms of one element in the compute type C ([note: reference trees]: float, or double for
// fp64 storage).
template <typename C>
struct Terms {
  C v[kStatCols];
};

template <typename C, typename S, bool kEps, bool kX0>
__device__ Terms<C> leaf(const S* eh, const S* e, const S* x, const S* xh, int64_t i, int64_t len) {
  Terms<C> t{};
  if (i >= len) return t;  // terms past the row's end are +0.0, as the reference pads them
  const C h = load_as<C>(eh, i);
  t.v[kY] = sq(h);
  if constexpr (kEps) {
    const C g = load_as<C>(e, i);
    t.v[kC] = sq(g);
    t.v[kU] = u_term(g, h);
    t.v[kZ] = z_term(g, h);
  }
  if constexpr (kX0) t.v[kW] = z_term(load_as<C>(x, i), load_as<C>(xh, i));
  return t;
}

template <typename C>
__device__ Terms<C> add(const Terms<C>& a, const Terms<C>& b) {
  Terms<C> r;
  for (int col = 0; col < kStatCols; ++col) r.v[col] = a.v[col] + b.v[col];
  return r;
}

// [note: CUDA tile tree]
// One warp per tile of T = min(1024, pow2(d)) terms, eight consecutive tiles of the flattened
// (row, tile) index per block, summed in the compute type C by the reference's tile tree ([note:
// reference trees]; --fmad=false keeps every product and sum separately rounded). Lane l owns
// column l of the tile's R = T/32 rows (R = 1 for T <= 32): it reads elements 32r + l, r < R (a
// warp reads one 32-element row per step, coalesced) and sums them by column_sum<R>, which adds
// the sums of the first and second R/2 rows, recursively: the balanced tree over the R rows in
// order, i.e. the adjacent-pair row tree (row 2i + row 2i+1, level by level), acting lane by lane
// (R is a template argument, so the values stay in registers). The warp then halves the lanes
// with shuffles: lane i adds lane i + h for h = n/2, ..., 1 with n = min(T, 32) (starting at n/2,
// not 16, so a T < 32 tile gets no extra +0.0, which could turn -0 into +0): the pairs of
// halving_sum(a, n). Lane 0 writes the tile partial, converted to double (exact), for
// eps_rows_kernel. CUB's WarpReduce/BlockReduce would be as deterministic, but their trees differ
// from the reference's, so CPU and CUDA would only agree to rounding; this one agrees bitwise.
constexpr int kTileWarps = kThreads / kWarp;  // tiles per block

template <int R, typename C, typename S, bool kEps, bool kX0>
__device__ Terms<C> column_sum(const S* eh, const S* e, const S* x, const S* xh, int64_t i, int64_t len) {
  if constexpr (R == 1) return leaf<C, S, kEps, kX0>(eh, e, x, xh, i, len);
  else return add(column_sum<R / 2, C, S, kEps, kX0>(eh, e, x, xh, i, len),
                  column_sum<R / 2, C, S, kEps, kX0>(eh, e, x, xh, i + (R / 2) * kWarp, len));
}

template <typename C, typename S, bool kEps, bool kX0>
__global__ void eps_tiles_kernel(EpsStatsCall c, double* partials, int64_t width) {
  const int64_t id = int64_t(blockIdx.x) * kTileWarps + threadIdx.x / kWarp;  // warp-uniform
  if (id >= c.rows * c.ntiles) return;  // whole warps leave: the shuffles below see all 32 lanes
  const int64_t row = id / c.ntiles, tile = id % c.ntiles;
  const int64_t off = row * c.d + tile * c.tile;
  const int64_t len = c.d - tile * c.tile < c.tile ? c.d - tile * c.tile : c.tile;
  const S* eh = static_cast<const S*>(c.eps_pred) + off;
  const S* e = kEps ? static_cast<const S*>(c.eps) + off : nullptr;
  const S* x = kX0 ? static_cast<const S*>(c.x0) + off : nullptr;
  const S* xh = kX0 ? static_cast<const S*>(c.x0_pred) + off : nullptr;
  const int l = threadIdx.x % kWarp;
  Terms<C> t;
  switch (c.tile / kWarp) {  // R; T <= 32: one term per lane, +0.0 past the tile's end
    case 32: t = column_sum<32, C, S, kEps, kX0>(eh, e, x, xh, l, len); break;
    case 16: t = column_sum<16, C, S, kEps, kX0>(eh, e, x, xh, l, len); break;
    case 8: t = column_sum<8, C, S, kEps, kX0>(eh, e, x, xh, l, len); break;
    case 4: t = column_sum<4, C, S, kEps, kX0>(eh, e, x, xh, l, len); break;
    case 2: t = column_sum<2, C, S, kEps, kX0>(eh, e, x, xh, l, len); break;
    default: t = column_sum<1, C, S, kEps, kX0>(eh, e, x, xh, l, len); break;
  }
  const int n = c.tile < kWarp ? int(c.tile) : kWarp;
  for (int col = 0; col < kStatCols; ++col) {
    C v = t.v[col];
    for (int h = n / 2; h > 0; h /= 2) v = v + __shfl_down_sync(0xffffffffu, v, h);
    if (l == 0) partials[(row * kStatCols + col) * width + tile] = double(v);
  }
}

// One thread per (row, column): the row's tile partials (zero-padded to width) halved, then / d.
__global__ void eps_rows_kernel(EpsStatsCall c, double* partials, int64_t width, double* out) {
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= c.rows * kStatCols) return;
  const int col = int(id % kStatCols);
  if ((col == kW && c.x0 == nullptr) || (col != kY && col != kW && c.eps == nullptr)) return;  // stays NaN
  out[id] = halving_sum(partials + id * width, width) / double(c.d);
}

template <typename S>
void launch_eps_tiles(const EpsStatsCall& c, double* partials, int64_t width, cudaStream_t stream) {
  using C = std::conditional_t<std::is_same_v<S, double>, double, float>;  // the compute type
  const unsigned grid = unsigned((c.rows * c.ntiles + kTileWarps - 1) / kTileWarps);
  const bool eps = c.eps != nullptr, x0 = c.x0 != nullptr;
  if (eps && x0) eps_tiles_kernel<C, S, true, true><<<grid, kThreads, 0, stream>>>(c, partials, width);
  else if (eps) eps_tiles_kernel<C, S, true, false><<<grid, kThreads, 0, stream>>>(c, partials, width);
  else if (x0) eps_tiles_kernel<C, S, false, true><<<grid, kThreads, 0, stream>>>(c, partials, width);
  else eps_tiles_kernel<C, S, false, false><<<grid, kThreads, 0, stream>>>(c, partials, width);
}

at::Tensor eps_stats_cuda(const at::Tensor& eps_pred, const std::optional<at::Tensor>& eps,
                          const std::optional<at::Tensor>& x0, const std::optional<at::Tensor>& x0_pred) {
  EpsStatsPlan p = prepare_eps_stats(eps_pred, eps, x0, x0_pred);
  const EpsStatsCall& c = p.call;
  if (c.rows == 0) return p.out;
  TORCH_CHECK(c.rows * c.ntiles <= INT_MAX, "tigercore::eps_stats: too many tiles for one launch");
  const c10::cuda::CUDAGuard guard(eps_pred.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t width = pow2_at_least(c.ntiles);
  at::Tensor partials = at::zeros({c.rows, kStatCols, width}, p.out.options());
  double* parts = partials.mutable_data_ptr<double>();
  switch (c.dtype) {
    case DType::kFloat32: launch_eps_tiles<float>(c, parts, width, stream); break;
    case DType::kFloat64: launch_eps_tiles<double>(c, parts, width, stream); break;
    case DType::kFloat16: launch_eps_tiles<half_t>(c, parts, width, stream); break;
    default: launch_eps_tiles<bfloat16_t>(c, parts, width, stream); break;
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  eps_rows_kernel<<<blocks_for(c.rows * kStatCols), kThreads, 0, stream>>>(c, parts, width,
                                                                           p.out.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return p.out;
}

// ---- segment_moments ---------------------------------------------------------------------------

struct SegmentArgs {
  const double* x;             // sorted [B, k]
  const int64_t* first;        // [nseg]
  const int64_t* count;        // [nseg]
  const int64_t* scratch_first;
  double* scratch;             // [entries, scratch_len]
  int64_t scratch_len, nseg, k;
  int levels;
};

// Pass 1, one thread per (timestep n, column i): mean[n, i].
__global__ void segment_mean_kernel(SegmentArgs a, double* mean) {
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= a.nseg * a.k) return;
  const int64_t n = id / a.k, i = id % a.k, cnt = a.count[n];
  if (cnt == 0) return;  // stays 0
  double* scratch = a.scratch + i * a.scratch_len + a.scratch_first[n];
  mean[id] = segment_tree_sum(SegmentColumn{a.x + a.first[n] * a.k, a.k, i}, cnt, a.levels, scratch) / double(cnt);
}

// Pass 2, one thread per (timestep n, i, j): comoment[n, i, j].
__global__ void segment_comoment_kernel(SegmentArgs a, const double* mean, double* com) {
  const int64_t kk = a.k * a.k;
  const int64_t id = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= a.nseg * kk) return;
  const int64_t n = id / kk, i = (id % kk) / a.k, j = id % a.k, cnt = a.count[n];
  if (cnt == 0) return;
  double* scratch = a.scratch + (i * a.k + j) * a.scratch_len + a.scratch_first[n];
  com[id] = segment_tree_sum(SegmentProduct{a.x + a.first[n] * a.k, mean + n * a.k, a.k, i, j}, cnt, a.levels,
                             scratch);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> segment_moments_cuda(const at::Tensor& stats, const at::Tensor& timesteps,
                                                                    int64_t num_steps) {
  if (!stats.is_cuda()) {  // CPU stats with CUDA timesteps: the reference computes on stats' device
    static const auto op = c10::Dispatcher::singleton()
        .findSchemaOrThrow("tigercore::segment_moments", "")
        .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t)>();
    return op.call(stats, timesteps.to(stats.device()), num_steps);
  }
  const c10::cuda::CUDAGuard guard(stats.device());
  const SegmentPlan p = plan_segments(stats, timesteps, num_steps);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const at::TensorOptions f64 = stats.options().dtype(at::kDouble);
  at::Tensor mean = at::zeros({p.nseg, p.k}, f64), com = at::zeros({p.nseg, p.k, p.k}, f64);
  at::Tensor scratch = at::empty({std::max<int64_t>(1, p.k * p.k * p.scratch_len)}, f64);
  const SegmentArgs a{p.x.const_data_ptr<double>(), p.first.const_data_ptr<int64_t>(), p.count.const_data_ptr<int64_t>(),
                      p.scratch_first.const_data_ptr<int64_t>(), scratch.mutable_data_ptr<double>(), p.scratch_len,
                      p.nseg, p.k, p.levels};
  if (p.nseg * p.k > 0) {
    segment_mean_kernel<<<blocks_for(p.nseg * p.k), kThreads, 0, stream>>>(a, mean.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    segment_comoment_kernel<<<blocks_for(p.nseg * p.k * p.k), kThreads, 0, stream>>>(
        a, mean.const_data_ptr<double>(), com.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {p.count.to(at::kDouble), mean, com};
}

// ---- minplus_dp --------------------------------------------------------------------------------

// Row k, one thread per t in [lo + 1, N]: candidates s = lo .. t-1 in order ([note: first argmin]);
// F[s, t] is read by consecutive threads at consecutive addresses. A NaN candidate (+inf + -inf)
// sets *nan_flag, which the host turns into the reference's ValueError.
__global__ void minplus_row_kernel(MinplusCall c, int64_t k, int* nan_flag) {
  const int64_t lo = minplus_lo(c, k);
  const int64_t t = lo + 1 + int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= c.P) return;
  const double* prev = c.C + (k - 1) * c.P;
  double best = __longlong_as_double(0x7FF0000000000000ll);  // +inf
  int64_t arg = -1;
  bool bad = false;
  for (int64_t s = lo; s < t; ++s) {
    const double cand = prev[s] + c.F[s * c.P + t];
    bad = bad || cand != cand;
    minplus_relax(cand, s, best, arg);
  }
  c.C[k * c.P + t] = best;
  c.D[k * c.P + t] = minplus_arg(best, arg);
  if (bad) atomicOr(nan_flag, 1);  // an integer flag: order-independent
}

std::tuple<at::Tensor, at::Tensor> minplus_dp_cuda(const at::Tensor& F_in, int64_t K, int64_t start) {
  const c10::cuda::CUDAGuard guard(F_in.device());
  const at::Tensor F = prepare_minplus(F_in, K, start);
  auto [C, D] = minplus_outputs(F, K, start);
  const MinplusCall c = minplus_call(F, C, D, K, start);
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor nan_flag = at::zeros({1}, F.options().dtype(at::kInt));
  for (int64_t k = 2; k <= K && minplus_lo(c, k) + 1 < c.P; ++k) {
    minplus_row_kernel<<<blocks_for(c.P - 1 - minplus_lo(c, k)), kThreads, 0, stream>>>(c, k, nan_flag.mutable_data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  TORCH_CHECK_VALUE(nan_flag.item<int>() == 0, "tigercore::minplus_dp: F is NaN for a candidate (+inf + -inf)");
  return {C, D};
}

}  // namespace

TORCH_LIBRARY_IMPL(tigercore, CUDA, m) {
  m.impl("eps_stats", &eps_stats_cuda);
  m.impl("segment_moments", &segment_moments_cuda);
  m.impl("minplus_dp", &minplus_dp_cuda);
}

}  // namespace cuda
}  // namespace tigercore
