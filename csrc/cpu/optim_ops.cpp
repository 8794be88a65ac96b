// optim_ops.cpp — CPU entry points of tigercore::lion_step_ and tigercore::tiger_step_.
// Checks every input before anything is modified, runs Tiger's pre-pass (non-finite guard, RMS
// per tensor / per row), then the fused update over fixed chunks with at::parallel_for, using the
// instruction-set variant chosen by isa.cpp. Reference: tigercore/reference/optim.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "kernel_table.h"
#include "../step_common.h"

namespace tigercore {
namespace cpu {
namespace {

// [note: fixed chunking]
// Work is split into chunks of kChunk elements that never cross a tensor boundary. Chunk bounds
// depend only on the tensor sizes, so every reduction tree (and therefore every result) is the
// same for any number of threads.
constexpr int64_t kChunk = int64_t(1) << 15;

struct WorkItem {
  int32_t tensor;
  int64_t begin, end;
};

std::vector<WorkItem> make_chunks(const std::vector<SignStepTensor>& tensors,
                                  const std::vector<char>& active) {
  std::vector<WorkItem> items;
  for (size_t t = 0; t < tensors.size(); ++t) {
    if (!active[t]) continue;
    for (int64_t b = 0; b < tensors[t].numel; b += kChunk)
      items.push_back({int32_t(t), b, std::min(tensors[t].numel, b + kChunk)});
  }
  return items;
}

void run_update(const std::vector<SignStepCall>& calls, const std::vector<SignStepTensor>& tensors,
                const std::vector<char>& active) {
  const KernelTable& k = active_kernels();
  const std::vector<WorkItem> items = make_chunks(tensors, active);
  at::parallel_for(0, int64_t(items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) {
      const WorkItem& it = items[w];
      k.sign_step(calls[it.tensor], tensors[it.tensor], it.begin, it.end);
    }
  });
}

// Tiger's guard: does tensor t's (unscaled) gradient hold a NaN or Inf?
std::vector<char> nonfinite_flags(const std::vector<SignStepCall>& calls,
                                  const std::vector<SignStepTensor>& tensors,
                                  const std::vector<char>& active) {
  const KernelTable& k = active_kernels();
  const std::vector<WorkItem> items = make_chunks(tensors, active);
  std::vector<char> item_ok(items.size(), 1);
  at::parallel_for(0, int64_t(items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) {
      const WorkItem& it = items[w];
      const SignStepCall& c = calls[it.tensor];
      item_ok[w] = k.all_finite(c.param_dtype, tensors[it.tensor].grad, it.begin, it.end,
                                c.has_grad_scale, c.grad_scale);
    }
  });
  std::vector<char> bad(tensors.size(), 0);
  for (size_t w = 0; w < items.size(); ++w)
    if (!item_ok[w]) bad[items[w].tensor] = 1;
  return bad;
}

// Sum of squares of the working copy of tensor t (master copy in "master" mode), per tensor for
// K and per row for E, in float64; chunk partials are added in chunk order.
std::vector<double> tensor_sumsq(const std::vector<SignStepCall>& calls,
                                 const std::vector<SignStepTensor>& tensors,
                                 const std::vector<char>& active) {
  const KernelTable& k = active_kernels();
  const std::vector<WorkItem> items = make_chunks(tensors, active);
  std::vector<double> partial(items.size(), 0.0);
  at::parallel_for(0, int64_t(items.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) {
      const WorkItem& it = items[w];
      const SignStepCall& c = calls[it.tensor];
      const SignStepTensor& t = tensors[it.tensor];
      const bool master = c.precision == Precision::kMaster;
      partial[w] = k.sum_squares(master ? DType::kFloat32 : c.param_dtype,
                                 master ? t.aux : t.param, it.begin, it.end);
    }
  });
  std::vector<double> sums(tensors.size(), 0.0);
  for (size_t w = 0; w < items.size(); ++w) sums[items[w].tensor] += partial[w];
  return sums;
}

std::vector<double> row_sumsq(const SignStepCall& c, const SignStepTensor& t) {
  const KernelTable& k = active_kernels();
  const int64_t rows = t.row_len > 0 ? t.numel / t.row_len : 0;
  std::vector<double> sums(size_t(rows), 0.0);
  const bool master = c.precision == Precision::kMaster;
  const DType dt = master ? DType::kFloat32 : c.param_dtype;
  const void* data = master ? t.aux : t.param;
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, t.row_len));
  at::parallel_for(0, rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) sums[r] = k.sum_squares(dt, data, r * t.row_len, (r + 1) * t.row_len);
  });
  return sums;
}

