// optim_step.cu — CUDA entry points of tigercore::lion_step_, tiger_step_ and tiger_stats. The host
// plan (csrc/host/step_plan.h, shared with the CPU entries) checks every input, derives the
// coefficients and describes the tensors; this file plans the multi-tensor launches (mta_plan.h,
// [note: stages]) and runs them on the current stream under a device guard: Tiger's reduction
// stages (tiger_rms.cu), the fused updates (lion_update.cu, tiger_update.cu), then one kernel for
// the step counters (step_counters.cu). No host reads of device values: lr, found_inf, grad_scale,
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
  }
  const StepCall& call = plan.call;
  for (const mta::KeyedLaunches& k : cp.reduce) C10_CUDA_CHECK(launch_tiger_reduce(k.key, k.launches, call, d, stream));
  if (!cp.rows.empty()) C10_CUDA_CHECK(launch_tiger_rows(cp.rows, call, d, stream));
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
                    const std::optional<at::Tensor>& found_inf, bool compiled, at::IntArrayRef elem_offsets) {
  const StepArgs in{params, grads, exp_avgs, aux, steps, stamps, {}, exp_avg_absmax, param_ids, lr, grad_scale,
                    found_inf, elem_offsets};
  const Precision mode = host::parse_precision(precision);
  const StepHyper hyper = host::lion_hyper(beta1, beta2, weight_decay, maximize, seed);
  const StepPlan plan = host::plan_step("lion_step_", in, hyper, mode, at::kCUDA, /*read_steps=*/false);
  host::sync_external_writes(params, aux, stamps, {}, mode, compiled);
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
                     at::IntArrayRef elem_offsets) {
  const StepArgs in{params, grads, exp_avgs, aux, steps, stamps, sumsq, exp_avg_absmax, param_ids, lr, grad_scale,
                    found_inf, elem_offsets};
  const Precision mode = host::parse_precision(precision);
  const TigerClass cls = host::parse_tiger_class(tiger_class);
  const StepHyper hyper = host::tiger_hyper(beta, weight_decay, grad_accum_steps, cls, shrink_ratio, shrink_center,
                                            nonfinite_guard, rms_floor, maximize, seed);
  const StepPlan plan = host::plan_step("tiger_step_", in, hyper, mode, at::kCUDA, /*read_steps=*/false);
  const size_t n = plan.tensors.size();
  const bool given_eta = eta.has_value() && cls != TigerClass::kV;
  if (given_eta)
    TORCH_CHECK(eta->scalar_type() == at::kDouble && eta->numel() == plan.rows && eta->is_contiguous() &&
                    (n == 0 || eta->device() == params[0].device()),
                "tigercore::tiger_step_: eta must be a contiguous float64 tensor of ", plan.rows,
                " step size(s) (one per tensor or row) on the params' device");
  if (nonfinite.has_value())
    TORCH_CHECK(nonfinite->scalar_type() == at::kBool && nonfinite->numel() == int64_t(n) &&
                    nonfinite->is_contiguous() && (n == 0 || nonfinite->device() == params[0].device()),
                "tigercore::tiger_step_: nonfinite must be a contiguous bool tensor of ", n,
                " flag(s) (one per tensor) on the params' device");
  const at::TensorList carried = cls == TigerClass::kV ? at::TensorList() : sumsq;
  host::sync_external_writes(params, aux, stamps, carried, mode, compiled);
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
  const Precision mode = host::parse_precision(precision);
  const TigerClass cls = host::parse_tiger_class(tiger_class);
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n, "tigercore::tiger_stats: params and grads must have the same length, got ", n,
              ", ", grads.size());
  host::check_aux("tiger_stats", params, aux, mode);
  host::check_sumsq("tiger_stats", sumsq, params, cls);
  const at::Device device = n > 0 ? params[0].device() : at::Device(at::kCPU);
  StepPlan plan;
  plan.call = StepCall{};
  plan.call.hyper.algo = Algo::kTiger;
  plan.call.hyper.tiger_class = cls;
  plan.call.hyper.grad_accum_steps = 1;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK(p.is_cuda() && p.is_contiguous() && g.sizes() == p.sizes() && g.scalar_type() == p.scalar_type() &&
                    g.device() == p.device() && g.is_contiguous(),
                "tigercore::tiger_stats: params[", i, "] and grads[", i,
                "] must be contiguous tensors on one CUDA device, of one shape and dtype");
    StepTensor t{};
    t.param_dtype = host::to_dtype(p.scalar_type());
    t.momentum_dtype = DType::kFloat32;  // no momentum: only the parameter side of the kernel key matters
    t.mode = (p.scalar_type() == at::kHalf || p.scalar_type() == at::kBFloat16) ? mode : Precision::kNone;
    t.param = p.data_ptr();
    t.grad = g.data_ptr();
    t.aux = t.mode == Precision::kMaster ? aux[i].data_ptr() : nullptr;
    t.numel = p.numel();
    t.row_len = cls == TigerClass::kE && p.dim() >= 1 ? p.size(-1) : p.numel();
    plan.tensors.push_back(t);
    plan.row0.push_back(plan.rows);
    plan.rows += host::rms_rows(p, cls);
  }
  if (grad_scale.has_value())
    TORCH_CHECK(grad_scale->numel() == 1 && at::isFloatingType(grad_scale->scalar_type()),
                "tigercore::tiger_stats: grad_scale must be a one-element floating tensor");
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
