// step_plan.cpp — checks, coefficients and tensor descriptions of a Lion/Tiger step op, and the
// external-write bookkeeping around it, for the CPU and the CUDA entry points alike (step_plan.h).
// Python mirror of the checks: tigercore/_checks.py; reference: tigercore/reference/optim.py.
#include "step_plan.h"

#include <cmath>

namespace tigercore {
namespace host {
DType to_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, "tigercore: unsupported dtype ", s);
  }
}

namespace {

bool is_param_dtype(at::ScalarType s) {
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}
bool is_16bit(at::ScalarType s) { return s == at::kHalf || s == at::kBFloat16; }

const char* aux_name(Precision mode) { return mode == Precision::kKahan ? "kahan_comp" : "master_param"; }

}  // namespace

Precision parse_precision(c10::string_view s) {
  if (s == "none") return Precision::kNone;
  if (s == "kahan") return Precision::kKahan;
  if (s == "stochastic") return Precision::kStochastic;
  if (s == "master") return Precision::kMaster;
  TORCH_CHECK(false, "tigercore: precision must be one of 'none', 'kahan', 'stochastic', 'master', got '",
              std::string(s), "'");
}

TigerClass parse_tiger_class(c10::string_view s) {
  if (s == "K") return TigerClass::kK;
  if (s == "E") return TigerClass::kE;
  if (s == "V") return TigerClass::kV;
  TORCH_CHECK(false, "tigercore: tiger_class must be 'K', 'E' or 'V', got '", std::string(s), "'");
}

namespace {
StepHyper hyper_of(Algo algo, bool maximize, int64_t seed, double weight_decay) {
  StepHyper h{};
  h.algo = algo;
  h.maximize = maximize;
  h.seed = uint32_t(seed);
  h.grad_accum_steps = 1;
  h.shrink_ratio = 1.0;
  h.weight_decay = weight_decay;
  return h;
}
}  // namespace

StepHyper lion_hyper(double beta1, double beta2, double wd, bool maximize, int64_t seed) {
  TORCH_CHECK(beta1 >= 0 && beta1 <= 1 && beta2 >= 0 && beta2 <= 1,
              "tigercore::lion_step_: betas must lie in [0, 1], got (", beta1, ", ", beta2, ")");
  TORCH_CHECK(std::isfinite(wd) && wd >= 0, "tigercore::lion_step_: weight_decay must be finite and >= 0, got ", wd);
  StepHyper h = hyper_of(Algo::kLion, maximize, seed, wd);
  h.beta1 = beta1;
  h.beta2 = beta2;
  return h;
}

StepHyper tiger_hyper(double beta, double wd, int64_t k, TigerClass cls, double shrink, double centre, bool guard,
                      double floor, bool maximize, int64_t seed) {
  const char* op = "tigercore::tiger_step_: ";
  TORCH_CHECK(beta >= 0 && beta <= 1, op, "beta must lie in [0, 1], got ", beta);
  TORCH_CHECK(std::isfinite(wd) && wd >= 0, op, "weight_decay must be finite and >= 0, got ", wd);
  TORCH_CHECK(k >= 1 && k < (int64_t(1) << 31), op, "grad_accum_steps must lie in [1, 2^31), got ", k);
  TORCH_CHECK(shrink > 0 && shrink <= 1, op, "shrink_ratio must lie in (0, 1], got ", shrink);
  TORCH_CHECK(std::isfinite(centre), op, "shrink_center must be finite, got ", centre);
  TORCH_CHECK(std::isfinite(floor) && floor >= 0, op, "rms_floor must be finite and >= 0, got ", floor);
  StepHyper h = hyper_of(Algo::kTiger, maximize, seed, cls == TigerClass::kV ? 0.0 : wd);
  h.beta = beta;
  h.grad_accum_steps = k;
  h.tiger_class = cls;
  h.shrink_ratio = shrink;
  h.shrink_center = centre;
  h.rms_floor = floor;
  h.nonfinite_guard = guard;
  return h;
}

int64_t rms_rows(const at::Tensor& p, TigerClass cls) {
  if (cls != TigerClass::kE || p.dim() == 0) return 1;
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < p.dim(); ++d) rows *= p.size(d);
  return rows;
}