void advance_steps(at::TensorList steps) {
  for (const at::Tensor& s : steps) s.data_ptr<int64_t>()[0] += 1;
}

void lion_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                   at::TensorList aux, at::TensorList steps, double lr, double beta1, double beta2,
                   double weight_decay, bool maximize, c10::string_view precision, int64_t seed,
                   at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                   const std::optional<at::Tensor>& found_inf) {
  StepInputs in{params, grads, exp_avgs, aux, steps, param_ids, grad_scale, found_inf};
  const Precision mode = parse_precision(precision);
  check_step_inputs("lion_step_", in, mode, at::kCPU);
  check_lion_hyper(lr, beta1, beta2, weight_decay);
  if (found_inf_is_set_cpu(found_inf)) return;

  SignStepCall base{};
  base.algo = Algo::kLion;
  base.maximize = maximize;
  fill_grad_scale_cpu(base, grad_scale);
  base.lr = lr;
  base.weight_decay = weight_decay;
  base.beta1 = beta1;
  base.beta2 = beta2;
  base.seed = uint32_t(seed);
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> tensors;
  describe_tensors(in, mode, base, calls, tensors);
  std::vector<char> active(tensors.size(), 1);
  for (auto& t : tensors) t.eta = lr;
  run_update(calls, tensors, active);
  advance_steps(steps);
}

void tiger_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList aux, at::TensorList steps, double lr, double beta,
                    double weight_decay, int64_t grad_accum_steps, c10::string_view tiger_class,
                    double shrink_ratio, double shrink_center, bool nonfinite_guard,
                    double rms_floor, bool maximize, c10::string_view precision, int64_t seed,
                    at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  StepInputs in{params, grads, exp_avgs, aux, steps, param_ids, grad_scale, found_inf};
  const Precision mode = parse_precision(precision);
  const TigerClass cls = parse_tiger_class(tiger_class);
  check_step_inputs("tiger_step_", in, mode, at::kCPU);
  check_tiger_hyper(lr, beta, weight_decay, grad_accum_steps, shrink_ratio, rms_floor);
  if (found_inf_is_set_cpu(found_inf)) return;

  SignStepCall base{};
  base.algo = Algo::kTiger;
  base.maximize = maximize;
  fill_grad_scale_cpu(base, grad_scale);
  base.lr = lr;
  base.weight_decay = cls == TigerClass::kV ? 0.0 : weight_decay;
  base.beta = beta;
  base.grad_accum_steps = grad_accum_steps;
  base.tiger_class = cls;
  base.shrink_ratio = shrink_ratio;
  base.shrink_center = shrink_center;
  base.rms_floor = rms_floor;
  base.nonfinite_guard = nonfinite_guard;
  base.seed = uint32_t(seed);
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> tensors;
  describe_tensors(in, mode, base, calls, tensors);
  const size_t n = tensors.size();

  std::vector<char> all(n, 1);
  if (nonfinite_guard) {
    const std::vector<char> bad = nonfinite_flags(calls, tensors, all);
    for (size_t i = 0; i < n; ++i) tensors[i].shrink = bad[i] != 0;
  }
  std::vector<char> needs_rms(n, 0);
  for (size_t i = 0; i < n; ++i) {
    SignStepTensor& t = tensors[i];
    t.update = tiger_is_update_step(t.step, grad_accum_steps);
    if (cls == TigerClass::kK && t.update && !t.shrink) needs_rms[i] = 1;
  }
  const std::vector<double> sums = tensor_sumsq(calls, tensors, needs_rms);
  std::vector<std::vector<double>> eta_rows(n);
  for (size_t i = 0; i < n; ++i) {
    SignStepTensor& t = tensors[i];
    if (!t.update || t.shrink) continue;
    if (cls == TigerClass::kV) {
      t.eta = 0.5 * lr;
    } else if (cls == TigerClass::kK) {
      t.eta = tiger_eta_from_sumsq(lr, sums[i], t.numel, rms_floor);
    } else {
      eta_rows[i] = row_sumsq(calls[i], t);
      for (double& v : eta_rows[i]) v = tiger_eta_from_sumsq(lr, v, t.row_len, rms_floor);
      t.eta_rows = eta_rows[i].data();
    }
  }
  run_update(calls, tensors, all);
  advance_steps(steps);
}

}  // namespace

TORCH_LIBRARY_IMPL(tigercore, CPU, m) {
  m.impl("lion_step_", &lion_step_cpu);
  m.impl("tiger_step_", &tiger_step_cpu);
}

}  // namespace cpu
}  // namespace tigercore
