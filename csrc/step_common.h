// step_common.h — input checks and descriptor packing shared by the CPU and CUDA entry points of
// lion_step_ / tiger_step_. Every check runs before anything is modified; messages name the op,
// the list, the index and what was expected. Python mirror: tigercore/_checks.py.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "tigercore/params.h"

namespace tigercore {

struct StepInputs {
  at::TensorList params, grads, exp_avgs, aux, steps;
  at::IntArrayRef param_ids;
  const std::optional<at::Tensor>& grad_scale;
  const std::optional<at::Tensor>& found_inf;
};

inline Precision parse_precision(c10::string_view s) {
  if (s == "none") return Precision::kNone;
  if (s == "kahan") return Precision::kKahan;
  if (s == "stochastic") return Precision::kStochastic;
  if (s == "master") return Precision::kMaster;
  TORCH_CHECK(false, "tigercore: precision must be one of 'none', 'kahan', 'stochastic', 'master', got '",
              std::string(s), "'");
}

inline TigerClass parse_tiger_class(c10::string_view s) {
  if (s == "K") return TigerClass::kK;
  if (s == "E") return TigerClass::kE;
  if (s == "V") return TigerClass::kV;
  TORCH_CHECK(false, "tigercore: tiger_class must be 'K', 'E' or 'V', got '", std::string(s), "'");
}

inline DType to_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    default: return DType::kBFloat16;
  }
}

inline bool is_param_dtype(at::ScalarType s) {
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}

inline bool is_16bit(at::ScalarType s) { return s == at::kHalf || s == at::kBFloat16; }