void check_aux(const char* op, at::TensorList params, at::TensorList aux, Precision mode) {
  TORCH_CHECK(aux.empty() || aux.size() == params.size(), "tigercore::", op,
              ": aux must be empty or have one tensor per param, got ", aux.size(), " for ", params.size(), " params");
  std::optional<at::Device> device;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.defined(), "tigercore::", op, ": undefined tensor at index ", i);
    TORCH_CHECK(p.layout() == at::kStrided, "tigercore::", op, ": params[", i, "] must be dense (strided)");
    TORCH_CHECK(is_param_dtype(p.scalar_type()), "tigercore::", op, ": params[", i, "] has dtype ", p.scalar_type(),
                "; supported: float32, float64, float16, bfloat16");
    if (!device) device = p.device();
    TORCH_CHECK(p.device() == *device, "tigercore::", op, ": all params must be on one device, got ", *device,
                " and ", p.device(), " (index ", i, ")");
    if (is_16bit(p.scalar_type()) && (mode == Precision::kKahan || mode == Precision::kMaster)) {
      TORCH_CHECK(!aux.empty(), "tigercore::", op, ": precision '", mode == Precision::kKahan ? "kahan" : "master",
                  "' needs one aux tensor per param");
      const at::Tensor& a = aux[i];
      const at::ScalarType want = mode == Precision::kKahan ? p.scalar_type() : at::kFloat;
      TORCH_CHECK(a.defined() && a.scalar_type() == want && a.sizes() == p.sizes() && a.device() == p.device() &&
                      a.is_contiguous(),
                  "tigercore::", op, ": aux[", i, "] must be a contiguous ", want, " tensor of shape ", p.sizes(),
                  " on ", p.device(), " (", aux_name(mode), ")");
    }
  }
}

void check_stamps(const char* op, at::TensorList stamps, at::TensorList params) {
  TORCH_CHECK(stamps.empty() || stamps.size() == params.size(), "tigercore::", op,
              ": stamps must be empty or have one tensor per param, got ", stamps.size(), " for ", params.size(),
              " params");
  for (size_t i = 0; i < stamps.size(); ++i)
    TORCH_CHECK(stamps[i].scalar_type() == at::kLong && stamps[i].numel() == 2 && stamps[i].device().is_cpu() &&
                    stamps[i].is_contiguous(),
                "tigercore::", op, ": stamps[", i,
                "] must be a two-element int64 CPU tensor (version counter, storage address)");
}

void check_sumsq(const char* op, at::TensorList sumsq, at::TensorList params, TigerClass cls) {
  TORCH_CHECK(sumsq.empty() || sumsq.size() == params.size(), "tigercore::", op,
              ": sumsq must be empty or have one tensor per param, got ", sumsq.size(), " for ", params.size(),
              " params");
  for (size_t i = 0; i < sumsq.size(); ++i) {
    const int64_t rows = rms_rows(params[i], cls);
    TORCH_CHECK(sumsq[i].scalar_type() == at::kDouble && sumsq[i].numel() == rows &&
                    sumsq[i].device() == params[i].device() && sumsq[i].is_contiguous(),
                "tigercore::", op, ": sumsq[", i, "] must be a contiguous float64 tensor of ", rows,
                " element(s) on ", params[i].device());
  }
}

