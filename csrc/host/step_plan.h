// step_plan.h — the host-side plan of one Lion/Tiger step op, shared by the CPU and the CUDA entry
// points: parse the string arguments, check every input before anything is modified, derive the
// call's coefficients once ([note: coefficients]) and describe each tensor (tigercore/step_desc.h);
// and the bookkeeping around a step: external writes ([note: external writes]) and version
// counters. The Python mirror of the checks is tigercore/_checks.py; semantics: docs/semantics.md.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "tigercore/step_desc.h"

namespace tigercore {
namespace host {

// The tensor arguments of a step op (stamps, sumsq, absmax and elem_offsets may be empty lists; absmax:
// the block absmax of each 8-bit momentum, [note: 8-bit momentum]).
struct StepArgs {
  at::TensorList params, grads, exp_avgs, aux, steps, stamps, sumsq, absmax;
  at::IntArrayRef param_ids;
  const at::Tensor& lr;
  const std::optional<at::Tensor>& grad_scale;
  const std::optional<at::Tensor>& found_inf;
  at::IntArrayRef elem_offsets;  // per tensor: flat offset of its first element in the logical tensor
};

Precision parse_precision(c10::string_view s);
DType to_dtype(at::ScalarType s);  // the four parameter dtypes; anything else is an error
TigerClass parse_tiger_class(c10::string_view s);

StepHyper lion_hyper(double beta1, double beta2, double weight_decay, bool maximize, int64_t seed);
StepHyper tiger_hyper(double beta, double weight_decay, int64_t grad_accum_steps, TigerClass cls,
                      double shrink_ratio, double shrink_center, bool nonfinite_guard, double rms_floor,
                      bool maximize, int64_t seed);

struct StepPlan {
  StepCall call;                    // coefficients; host values of lr / grad_scale where host memory
  std::vector<StepTensor> tensors;  // one per parameter, in call order
  std::vector<int64_t> row0;        // Tiger K/E: first row of each tensor in eta / stats layouts
  int64_t rows = 0;                 // total rows
  const double* lr_device = nullptr;  // the lr tensor's data when it lives on the device (CUDA)
};

// Checks every input of `op` and describes it. read_steps: read each step counter on the host
// (CPU); otherwise the kernels read them.
StepPlan plan_step(const char* op, const StepArgs& in, const StepHyper& hyper, Precision mode,
                   c10::DeviceType device_type, bool read_steps);

// The host side of a step op's entry before its kernels run, the same on every device: parse the
// string arguments, derive the hyperparameters, plan and check every input (Tiger: also the
// caller's `eta` and `nonfinite`, on the params' device), then apply the external-write rule
// ([note: external writes]). Nothing is modified unless every check passed.
StepPlan begin_lion_step(const StepArgs& in, double beta1, double beta2, double weight_decay, bool maximize,
                         c10::string_view precision, int64_t seed, bool compiled, c10::DeviceType device_type,
                         bool read_steps, bool cautious);
StepPlan begin_tiger_step(const StepArgs& in, double beta, double weight_decay, int64_t grad_accum_steps,
                          c10::string_view tiger_class, double shrink_ratio, double shrink_center,
                          bool nonfinite_guard, double rms_floor, bool maximize, c10::string_view precision,
                          int64_t seed, bool compiled, const std::optional<at::Tensor>& eta,
                          const std::optional<at::Tensor>& nonfinite, c10::DeviceType device_type, bool read_steps,
                          bool cautious);
// The plan of tiger_stats, the same on every device: checks, and per tensor its description
// (parameter side only) and first row (plan.row0; plan.rows in all).
StepPlan plan_tiger_stats(at::TensorList params, at::TensorList grads, at::TensorList aux, at::TensorList sumsq,
                          c10::string_view tiger_class, c10::string_view precision,
                          const std::optional<at::Tensor>& grad_scale, c10::DeviceType device_type);
// Tiger's carried sums of squares as the kernels use them: none for class V.
inline at::TensorList carried_sums(const StepArgs& in, const StepHyper& hyper) {
  return hyper.tiger_class == TigerClass::kV ? at::TensorList() : in.sumsq;
}

// Rows over which Tiger takes an RMS: 1 (K, V) or one per slice of the last dimension (E).
int64_t rms_rows(const at::Tensor& p, TigerClass cls);
void check_sumsq(const char* op, at::TensorList sumsq, at::TensorList params, TigerClass cls);
void check_stamps(const char* op, at::TensorList stamps, at::TensorList params);
void check_aux(const char* op, at::TensorList params, at::TensorList aux, Precision mode);

// See [note: external writes] in step_plan.cpp.
void sync_external_writes(at::TensorList params, at::TensorList aux, at::TensorList stamps, at::TensorList sumsq,
                          Precision mode, bool compiled);
void record_stamps(at::TensorList params, at::TensorList stamps);

// See [note: version counters] in step_plan.cpp.
void bump_versions(const StepArgs& in, const std::vector<char>& params_written);

}  // namespace host
}  // namespace tigercore