inline void check_step_inputs(const char* op, const StepInputs& in, Precision mode,
                              c10::DeviceType device_type) {
  const size_t n = in.params.size();
  TORCH_CHECK(in.grads.size() == n && in.exp_avgs.size() == n && in.steps.size() == n,
              "tigercore::", op, ": params, grads, exp_avgs and steps must have the same length, got ",
              n, ", ", in.grads.size(), ", ", in.exp_avgs.size(), ", ", in.steps.size());
  TORCH_CHECK(in.aux.empty() || in.aux.size() == n, "tigercore::", op,
              ": aux must be empty or have one tensor per param, got ", in.aux.size(), " for ", n,
              " params");
  TORCH_CHECK(in.param_ids.size() == n, "tigercore::", op, ": param_ids must have one entry per param, got ",
              in.param_ids.size(), " for ", n, " params");
  c10::optional<at::Device> device;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = in.params[i];
    const at::Tensor& g = in.grads[i];
    const at::Tensor& m = in.exp_avgs[i];
    const at::Tensor& s = in.steps[i];
    TORCH_CHECK(p.defined() && g.defined() && m.defined() && s.defined(), "tigercore::", op,
                ": undefined tensor at index ", i);
    TORCH_CHECK(p.layout() == at::kStrided, "tigercore::", op, ": params[", i, "] must be dense (strided)");
    TORCH_CHECK(g.layout() == at::kStrided, "tigercore::", op, ": grads[", i,
                "] is sparse; sparse gradients are not supported");
    TORCH_CHECK(is_param_dtype(p.scalar_type()), "tigercore::", op, ": params[", i,
                "] has dtype ", p.scalar_type(), "; supported: float32, float64, float16, bfloat16");
    TORCH_CHECK(!g.is_complex(), "tigercore::", op, ": grads[", i, "] is complex; complex parameters are not supported");
    TORCH_CHECK(g.scalar_type() == p.scalar_type(), "tigercore::", op, ": grads[", i, "] has dtype ",
                g.scalar_type(), " but params[", i, "] has dtype ", p.scalar_type());
    TORCH_CHECK(p.device().type() == device_type, "tigercore::", op, ": params[", i, "] is on ",
                p.device(), " but this kernel runs on ", c10::DeviceTypeName(device_type));
    if (!device) device = p.device();
    TORCH_CHECK(p.device() == *device, "tigercore::", op, ": all params must be on one device, got ",
                *device, " and ", p.device(), " (index ", i, ")");
    TORCH_CHECK(g.device() == p.device() && m.device() == p.device(), "tigercore::", op,
                ": grads[", i, "] and exp_avgs[", i, "] must be on ", p.device());
    TORCH_CHECK(g.sizes() == p.sizes(), "tigercore::", op, ": grads[", i, "] has shape ", g.sizes(),
                " but params[", i, "] has shape ", p.sizes());
    TORCH_CHECK(m.sizes() == p.sizes(), "tigercore::", op, ": exp_avgs[", i, "] has shape ", m.sizes(),
                " but params[", i, "] has shape ", p.sizes());
    if (p.scalar_type() == at::kDouble) {
      TORCH_CHECK(m.scalar_type() == at::kDouble, "tigercore::", op, ": exp_avgs[", i,
                  "] must be float64 for float64 params, got ", m.scalar_type());
    } else {
      TORCH_CHECK(m.scalar_type() == at::kFloat || is_16bit(m.scalar_type()), "tigercore::", op,
                  ": exp_avgs[", i, "] must be float32, float16 or bfloat16, got ", m.scalar_type());
    }
    TORCH_CHECK(p.is_contiguous() && g.is_contiguous() && m.is_contiguous(), "tigercore::", op,
                ": params[", i, "], grads[", i, "] and exp_avgs[", i,
                "] must be contiguous (call .contiguous() on the parameter, or use backend='reference')");
    TORCH_CHECK(s.scalar_type() == at::kLong && s.numel() == 1 && s.device() == p.device(),
                "tigercore::", op, ": steps[", i, "] must be a one-element int64 tensor on ", p.device());
    const bool needs_aux = is_16bit(p.scalar_type()) &&
                           (mode == Precision::kKahan || mode == Precision::kMaster);
    if (needs_aux) {
      TORCH_CHECK(!in.aux.empty(), "tigercore::", op, ": precision '",
                  mode == Precision::kKahan ? "kahan" : "master", "' needs one aux tensor per param");
      const at::Tensor& a = in.aux[i];
      const at::ScalarType want = mode == Precision::kKahan ? p.scalar_type() : at::kFloat;
      TORCH_CHECK(a.defined() && a.scalar_type() == want && a.sizes() == p.sizes() &&
                      a.device() == p.device() && a.is_contiguous(),
                  "tigercore::", op, ": aux[", i, "] must be a contiguous ", want, " tensor of shape ",
                  p.sizes(), " on ", p.device(), " (", mode == Precision::kKahan ? "kahan_comp" : "master_param",
                  ")");
    }
  }
  for (const auto* opt : {&in.grad_scale, &in.found_inf}) {
    if (opt->has_value() && n > 0) {
      const at::Tensor& t = **opt;
      TORCH_CHECK(t.numel() == 1 && at::isFloatingType(t.scalar_type()) && t.device() == *device,
                  "tigercore::", op, ": ", opt == &in.grad_scale ? "grad_scale" : "found_inf",
                  " must be a one-element floating tensor on ", *device);
    }
  }
}

inline void check_lion_hyper(double lr, double beta1, double beta2, double wd) {
  TORCH_CHECK(std::isfinite(lr) && lr >= 0, "tigercore::lion_step_: lr must be finite and >= 0, got ", lr);
  TORCH_CHECK(beta1 >= 0 && beta1 <= 1 && beta2 >= 0 && beta2 <= 1,
              "tigercore::lion_step_: betas must lie in [0, 1], got (", beta1, ", ", beta2, ")");
  TORCH_CHECK(std::isfinite(wd) && wd >= 0, "tigercore::lion_step_: weight_decay must be finite and >= 0, got ", wd);
}