StepPlan plan_step(const char* op, const StepArgs& in, const StepHyper& hyper, Precision mode,
                   c10::DeviceType device_type, bool read_steps) {
  const size_t n = in.params.size();
  TORCH_CHECK(in.grads.size() == n && in.exp_avgs.size() == n && in.steps.size() == n, "tigercore::", op,
              ": params, grads, exp_avgs and steps must have the same length, got ", n, ", ", in.grads.size(), ", ",
              in.exp_avgs.size(), ", ", in.steps.size());
  TORCH_CHECK(in.param_ids.size() == n, "tigercore::", op, ": param_ids must have one entry per param, got ",
              in.param_ids.size(), " for ", n, " params");
  TORCH_CHECK(in.absmax.empty() || in.absmax.size() == n, "tigercore::", op,
              ": exp_avg_absmax must be empty or have one tensor per param, got ", in.absmax.size(), " for ", n,
              " params");
  TORCH_CHECK(in.elem_offsets.empty() || in.elem_offsets.size() == n, "tigercore::", op,
              ": elem_offsets must be empty or have one entry per param, got ", in.elem_offsets.size(), " for ", n,
              " params");
  for (size_t i = 0; i < in.elem_offsets.size(); ++i)
    TORCH_CHECK(in.elem_offsets[i] >= 0, "tigercore::", op, ": elem_offsets[", i, "] must be >= 0, got ",
                in.elem_offsets[i]);
  check_aux(op, in.params, in.aux, mode);
  check_stamps(op, in.stamps, in.params);
  const bool tiger = hyper.algo == Algo::kTiger;
  if (tiger && hyper.tiger_class != TigerClass::kV) check_sumsq(op, in.sumsq, in.params, hyper.tiger_class);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = in.params[i];
    const at::Tensor& g = in.grads[i];
    const at::Tensor& m = in.exp_avgs[i];
    const at::Tensor& s = in.steps[i];
    TORCH_CHECK(g.defined() && m.defined() && s.defined(), "tigercore::", op, ": undefined tensor at index ", i);
    TORCH_CHECK(p.device().type() == device_type, "tigercore::", op, ": params[", i, "] is on ", p.device(),
                " but this kernel runs on ", c10::DeviceTypeName(device_type));
    TORCH_CHECK(g.layout() == at::kStrided, "tigercore::", op, ": grads[", i,
                "] is sparse; sparse gradients are not supported");
    TORCH_CHECK(!g.is_complex(), "tigercore::", op, ": grads[", i, "] is complex; complex parameters are not supported");
    TORCH_CHECK(g.scalar_type() == p.scalar_type(), "tigercore::", op, ": grads[", i, "] has dtype ", g.scalar_type(),
                " but params[", i, "] has dtype ", p.scalar_type());
    TORCH_CHECK(g.device() == p.device() && m.device() == p.device(), "tigercore::", op, ": grads[", i,
                "] and exp_avgs[", i, "] must be on ", p.device());
    TORCH_CHECK(g.sizes() == p.sizes(), "tigercore::", op, ": grads[", i, "] has shape ", g.sizes(), " but params[", i,
                "] has shape ", p.sizes());
    TORCH_CHECK(m.sizes() == p.sizes(), "tigercore::", op, ": exp_avgs[", i, "] has shape ", m.sizes(), " but params[",
                i, "] has shape ", p.sizes());
    if (m.scalar_type() == at::kByte) {  // [note: 8-bit momentum]: codes and their block absmax
      // the CUDA update finds an element's Tiger E row with 32-bit arithmetic (mta_plan.h, flat_span)
      TORCH_CHECK(!(tiger && hyper.tiger_class == TigerClass::kE && p.dim() >= 1 && p.size(-1) >= (int64_t(1) << 31)),
                  "tigercore::", op, ": params[", i, "] has rows of ", p.dim() >= 1 ? p.size(-1) : 0,
                  " elements; 8-bit momentum with tiger_class 'E' takes rows shorter than 2^31 elements");
      const int64_t blocks = (p.numel() + kQ8Block - 1) / kQ8Block;
      TORCH_CHECK(!in.absmax.empty(), "tigercore::", op, ": exp_avgs[", i,
                  "] is uint8 (8-bit momentum codes) but exp_avg_absmax is empty; pass one float32 tensor of "
                  "block absmax values per param");
      const at::Tensor& a = in.absmax[i];
      TORCH_CHECK(a.defined() && a.scalar_type() == at::kFloat && a.numel() == blocks && a.device() == p.device() &&
                      a.is_contiguous(),
                  "tigercore::", op, ": exp_avg_absmax[", i, "] must be a contiguous float32 tensor of ", blocks,
                  " block absmax value(s) (one per ", kQ8Block, " elements) on ", p.device());
    } else if (p.scalar_type() == at::kDouble) {
      TORCH_CHECK(m.scalar_type() == at::kDouble, "tigercore::", op, ": exp_avgs[", i,
                  "] must be float64 (or uint8 8-bit codes) for float64 params, got ", m.scalar_type());
    } else {
      TORCH_CHECK(m.scalar_type() == at::kFloat || is_16bit(m.scalar_type()), "tigercore::", op, ": exp_avgs[", i,
                  "] must be float32, float16, bfloat16 or uint8 (8-bit codes), got ", m.scalar_type());
    }
    TORCH_CHECK(p.is_contiguous() && g.is_contiguous() && m.is_contiguous(), "tigercore::", op, ": params[", i,
                "], grads[", i, "] and exp_avgs[", i,
                "] must be contiguous (call .contiguous() on the parameter, or use backend='reference')");
    TORCH_CHECK(s.scalar_type() == at::kLong && s.numel() == 1 && s.device() == p.device(), "tigercore::", op,
                ": steps[", i, "] must be a one-element int64 tensor on ", p.device());
  }
  const std::optional<at::Device> device = n > 0 ? std::optional<at::Device>(in.params[0].device()) : std::nullopt;
  for (const auto* opt : {&in.grad_scale, &in.found_inf}) {
    if (opt->has_value() && device) {
      const at::Tensor& t = **opt;
      TORCH_CHECK(t.numel() == 1 && at::isFloatingType(t.scalar_type()) && t.device() == *device, "tigercore::", op,
                  ": ", opt == &in.grad_scale ? "grad_scale" : "found_inf", " must be a one-element floating tensor on ",
                  *device);
    }
  }
  // [note: tensor lr] lr is a one-element float64 tensor, on the CPU (read here) or on the
  // parameters' device (read by the kernels: a schedule never recompiles or synchronises).
  TORCH_CHECK(in.lr.defined() && in.lr.numel() == 1 && in.lr.scalar_type() == at::kDouble, "tigercore::", op,
              ": lr must be a one-element float64 tensor");
  TORCH_CHECK(in.lr.device().is_cpu() || !device || in.lr.device() == *device, "tigercore::", op, ": lr must be on ",
              device ? device->str() : std::string("the CPU"), " or on the CPU, got ", in.lr.device());

  StepPlan plan;
  plan.call.hyper = hyper;
  plan.call.coef = derive_coefficients(hyper);
  plan.call.lr = 0.0;
  if (in.lr.device().is_cpu()) {
    plan.call.lr = in.lr.data_ptr<double>()[0];
    TORCH_CHECK(std::isfinite(plan.call.lr) && plan.call.lr >= 0, "tigercore::", op,
                ": lr must be finite and >= 0, got ", plan.call.lr);
  } else {
    plan.lr_device = in.lr.data_ptr<double>();
  }
  plan.call.has_grad_scale = in.grad_scale.has_value();
  plan.call.grad_scale = 1.0;
  if (in.grad_scale.has_value() && in.grad_scale->device().is_cpu()) {
    plan.call.grad_scale = in.grad_scale->item<double>();
    TORCH_CHECK(std::isfinite(plan.call.grad_scale) && plan.call.grad_scale > 0, "tigercore::", op,
                ": grad_scale must be finite and > 0, got ", plan.call.grad_scale);
  }
  plan.tensors.assign(n, StepTensor{});
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = in.params[i];
    StepTensor& t = plan.tensors[i];
    t.param_dtype = to_dtype(p.scalar_type());
    const bool code8 = in.exp_avgs[i].scalar_type() == at::kByte;
    t.momentum_dtype = code8 ? DType::kCode8 : to_dtype(in.exp_avgs[i].scalar_type());
    t.absmax = code8 ? in.absmax[i].data_ptr<float>() : nullptr;
    t.mode = is_16bit(p.scalar_type()) ? mode : Precision::kNone;
    t.param = p.data_ptr();
    t.grad = in.grads[i].data_ptr();
    t.exp_avg = in.exp_avgs[i].data_ptr();
    t.aux = (t.mode == Precision::kKahan || t.mode == Precision::kMaster) ? in.aux[i].data_ptr() : nullptr;
    t.numel = p.numel();
    t.row_len = (tiger && hyper.tiger_class == TigerClass::kE && p.dim() >= 1) ? p.size(-1) : p.numel();
    t.param_id = uint32_t(in.param_ids[i]);
    t.elem_offset = in.elem_offsets.empty() ? 0 : in.elem_offsets[i];
    t.step = read_steps ? in.steps[i].item<int64_t>() : 0;
    t.shrink = false;
    t.update = true;
    t.eta = 0.0;
    t.eta_rows = nullptr;
    t.caution_scale = 1.0;
    plan.row0.push_back(plan.rows);
    if (tiger) plan.rows += rms_rows(p, hyper.tiger_class);
  }
  return plan;
}

