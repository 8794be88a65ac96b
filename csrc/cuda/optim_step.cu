// optim_step.cu — CUDA entry points of tigercore::lion_step_ and tigercore::tiger_step_: check the
// inputs (step_common.h), plan the multi-tensor launches (mta_plan.h: tensors grouped by kernel
// instantiation, kernel_key.h), and launch on the current stream under a device guard: Tiger's
// reduction stages (tiger_rms.cu), the fused updates (lion_update.cu, tiger_update.cu), then one
// kernel for all step counters (step_counters.cu). No host reads of device values: found_inf,
// grad_scale and the steps are read by the kernels ([note: kernel scalars]), so a step can be
// captured in a CUDA graph. Reference: tigercore/reference/optim.py.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <numeric>
#include <vector>

#include "../step_common.h"
#include "launch.cuh"

namespace tigercore {
namespace cuda {
namespace {

// GradScaler hands float32 tensors; anything else is converted once (capturable: the caching
// allocator and a cast kernel on the current stream).
const float* as_float_ptr(const std::optional<at::Tensor>& t, std::vector<at::Tensor>& keep) {
  if (!t.has_value()) return nullptr;
  keep.push_back(t->to(at::kFloat).contiguous());
  return keep.back().data_ptr<float>();
}

void check_launch(cudaError_t e) { C10_CUDA_CHECK(e); }

void run(const StepInputs& in, Precision mode, const SignStepCall& call) {
  if (in.params.empty()) return;
  const c10::cuda::CUDAGuard guard(in.params[0].device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> tensors;
  describe_tensors(in, mode, call, calls, tensors, /*read_steps=*/false);
  const int32_t n = int32_t(tensors.size());
  for (const SignStepTensor& t : tensors)
    TORCH_CHECK(mta::update_blocks(t) <= mta::kMaxBlocksPerLaunch, "tigercore: a tensor of ", t.numel,
                " elements is too large for one launch");

  std::vector<at::Tensor> keep;
  mta::KernelScalars d = mta::kernel_scalars(call);
  d.found_inf = as_float_ptr(in.found_inf, keep);
  d.grad_scale = as_float_ptr(in.grad_scale, keep);
  const bool tiger = call.algo == Algo::kTiger;
  const bool needs_eta = tiger && call.tiger_class != TigerClass::kV;
  const bool needs_reduce = needs_eta || (tiger && call.nonfinite_guard);
  const mta::WorkspaceLayout ws = mta::workspace_layout(tensors);
  if (needs_reduce) {
    at::Tensor w = at::empty({int64_t(ws.bytes())}, in.params[0].options().dtype(at::kByte));
    keep.push_back(w);
    uint8_t* base = w.data_ptr<uint8_t>();
    d.slot_sums = reinterpret_cast<double*>(base);
    d.eta_rows = reinterpret_cast<double*>(base + ws.eta_offset());
    d.flags = reinterpret_cast<int32_t*>(base + ws.flags_offset());
    C10_CUDA_CHECK(cudaMemsetAsync(d.flags, 0, size_t(n) * sizeof(int32_t), stream));
  }

  std::vector<mta::MtaTensor> mt;
  std::vector<int64_t*> steps;
  for (int32_t i = 0; i < n; ++i) {
    steps.push_back(in.steps[size_t(i)].data_ptr<int64_t>());
    mt.push_back(mta::mta_tensor(tensors[size_t(i)], steps.back(), ws.slot0[size_t(i)], ws.row0[size_t(i)], i));
  }
  auto packed = [&](const std::vector<int32_t>& order, auto blocks_of) {
    Launches out;
    for (const mta::Launch& l : mta::plan_launches(order, [&](int32_t i) { return blocks_of(tensors[size_t(i)]); }))
      out.push_back(mta::pack_args(l, mt));
    return out;
  };
  const auto groups = mta::group_by<KernelKey>(n, [&](int32_t i) { return kernel_key(calls[size_t(i)]); });
  if (needs_reduce) {
    for (const auto& [key, order] : groups)
      check_launch(launch_tiger_reduce(key, packed(order, mta::update_blocks), call, d, stream));
    if (needs_eta) {
      std::vector<int32_t> all(size_t(n), 0);
      std::iota(all.begin(), all.end(), 0);
      check_launch(launch_tiger_eta(packed(all, mta::eta_blocks), call, d, stream));
    }
  }
  for (const auto& [key, order] : groups) {
    const Launches l = packed(order, mta::update_blocks);
    check_launch(tiger ? launch_update<Algo::kTiger>(key, l, call, d, stream)
                       : launch_update<Algo::kLion>(key, l, call, d, stream));
  }
  check_launch(launch_advance_steps(mta::pack_steps(steps), d.found_inf, stream));
  // [note: version counters] (step_common.h): whether a parameter moved is decided on the device,
  // so every tensor the op may have written is bumped.
  bump_versions(in, std::vector<char>(size_t(n), 1));
}

void lion_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList aux, at::TensorList steps, double lr, double beta1, double beta2,
                    double weight_decay, bool maximize, c10::string_view precision, int64_t seed,
                    at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  StepInputs in{params, grads, exp_avgs, aux, steps, param_ids, grad_scale, found_inf};
  const Precision mode = parse_precision(precision);
  check_step_inputs("lion_step_", in, mode, at::kCUDA);
  check_lion_hyper(lr, beta1, beta2, weight_decay);
  SignStepCall base{};
  base.algo = Algo::kLion;
  base.maximize = maximize;
  base.lr = lr;
  base.weight_decay = weight_decay;
  base.beta1 = beta1;
  base.beta2 = beta2;
  base.seed = uint32_t(seed);
  run(in, mode, base);
}

void tiger_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList aux, at::TensorList steps, at::TensorList rms_cache, double lr, double beta,
                     double weight_decay, int64_t grad_accum_steps, c10::string_view tiger_class,
                     double shrink_ratio, double shrink_center, bool nonfinite_guard,
                     double rms_floor, bool maximize, c10::string_view precision, int64_t seed,
                     at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                     const std::optional<at::Tensor>& found_inf) {
  StepInputs in{params, grads, exp_avgs, aux, steps, param_ids, grad_scale, found_inf};
  const Precision mode = parse_precision(precision);
  const TigerClass cls = parse_tiger_class(tiger_class);
  check_step_inputs("tiger_step_", in, mode, at::kCUDA);
  check_tiger_hyper(lr, beta, weight_decay, grad_accum_steps, shrink_ratio, rms_floor);
  // [note: Tiger RMS on CUDA] (tiger_rms.cu): the sums are recomputed on the device.
  TORCH_CHECK(rms_cache.empty(), "tigercore::tiger_step_: rms_cache is not used on CUDA; pass an empty list");
  SignStepCall base{};
  base.algo = Algo::kTiger;
  base.maximize = maximize;
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
  run(in, mode, base);
}

}  // namespace

TORCH_LIBRARY_IMPL(tigercore, CUDA, m) {
  m.impl("lion_step_", &lion_step_cuda);
  m.impl("tiger_step_", &tiger_step_cuda);
}

}  // namespace cuda
}  // namespace tigercore