inline void check_tiger_hyper(double lr, double beta, double wd, int64_t k, double shrink, double floor) {
  TORCH_CHECK(std::isfinite(lr) && lr >= 0, "tigercore::tiger_step_: lr must be finite and >= 0, got ", lr);
  TORCH_CHECK(beta >= 0 && beta <= 1, "tigercore::tiger_step_: beta must lie in [0, 1], got ", beta);
  TORCH_CHECK(std::isfinite(wd) && wd >= 0, "tigercore::tiger_step_: weight_decay must be finite and >= 0, got ", wd);
  TORCH_CHECK(k >= 1, "tigercore::tiger_step_: grad_accum_steps must be >= 1, got ", k);
  TORCH_CHECK(std::isfinite(shrink), "tigercore::tiger_step_: shrink_ratio must be finite, got ", shrink);
  TORCH_CHECK(std::isfinite(floor) && floor >= 0, "tigercore::tiger_step_: rms_floor must be finite and >= 0, got ", floor);
}

// CPU only: the GradScaler flags are host tensors, read directly.
inline bool found_inf_is_set_cpu(const std::optional<at::Tensor>& found_inf) {
  return found_inf.has_value() && found_inf->item<double>() != 0.0;
}
inline void fill_grad_scale_cpu(SignStepCall& call, const std::optional<at::Tensor>& grad_scale) {
  call.has_grad_scale = grad_scale.has_value();
  call.grad_scale = grad_scale.has_value() ? grad_scale->item<double>() : 1.0;
}

// One SignStepCall and SignStepTensor per tensor (dtypes, mode and step may differ per tensor).
inline void describe_tensors(const StepInputs& in, Precision mode, const SignStepCall& base,
                             std::vector<SignStepCall>& calls, std::vector<SignStepTensor>& tensors,
                             bool read_steps = true) {
  const size_t n = in.params.size();
  calls.assign(n, base);
  tensors.assign(n, SignStepTensor{});
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = in.params[i];
    SignStepCall& c = calls[i];
    c.param_dtype = to_dtype(p.scalar_type());
    c.momentum_dtype = to_dtype(in.exp_avgs[i].scalar_type());
    c.precision = is_16bit(p.scalar_type()) ? mode : Precision::kNone;
    SignStepTensor& t = tensors[i];
    t.param = p.data_ptr();
    t.grad = in.grads[i].data_ptr();
    t.exp_avg = in.exp_avgs[i].data_ptr();
    const bool has_aux = c.precision == Precision::kKahan || c.precision == Precision::kMaster;
    t.aux = has_aux ? in.aux[i].data_ptr() : nullptr;
    t.numel = p.numel();
    t.row_len = (base.algo == Algo::kTiger && base.tiger_class == TigerClass::kE && p.dim() >= 1)
                    ? p.size(-1) : p.numel();
    t.param_id = uint32_t(in.param_ids[i]);
    t.step = read_steps ? in.steps[i].item<int64_t>() : 0;
    t.shrink = false;
    t.update = true;
    t.eta = 0.0;
    t.eta_rows = nullptr;
    t.want_sumsq = false;
  }
}

// [note: version counters]
// The ops write through raw pointers, so they bump the version counters of what they modified
// themselves, as in-place torch ops do: autograd then refuses stale saved tensors, and Tiger's
// carried sums of squares notice any later write. A parameter is only bumped when it was written.
inline void bump_version(const at::Tensor& t) {
  if (t.defined() && !t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
}
inline void bump_versions(const StepInputs& in, const std::vector<char>& params_written) {
  for (size_t i = 0; i < in.params.size(); ++i) {
    if (params_written[i]) {
      bump_version(in.params[i]);
      if (!in.aux.empty() && in.aux[i].numel() > 0) bump_version(in.aux[i]);
    }
    bump_version(in.exp_avgs[i]);
    bump_version(in.steps[i]);
    if (in.grad_scale.has_value()) bump_version(in.grads[i]);
  }
}

}  // namespace tigercore
