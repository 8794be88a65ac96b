// params.h — plain-old-data descriptions of one fused sign-momentum step, shared by the CPU and
// CUDA launch layers. No torch headers: the per-ISA CPU kernels and the C++ unit test build
// without them. Filled in by csrc/cpu/optim_ops.cpp and csrc/cuda/optim_step.cu.
#pragma once
#include "tigercore/optim_math.h"

namespace tigercore {

enum class Algo : int32_t { kLion = 0, kTiger = 1 };
enum class DType : int32_t { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };
enum class TigerClass : int32_t { kK = 0, kE = 1, kV = 2 };

TC_FN const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kFloat16: return "float16";
    default: return "bfloat16";
  }
}

// One call's scalars (the same for every tensor of the call), in float64 as given by Python;
// kernels round each to their op-math type once.
struct SignStepCall {
  Algo algo;
  DType param_dtype;
  DType momentum_dtype;
  Precision precision;     // already reduced to kNone for fp32/fp64 params
  bool maximize;
  bool has_grad_scale;     // divide g by grad_scale (and store the unscaled g back)
  double grad_scale;
  double lr;
  double weight_decay;     // lambda of this call (0 for Tiger's V class)
  // Lion
  double beta1, beta2;
  // Tiger
  double beta;
  int64_t grad_accum_steps;
  TigerClass tiger_class;
  double shrink_ratio, shrink_center, rms_floor;
  bool nonfinite_guard;
  uint32_t seed;
};

// One tensor of the call.
struct SignStepTensor {
  void* param;
  void* grad;
  void* exp_avg;
  void* aux;              // kahan_comp (param dtype) or master_param (fp32), else nullptr
  int64_t numel;
  int64_t row_len;        // Tiger E: elements per row (last dim); otherwise numel
  uint32_t param_id;      // ordinal p of the stochastic-rounding key
  int64_t step;           // state['step'] on entry
  // Filled by the launch layer for Tiger before the update pass:
  bool shrink;            // the non-finite guard fired for this tensor
  bool update;            // the parameter moves on this micro-step
  double eta;             // step size when it is the same for every element (K, V, Lion)
  const double* eta_rows; // Tiger E: step size per row, else nullptr
  bool want_sumsq;        // Tiger K/E: also return sum(theta'^2) of what was written
};

}  // namespace tigercore