// [note: external writes]
// Writes to a parameter that this optimizer did not make (loading a checkpoint into the model,
// clamp_, an EMA swap, re-initialising rows) must not be undone or ignored by the next step. Each
// parameter carries a stamp: its version counter and storage address right after this optimizer
// last wrote (or checked) it. When they differ at the start of a step, the parameter was written
// from outside, and
//  - master mode: the master copy is re-seeded from the parameter wherever it no longer rounds to
//    the parameter's bits (elements whose value did not change keep their extra precision, so a
//    swap-out-and-back or reloading the same checkpoint loses nothing);
//  - kahan mode: the compensation is zeroed (it belonged to the old value);
//  - Tiger K/E: the carried sums of squares are marked unknown and computed afresh.
// Writes that bypass the version counter (through .data, numpy or raw pointers) are declared with
// Optimizer.mark_params_written(), which invalidates the stamp. Under torch.compile the graph's
// runtime (AOTAutograd) bumps the version of every input the graph mutates once before it runs;
// `compiled` says so, and that one bump is not taken for an external write.
void sync_external_writes(at::TensorList params, at::TensorList aux, at::TensorList stamps, at::TensorList sumsq,
                          Precision mode, bool compiled) {
  if (stamps.empty()) return;
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    if (p.is_inference()) continue;  // inference tensors have no version counter
    int64_t* s = stamps[i].data_ptr<int64_t>();
    const int64_t version = int64_t(p._version()) - (compiled ? 1 : 0);
    const int64_t address = int64_t(reinterpret_cast<uintptr_t>(p.data_ptr()));
    if (s[0] == version && s[1] == address) continue;
    const Precision m = is_16bit(p.scalar_type()) ? mode : Precision::kNone;
    if (m == Precision::kMaster) {
      const at::Tensor& master = aux[i];
      const at::Tensor stale = master.to(p.scalar_type()).view(at::kShort).ne(p.view(at::kShort));
      master.copy_(at::where(stale, p.to(at::kFloat), master));
    } else if (m == Precision::kKahan) {
      aux[i].zero_();
    }
    if (!sumsq.empty()) sumsq[i].fill_(-1.0);
    s[0] = int64_t(p._version());
    s[1] = address;
  }
}

