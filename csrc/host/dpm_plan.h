// dpm_plan.h — input checks and preparation shared by the CPU and CUDA entry points of
// tigercore::eps_stats, segment_moments and minplus_dp (docs/semantics-dpm.md §9). Checks and
// messages follow the reference (tigercore/reference/dpm.py) in order and exception type
// (TypeError / ValueError), so a call fails the same way with or without the extension.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>
#include <initializer_list>
#include <tuple>
#include <vector>

#include "tigercore/dpm_math.h"

namespace tigercore {
namespace dpm {

inline DType dpm_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    default: return DType::kBFloat16;
  }
}

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.is_floating_point(), "tigercore::", op, ": ", name,
                   " must be a floating-point tensor (fp16/bf16/fp32/fp64), got ", t.scalar_type());
}

// [note: checked output sizes]
// num_steps (N) and K arrive as any int64 and size the outputs: [N+1], [N+1, k] and [N+1, k, k]
// float64 (segment_moments), [K+1, N+1] float64 and int64 (minplus_dp). N + 1, K + 1 and the
// products up to the byte count of the largest output are formed with overflow-checked arithmetic
// before anything else uses them, so 2^62 or INT64_MAX is a ValueError instead of a signed overflow
// (which UBSan reports) or an allocation of a wrapped size. The rule, shared with the reference
// (tigercore/reference/dpm.py, check_output_bytes): the largest output's bytes must fit in int64.

// N + 1 (or K + 1), or -1 if that overflows.
inline int64_t checked_plus_one(int64_t n) {
  int64_t out = 0;
  return c10::add_overflows(n, int64_t(1), &out) ? -1 : out;
}

// Whether 8 * prod(max(d, 1)) fits in int64 (every output element is 8 bytes).
inline bool output_bytes_fit(std::initializer_list<int64_t> dims) {
  int64_t bytes = 8;
  for (const int64_t d : dims)
    if (c10::mul_overflows(bytes, std::max<int64_t>(d, 1), &bytes)) return false;
  return true;
}

// ---- eps_stats ---------------------------------------------------------------------------------

struct EpsStatsPlan {
  at::Tensor eps_pred, eps, x0, x0_pred;  // contiguous [B, d], one dtype; absent ones undefined
  EpsStatsCall call;
  at::Tensor out;                         // [B, kStatCols] float64, NaN-filled
};

