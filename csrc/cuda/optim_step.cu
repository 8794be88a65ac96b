// optim_step.cu — CUDA entry points of tigercore::lion_step_, tiger_step_ and tiger_stats. The host
// plan (csrc/host/step_plan.h, shared with the CPU entries) checks every input, derives the
// coefficients and describes the tensors; this file plans the multi-tensor launches (mta_plan.h,
// [note: stages]) and runs them on the current stream under a device guard: Tiger's reduction
// stages (tiger_rms.cu), cautious masking's counts (caution.cu), the fused updates
// (lion_update.cu, tiger_update.cu), then one kernel for the step counters (step_counters.cu). No
// host reads of device values: lr, found_inf, grad_scale,
// the steps and Tiger's flags and step sizes are read by the kernels ([note: kernel scalars]), so a
// step can be captured in a CUDA graph. Reference: tigercore/reference/optim.py.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "host/step_plan.h"
#include "launch.cuh"

namespace tigercore {
namespace cuda {
namespace {

using host::StepArgs;
using host::StepPlan;

// GradScaler hands float32 tensors on the device; anything else is converted once (capturable: the
// caching allocator and a cast kernel on the current stream). A float32 device tensor is used as
// is, so a captured graph reads its current value on every replay.
const float* as_device_float(const std::optional<at::Tensor>& t, const at::Device& device, std::vector<at::Tensor>& keep) {
  if (!t.has_value()) return nullptr;
  keep.push_back(t->to(device, at::kFloat).contiguous());
  return keep.back().data_ptr<float>();
}

// Plans and launches the stages of one call ([note: stages]) for the tensors of `plan` on the
// current stream. d holds the inputs the entry has (device scalars, a caller's eta or flags, the
// tiger_stats outputs); what is still missing of Tiger's workspace is allocated here.
void run(const StepPlan& plan, const mta::Stages& st, const std::vector<int64_t*>& steps,
         const std::vector<double*>& carried, mta::KernelScalars d, const at::Tensor& like,
         std::vector<at::Tensor>& keep) {
  for (const StepTensor& t : plan.tensors)
    TORCH_CHECK(mta::update_blocks(t) <= mta::kMaxBlocksPerLaunch, "tigercore: a tensor of ", t.numel,
                " elements is too large for one launch");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const mta::CallPlan cp = mta::plan_call(plan.tensors, plan.row0, plan.rows, steps, carried, st);
  d.reduce_sums = st.reduce_sums;
  d.reduce_flags = st.reduce_flags;
  if (cp.needs_workspace()) {
    keep.push_back(at::empty({int64_t(cp.ws.bytes())}, like.options().dtype(at::kByte)));
    int32_t* zero = mta::use_workspace(cp.ws, keep.back().data_ptr<uint8_t>(), d);
    if (zero != nullptr) C10_CUDA_CHECK(cudaMemsetAsync(zero, 0, size_t(cp.ws.tensors) * sizeof(int32_t), stream));
    if (cp.ws.caution)
      C10_CUDA_CHECK(cudaMemsetAsync(d.caution_kept, 0, size_t(cp.ws.tensors) * sizeof(uint64_t), stream));
  }
  const StepCall& call = plan.call;
  for (const mta::KeyedLaunches& k : cp.reduce) C10_CUDA_CHECK(launch_tiger_reduce(k.key, k.launches, call, d, stream));
  if (!cp.rows.empty()) C10_CUDA_CHECK(launch_tiger_rows(cp.rows, call, d, stream));
  for (const mta::KeyedLaunches& k : cp.caution) C10_CUDA_CHECK(launch_caution_count(k.key, k.launches, call, d, stream));
  for (const mta::KeyedLaunches& k : cp.caution) C10_CUDA_CHECK(launch_caution_scales(k.launches, d, stream));
  for (const mta::KeyedLaunches& k : cp.update)
    C10_CUDA_CHECK(call.hyper.algo == Algo::kTiger ? launch_update<Algo::kTiger>(k.key, k.launches, call, d, stream)
                                                   : launch_update<Algo::kLion>(k.key, k.launches, call, d, stream));
  if (!cp.counters.empty()) C10_CUDA_CHECK(launch_counters(cp.counters, d.found_inf, stream));
}

std::vector<int64_t*> step_pointers(at::TensorList steps) {
  std::vector<int64_t*> out;
  for (const at::Tensor& s : steps) out.push_back(s.data_ptr<int64_t>());
  return out;
}

// The step ops' device inputs: found_inf, grad_scale and a device lr ([note: tensor lr]).
mta::KernelScalars device_scalars(const StepArgs& in, const StepPlan& plan, std::vector<at::Tensor>& keep) {
  mta::KernelScalars d{};
  const at::Device device = in.params[0].device();
  d.found_inf = as_device_float(in.found_inf, device, keep);
  d.grad_scale = as_device_float(in.grad_scale, device, keep);
  d.lr = plan.lr_device;
  return d;
}

// [note: version counters] (step_plan.cpp): whether a parameter moved is decided on the device,
// so every tensor the op may have written is bumped; then the stamps record the new versions.
void finish(const StepArgs& in) {
  host::bump_versions(in, std::vector<char>(in.params.size(), 1));
  host::record_stamps(in.params, in.stamps);
}

void lion_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList aux,
                    at::TensorList steps, at::TensorList stamps, at::TensorList exp_avg_absmax, const at::Tensor& lr,
                    double beta1, double beta2,
                    double weight_decay, bool maximize, c10::string_view precision, int64_t seed,
                    at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf, bool compiled, at::IntArrayRef elem_offsets,
                    bool cautious) {
  const StepArgs in{params, grads, exp_avgs, aux, steps, stamps, {}, exp_avg_absmax, param_ids, lr, grad_scale,
                    found_inf, elem_offsets};
  const StepPlan plan = host::begin_lion_step(in, beta1, beta2, weight_decay, maximize, precision, seed, compiled,
                                              at::kCUDA, /*read_steps=*/false, cautious);
  const StepHyper& hyper = plan.call.hyper;
  if (!params.empty()) {
    const c10::cuda::CUDAGuard guard(params[0].device());
    std::vector<at::Tensor> keep;
    run(plan, mta::step_stages(hyper, false, false), step_pointers(steps), {}, device_scalars(in, plan, keep),
        params[0], keep);
  }
  finish(in);
}

void tiger_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList aux,
                     at::TensorList steps, at::TensorList stamps, at::TensorList sumsq, at::TensorList exp_avg_absmax,
                     const at::Tensor& lr,
                     double beta, double weight_decay, int64_t grad_accum_steps, c10::string_view tiger_class,
                     double shrink_ratio, double shrink_center, bool nonfinite_guard, double rms_floor, bool maximize,
                     c10::string_view precision, int64_t seed, at::IntArrayRef param_ids,
                     const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                     bool compiled, const std::optional<at::Tensor>& eta, const std::optional<at::Tensor>& nonfinite,
                     at::IntArrayRef elem_offsets, bool cautious) {
  const StepArgs in{params, grads, exp_avgs, aux, steps, stamps, sumsq, exp_avg_absmax, param_ids, lr, grad_scale,
                    found_inf, elem_offsets};
  const StepPlan plan = host::begin_tiger_step(in, beta, weight_decay, grad_accum_steps, tiger_class, shrink_ratio,
                                               shrink_center, nonfinite_guard, rms_floor, maximize, precision, seed,
                                               compiled, eta, nonfinite, at::kCUDA, /*read_steps=*/false, cautious);
  const StepHyper& hyper = plan.call.hyper;
  const size_t n = plan.tensors.size();
  const bool given_eta = eta.has_value() && hyper.tiger_class != TigerClass::kV;
  const at::TensorList carried = host::carried_sums(in, hyper);
  if (n > 0) {
    const c10::cuda::CUDAGuard guard(params[0].device());
    std::vector<at::Tensor> keep;
    mta::KernelScalars d = device_scalars(in, plan, keep);
    if (given_eta) d.eta_rows = const_cast<double*>(eta->data_ptr<double>());  // read only
    const bool given_flags = nonfinite_guard && nonfinite.has_value();
    if (given_flags) {
      keep.push_back(nonfinite->to(at::kInt));  // the kernels' flag type (a cast kernel, no sync)
      d.flags = keep.back().data_ptr<int32_t>();
    }
    std::vector<double*> sums;
    for (const at::Tensor& s : carried) sums.push_back(s.data_ptr<double>());
    run(plan, mta::step_stages(hyper, given_eta, given_flags), step_pointers(steps), sums, d, params[0], keep);
  }
  finish(in);
}

// tiger_stats: stage 1 for every tensor (sums and flags), then stage 2 writing each row's sum.
// Carried sums are checked but not read ([note: Tiger RMS on CUDA]): the sums are fresh.
std::tuple<at::Tensor, at::Tensor> tiger_stats_cuda(at::TensorList params, at::TensorList grads, at::TensorList aux,
                                                    at::TensorList sumsq, c10::string_view tiger_class,
                                                    c10::string_view precision,
                                                    const std::optional<at::Tensor>& grad_scale) {
  const StepPlan plan = host::plan_tiger_stats(params, grads, aux, sumsq, tiger_class, precision, grad_scale,
                                               at::kCUDA);
  const size_t n = plan.tensors.size();
  const at::Device device = n > 0 ? params[0].device() : at::Device(at::kCPU);
  at::Tensor sums = at::zeros({plan.rows}, at::dtype(at::kDouble).device(device));
  at::Tensor flags = at::zeros({int64_t(n)}, at::dtype(at::kInt).device(device));
  if (n > 0) {
    const c10::cuda::CUDAGuard guard(device);
    std::vector<at::Tensor> keep;
    mta::KernelScalars d{};
    d.grad_scale = as_device_float(grad_scale, device, keep);
    d.stats_sums = sums.data_ptr<double>();
    d.flags = flags.data_ptr<int32_t>();
    run(plan, mta::stats_stages(), {}, {}, d, params[0], keep);
  }
  return {sums, flags.to(at::kBool)};
}

}  // namespace

TORCH_LIBRARY_IMPL(tigercore, CUDA, m) {
  m.impl("lion_step_", &lion_step_cuda);
  m.impl("tiger_step_", &tiger_step_cuda);
  m.impl("tiger_stats", &tiger_stats_cuda);
}

}  // namespace cuda
}  // namespace tigercore