void record_stamps(at::TensorList params, at::TensorList stamps) {
  for (size_t i = 0; i < stamps.size(); ++i) {
    if (params[i].is_inference()) continue;
    int64_t* s = stamps[i].data_ptr<int64_t>();
    s[0] = int64_t(params[i]._version());
    s[1] = int64_t(reinterpret_cast<uintptr_t>(params[i].data_ptr()));
  }
}

// [note: version counters]
// The ops write through raw pointers, so they bump the version counters of what they modified
// themselves, as in-place torch ops do: autograd then refuses stale saved tensors, and the stamps
// of [note: external writes] see exactly the optimizer's own writes. A parameter is only bumped
// when it was written.
namespace {
void bump_version(const at::Tensor& t) {
  if (t.defined() && !t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
}
}  // namespace

void bump_versions(const StepArgs& in, const std::vector<char>& params_written) {
  for (size_t i = 0; i < in.params.size(); ++i) {
    if (params_written[i]) {
      bump_version(in.params[i]);
      if (!in.aux.empty() && in.aux[i].numel() > 0) bump_version(in.aux[i]);
    }
    bump_version(in.exp_avgs[i]);
    if (!in.absmax.empty() && in.exp_avgs[i].scalar_type() == at::kByte) bump_version(in.absmax[i]);
    bump_version(in.steps[i]);
    if (in.grad_scale.has_value()) bump_version(in.grads[i]);
  }
}

StepPlan begin_lion_step(const StepArgs& in, double beta1, double beta2, double weight_decay, bool maximize,
                         c10::string_view precision, int64_t seed, bool compiled, c10::DeviceType device_type,
                         bool read_steps, bool cautious) {
  const Precision mode = parse_precision(precision);
  StepHyper hyper = lion_hyper(beta1, beta2, weight_decay, maximize, seed);
  hyper.cautious = cautious;
  StepPlan plan = plan_step("lion_step_", in, hyper, mode, device_type, read_steps);
  sync_external_writes(in.params, in.aux, in.stamps, {}, mode, compiled);
  return plan;
}

StepPlan begin_tiger_step(const StepArgs& in, double beta, double weight_decay, int64_t grad_accum_steps,
                          c10::string_view tiger_class, double shrink_ratio, double shrink_center,
                          bool nonfinite_guard, double rms_floor, bool maximize, c10::string_view precision,
                          int64_t seed, bool compiled, const std::optional<at::Tensor>& eta,
                          const std::optional<at::Tensor>& nonfinite, c10::DeviceType device_type, bool read_steps,
                          bool cautious) {
  const Precision mode = parse_precision(precision);
  const TigerClass cls = parse_tiger_class(tiger_class);
  StepHyper hyper = tiger_hyper(beta, weight_decay, grad_accum_steps, cls, shrink_ratio, shrink_center,
                                nonfinite_guard, rms_floor, maximize, seed);
  hyper.cautious = cautious;
  StepPlan plan = plan_step("tiger_step_", in, hyper, mode, device_type, read_steps);
  const size_t n = plan.tensors.size();
  const auto on_params_device = [&](const at::Tensor& t) { return n == 0 || t.device() == in.params[0].device(); };
  if (eta.has_value() && cls != TigerClass::kV)
    TORCH_CHECK(eta->scalar_type() == at::kDouble && eta->numel() == plan.rows && eta->is_contiguous() &&
                    on_params_device(*eta),
                "tigercore::tiger_step_: eta must be a contiguous float64 tensor of ", plan.rows,
                " step size(s) (one per tensor or row) on the params' device");
  if (nonfinite.has_value())
    TORCH_CHECK(nonfinite->scalar_type() == at::kBool && nonfinite->numel() == int64_t(n) &&
                    nonfinite->is_contiguous() && on_params_device(*nonfinite),
                "tigercore::tiger_step_: nonfinite must be a contiguous bool tensor of ", n,
                " flag(s) (one per tensor) on the params' device");
  sync_external_writes(in.params, in.aux, in.stamps, carried_sums(in, hyper), mode, compiled);
  return plan;
}

StepPlan plan_tiger_stats(at::TensorList params, at::TensorList grads, at::TensorList aux, at::TensorList sumsq,
                          c10::string_view tiger_class, c10::string_view precision,
                          const std::optional<at::Tensor>& grad_scale, c10::DeviceType device_type) {
  const Precision mode = parse_precision(precision);
  const TigerClass cls = parse_tiger_class(tiger_class);
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n, "tigercore::tiger_stats: params and grads must have the same length, got ", n,
              ", ", grads.size());
  check_aux("tiger_stats", params, aux, mode);
  check_sumsq("tiger_stats", sumsq, params, cls);
  if (grad_scale.has_value())
    TORCH_CHECK(grad_scale->numel() == 1 && at::isFloatingType(grad_scale->scalar_type()),
                "tigercore::tiger_stats: grad_scale must be a one-element floating tensor");
  StepPlan plan;
  plan.call = StepCall{};
  plan.call.hyper.algo = Algo::kTiger;
  plan.call.hyper.tiger_class = cls;
  plan.call.hyper.grad_accum_steps = 1;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK(p.device().type() == device_type && p.is_contiguous() && g.sizes() == p.sizes() &&
                    g.scalar_type() == p.scalar_type() && g.device() == p.device() && g.is_contiguous() &&
                    p.device() == params[0].device(),
                "tigercore::tiger_stats: params[", i, "] and grads[", i, "] must be contiguous tensors on one ",
                c10::DeviceTypeName(device_type), " device, of one shape and dtype");
    StepTensor t{};
    t.param_dtype = to_dtype(p.scalar_type());
    t.momentum_dtype = DType::kFloat32;  // no momentum: only the parameter side of the kernel key matters
    t.mode = (p.scalar_type() == at::kHalf || p.scalar_type() == at::kBFloat16) ? mode : Precision::kNone;
    t.param = p.data_ptr();
    t.grad = g.data_ptr();
    t.aux = t.mode == Precision::kMaster ? aux[i].data_ptr() : nullptr;
    t.numel = p.numel();
    t.row_len = cls == TigerClass::kE && p.dim() >= 1 ? p.size(-1) : p.numel();
    plan.tensors.push_back(t);
    plan.row0.push_back(plan.rows);
    plan.rows += rms_rows(p, cls);
  }
  return plan;
}

}  // namespace host
}  // namespace tigercore