// [note: eps_stats dtypes]
// The kernels read one storage type. Mixed inputs (e.g. a bf16 eps_pred with fp32 eps) are first
// converted to float32, or to float64 if one of them is float64; both conversions are exact, and
// the storage type then implies the reference's compute type (float64 iff some input is float64,
// else float32; eps_stats_compute_dtype there, eps_compute_double here), so the result is the
// reference's.
inline EpsStatsPlan prepare_eps_stats(const at::Tensor& eps_pred, const std::optional<at::Tensor>& eps,
                                      const std::optional<at::Tensor>& x0,
                                      const std::optional<at::Tensor>& x0_pred) {
  const char* op = "eps_stats";
  check_floating(op, "eps_pred", eps_pred);
  TORCH_CHECK_VALUE(eps_pred.dim() >= 2, "tigercore::eps_stats: eps_pred must be [B, ...] with at least 2 dims, got shape ",
                    eps_pred.sizes());
  const std::pair<const char*, const std::optional<at::Tensor>*> others[] = {{"eps", &eps}, {"x0", &x0}, {"x0_pred", &x0_pred}};
  for (const auto& [name, t] : others) {
    if (!t->has_value()) continue;
    check_floating(op, name, **t);
    TORCH_CHECK_VALUE((*t)->sizes() == eps_pred.sizes(), "tigercore::eps_stats: ", name,
                      " must have the shape of eps_pred ", eps_pred.sizes(), ", got ", (*t)->sizes());
    TORCH_CHECK_VALUE((*t)->device() == eps_pred.device(), "tigercore::eps_stats: ", name, " is on ",
                      (*t)->device(), " but eps_pred is on ", eps_pred.device());
  }
  TORCH_CHECK_VALUE(x0.has_value() == x0_pred.has_value(), "tigercore::eps_stats: x0 and x0_pred must be given together");
  const int64_t rows = eps_pred.size(0);
  int64_t d = 1;
  for (int64_t i = 1; i < eps_pred.dim(); ++i) d *= eps_pred.size(i);
  TORCH_CHECK_VALUE(d > 0, "tigercore::eps_stats: eps_pred has no elements per sample");

  const auto is_kernel_dtype = [](at::ScalarType s) {
    return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
  };
  at::ScalarType common = eps_pred.scalar_type();
  bool uniform = is_kernel_dtype(common), any_double = common == at::kDouble;
  for (const auto& [name, t] : others)
    if (t->has_value()) {
      uniform = uniform && (*t)->scalar_type() == common;
      any_double = any_double || (*t)->scalar_type() == at::kDouble;
    }
  if (!uniform) common = any_double ? at::kDouble : at::kFloat;  // [note: eps_stats dtypes]
  const auto prep = [&](const at::Tensor& t) { return t.reshape({rows, d}).to(common).contiguous(); };

  EpsStatsPlan p;
  p.eps_pred = prep(eps_pred);
  if (eps.has_value()) p.eps = prep(*eps);
  if (x0.has_value()) {
    p.x0 = prep(*x0);
    p.x0_pred = prep(*x0_pred);
  }
  const auto ptr = [](const at::Tensor& t) -> const void* { return t.defined() ? t.const_data_ptr() : nullptr; };
  p.call = EpsStatsCall{dpm_dtype(common), ptr(p.eps_pred), ptr(p.eps), ptr(p.x0), ptr(p.x0_pred), rows, d,
                        eps_tile_len(d), 0};
  p.call.ntiles = (d + p.call.tile - 1) / p.call.tile;
  p.out = at::full({rows, kStatCols}, std::numeric_limits<double>::quiet_NaN(),
                   eps_pred.options().dtype(at::kDouble));
  return p;
}

// Which columns a call fills (y always; c, u, z with eps; w with x0 and x0_pred).
inline bool eps_has_column(const EpsStatsCall& c, int col) {
  if (col == kY) return true;
  if (col == kW) return c.x0 != nullptr;
  return c.eps != nullptr;
}

// ---- segment_moments ---------------------------------------------------------------------------

struct SegmentPlan {
  at::Tensor x;              // [B, k] float64, rows sorted stably by timestep (sample order kept)
  at::Tensor first, count;   // [N + 1] int64: first sorted row and number of rows of each timestep
  at::Tensor scratch_first;  // [N + 1] int64: each timestep's slice of a scratch row
  int64_t scratch_len = 0;   // Σ ceil(count / 64): the length of one scratch row
  int64_t k = 0, nseg = 0;
  int levels = 0;            // [note: segment tree]
};

// The checks of segment_moments' inputs that need no pass over the data, and the range check of
// the timesteps, whose bounds each backend finds its own way.
inline void check_segment_inputs(const at::Tensor& stats, const at::Tensor& timesteps, int64_t num_steps) {
  check_floating("segment_moments", "stats", stats);
  TORCH_CHECK_VALUE(stats.dim() == 2, "tigercore::segment_moments: stats must be [B, k], got shape ", stats.sizes());
  const at::ScalarType ts_type = timesteps.scalar_type();
  TORCH_CHECK_TYPE(!timesteps.is_floating_point() && !timesteps.is_complex() && ts_type != at::kBool,
                   "tigercore::segment_moments: timesteps must be an integer tensor, got ", ts_type);
  const int64_t rows = stats.size(0);
  TORCH_CHECK_VALUE(timesteps.dim() == 1 && timesteps.size(0) == rows, "tigercore::segment_moments: timesteps must be [B] = [",
                    rows, "], got shape ", timesteps.sizes());
  TORCH_CHECK_VALUE(num_steps >= 0, "tigercore::segment_moments: num_steps must be >= 0, got ", num_steps);
  // [note: checked output sizes]
  const int64_t nseg = checked_plus_one(num_steps), k = stats.size(1);
  TORCH_CHECK_VALUE(nseg > 0 && output_bytes_fit({nseg, k, k}), "tigercore::segment_moments: num_steps = ", num_steps,
                    " is too large: the comoment output [num_steps + 1, ", k, ", ", k,
                    "] of float64 would exceed 2^63 - 1 bytes");
}

inline void check_segment_range(int64_t lo, int64_t hi, int64_t num_steps) {
  TORCH_CHECK_VALUE(lo >= 1 && hi <= num_steps, "tigercore::segment_moments: timesteps must lie in 1..", num_steps,
                    ", got range [", lo, ", ", hi, "]");
}

// The plan with tensor ops on the inputs' device (the CUDA entry; the CPU entry builds the same
// plan in one host pass, plan_segments_host in csrc/cpu/dpm_ops.cpp).
inline SegmentPlan plan_segments(const at::Tensor& stats, const at::Tensor& timesteps, int64_t num_steps) {
  check_segment_inputs(stats, timesteps, num_steps);
  const int64_t rows = stats.size(0);
  const at::Tensor ts = timesteps.to(stats.device(), at::kLong);
  if (rows > 0) check_segment_range(ts.min().item<int64_t>(), ts.max().item<int64_t>(), num_steps);
  SegmentPlan p;
  p.k = stats.size(1);
  p.nseg = num_steps + 1;
  const at::Tensor order = std::get<1>(at::sort(ts, /*stable=*/true, 0, /*descending=*/false));
  p.x = stats.index_select(0, order).to(at::kDouble).contiguous();
  p.count = at::bincount(ts, {}, p.nseg).to(at::kLong);
  p.first = p.count.cumsum(0) - p.count;
  const at::Tensor chunks = at::floor_divide(p.count + (kSegmentTile - 1), kSegmentTile);
  p.scratch_first = chunks.cumsum(0) - chunks;
  p.scratch_len = chunks.sum().item<int64_t>();
  p.levels = segment_levels(rows > 0 ? p.count.max().item<int64_t>() : 0);
  return p;
}

// ---- minplus_dp --------------------------------------------------------------------------------

// Checks F (as the reference, in its order) and returns it as a contiguous float64 [P, P] tensor.
inline at::Tensor prepare_minplus(const at::Tensor& F, int64_t K, int64_t start) {
  check_floating("minplus_dp", "F", F);
  TORCH_CHECK_VALUE(F.dim() == 2 && F.size(0) == F.size(1),
                    "tigercore::minplus_dp: F must be a square [N+1, N+1] matrix, got shape ", F.sizes());
  TORCH_CHECK_VALUE(!at::isnan(F).any().item<bool>(), "tigercore::minplus_dp: F contains NaN");
  const int64_t N = F.size(0) - 1;
  TORCH_CHECK_VALUE(start >= 0 && start <= N, "tigercore::minplus_dp: start must lie in 0..", N, ", got ", start);
  TORCH_CHECK_VALUE(K >= 1, "tigercore::minplus_dp: K must be >= 1, got ", K);
  // [note: checked output sizes]
  const int64_t rows = checked_plus_one(K);
  TORCH_CHECK_VALUE(rows > 0 && output_bytes_fit({rows, N + 1}), "tigercore::minplus_dp: K = ", K,
                    " is too large: the outputs C, D of shape [K + 1, ", N + 1, "] would exceed 2^63 - 1 bytes");
  return F.to(at::kDouble).contiguous();
}

// C = +inf and D = -1 everywhere except the initial state C[1, start] = 0.
inline std::tuple<at::Tensor, at::Tensor> minplus_outputs(const at::Tensor& F, int64_t K, int64_t start) {
  const int64_t P = F.size(0);
  at::Tensor C = at::full({K + 1, P}, std::numeric_limits<double>::infinity(), F.options().dtype(at::kDouble));
  at::Tensor D = at::full({K + 1, P}, -1, F.options().dtype(at::kLong));
  C.select(0, 1).select(0, start).fill_(0.0);
  return {C, D};
}

inline MinplusCall minplus_call(const at::Tensor& F, at::Tensor& C, at::Tensor& D, int64_t K, int64_t start) {
  return MinplusCall{F.const_data_ptr<double>(), C.mutable_data_ptr<double>(), D.mutable_data_ptr<int64_t>(),
                     F.size(0), K, start};
}

}  // namespace dpm
}  // namespace tigercore
