// step_desc.h — plain-old-data descriptions of one fused Lion/Tiger step, shared by the host plan
// (csrc/host/step_plan.cpp, which fills them), the CPU loops and the CUDA blocks. No torch headers:
// the per-ISA CPU kernels and the C++ unit tests build without them. What each field means for the
// user is in docs/semantics.md ("The step ops"); the reference is tigercore/reference/optim.py.
#pragma once
#include "tigercore/dtype.h"
#include "tigercore/momentum8.h"
#include "tigercore/optim_math.h"

namespace tigercore {

enum class Algo : int32_t { kLion = 0, kTiger = 1 };
enum class TigerClass : int32_t { kK = 0, kE = 1, kV = 2 };

// The call's hyperparameters as the op received them (float64; weight_decay is 0 for Tiger's V
// class), checked by the host plan. lr is not here: it is a tensor ([note: tensor lr]).
struct StepHyper {
  Algo algo;
  bool maximize;
  uint32_t seed;
  double beta1, beta2;  // Lion
  double beta;          // Tiger
  int64_t grad_accum_steps;
  TigerClass tiger_class;
  double shrink_ratio, shrink_center, rms_floor;
  bool nonfinite_guard;
  double weight_decay;
  bool cautious;  // [note: cautious]
};

// [note: coefficients]
// Every per-call coefficient is derived once, on the host, in float64 and rounded once to the
// op-math type (fp32, or fp64 for fp64 parameters): b1, +-(1-b1), b2, +-(1-b2) (Lion), beta and
// +-(1-beta)/k (Tiger), lambda, the shrink ratio and centre. `maximize` is folded into the gradient
// coefficients ((1-b)(-g) == -((1-b) g) exactly), so no loop branches on it. The step size is not
// here: it comes from the lr tensor (and Tiger's RMS) when the kernel runs. The reference derives
// the same values in tigercore/reference/optim.py::step_coefficients.
enum Coef : int {
  kBeta1, kGradCoef1, kBeta2, kGradCoef2,  // Lion: b1, ±(1-b1), b2, ±(1-b2)
  kTigerBeta, kTigerGradCoef,              // Tiger: beta, ±(1-beta)/k
  kWeightDecay, kShrinkRatio, kShrinkCentre, kNumCoefs
};
struct Coefficients {
  float f32[kNumCoefs];
  double f64[kNumCoefs];
};

TC_FN Coefficients derive_coefficients(const StepHyper& h) {
  const double sgn = h.maximize ? -1.0 : 1.0;
  const double tiger_g = h.algo == Algo::kTiger ? (1.0 - h.beta) / double(h.grad_accum_steps) : 0.0;
  const double v[kNumCoefs] = {h.beta1, sgn * (1.0 - h.beta1), h.beta2, sgn * (1.0 - h.beta2),
                               h.beta, sgn * tiger_g, h.weight_decay, h.shrink_ratio, h.shrink_center};
  Coefficients c{};
  for (int i = 0; i < kNumCoefs; ++i) {
    c.f64[i] = v[i];
    c.f32[i] = float(v[i]);
  }
  return c;
}

template <typename T>
TC_FN T coef(const Coefficients& c, Coef k) {
  if constexpr (sizeof(T) == 4) return c.f32[k];
  else return c.f64[k];
}

// ---- functors: the element steps with their coefficients, built the same way on every backend --
// [note: cautious]: the tensor's scale s (1 when off) and the sign folding maximize into the test.
template <typename T>
TC_FN Caution<T> make_caution(const StepHyper& h, double scale) {
  return h.cautious ? Caution<T>{T(scale), h.maximize ? T(-1) : T(1), false} : caution_off<T>();
}

// kU: who decides whether the mask applies ([note: cautious], CautionUse).
template <typename T, CautionUse kU = CautionUse::kRuntime>
struct LionStep {
  LionCoeffs<T> k;
  T eta, wd;
  Caution<T> caution;
  TC_FORCEINLINE TC_HOST_DEVICE void operator()(T& w, T& m, T g) const { lion_update<kU>(w, m, g, k, eta, wd, caution); }
  // Whether element (m, g) keeps its step under cautious masking (the count pass).
  TC_FORCEINLINE TC_HOST_DEVICE bool keeps(T m, T g) const { return caution_keep(lion_direction(m, g, k), g, caution.sign); }
};
template <typename T, CautionUse kU = CautionUse::kRuntime>
TC_FN LionStep<T, kU> make_lion_step(const Coefficients& c, T eta, const Caution<T>& caution = caution_off<T>()) {
  return LionStep<T, kU>{{coef<T>(c, kBeta1), coef<T>(c, kGradCoef1), coef<T>(c, kBeta2), coef<T>(c, kGradCoef2)},
                         eta, coef<T>(c, kWeightDecay), caution};
}

// Tiger's momentum (b1 = beta on a group's first micro-step, else 1) and parameter steps.
template <typename T, CautionUse kU = CautionUse::kRuntime>
struct TigerStep {
  TigerCoeffs<T> k;
  T wd;
  Caution<T> caution;
  TC_FORCEINLINE TC_HOST_DEVICE T momentum(T m, T g) const {
    tiger_momentum(m, g, k);
    return m;
  }
  // m: the new momentum; g: this micro-step's gradient (cautious masking only).
  TC_FORCEINLINE TC_HOST_DEVICE T param(T w, T m, T g, T eta) const {
    tiger_param<kU>(w, m, eta, wd, g, caution);
    return w;
  }
  // Whether element (m, g) (m: the old momentum) keeps its step under cautious masking.
  TC_FORCEINLINE TC_HOST_DEVICE bool keeps(T m, T g) const {
    return caution_keep(sign_keep_nan(momentum(m, g)), g, caution.sign);
  }
};
template <typename T, CautionUse kU = CautionUse::kRuntime>
TC_FN TigerStep<T, kU> make_tiger_step(const Coefficients& c, bool first_micro_step,
                                       const Caution<T>& caution = caution_off<T>()) {
  return TigerStep<T, kU>{{first_micro_step ? coef<T>(c, kTigerBeta) : T(1), coef<T>(c, kTigerGradCoef)},
                          coef<T>(c, kWeightDecay), caution};
}

template <typename T>
struct TigerShrink {
  T ratio, centre;
  TC_FORCEINLINE TC_HOST_DEVICE T operator()(T w) const { return tiger_shrink(w, centre, ratio); }
};
template <typename T>
TC_FN TigerShrink<T> make_tiger_shrink(const Coefficients& c) {
  return TigerShrink<T>{coef<T>(c, kShrinkRatio), coef<T>(c, kShrinkCentre)};
}

// What the CPU loops need of a call: its hyperparameters and coefficients, and the host values of
// the lr and grad_scale tensors (the CUDA kernels read those on the device: mta::KernelScalars).
struct StepCall {
  StepHyper hyper;
  Coefficients coef;
  double lr;
  bool has_grad_scale;  // divide g by grad_scale (and store the unscaled g back)
  double grad_scale;
};

// One tensor of a call: its arrays, storage types and stream key, and (Tiger) what the launch
// layer decided before the update pass.
struct StepTensor {
  void* param;
  void* grad;
  void* exp_avg;
  void* aux;             // kahan_comp (param dtype) or master_param (fp32), else nullptr
  float* absmax;         // 8-bit momentum (momentum_dtype kCode8): its block absmax, else nullptr
  DType param_dtype;
  DType momentum_dtype;  // kCode8: exp_avg holds uint8 codes ([note: 8-bit momentum])
  Precision mode;        // kNone unless the parameter is fp16/bf16
  int64_t numel;
  int64_t row_len;       // Tiger E: elements per row (last dim); otherwise numel
  uint32_t param_id;     // ordinal p of the stochastic-rounding key
  int64_t elem_offset;   // stochastic-rounding counter of element 0: its flat offset in the logical
                         // tensor (0 unless this is a shard of a distributed tensor)
  int64_t step;          // state['step'] on entry (CPU; the CUDA kernels read it on the device)
  bool shrink;           // Tiger: the non-finite guard fired for this tensor
  bool update;           // Tiger: the parameter moves on this micro-step
  double eta;            // step size when it is the same for every element (K, V, Lion)
  const double* eta_rows;  // Tiger E: step size per row, else nullptr
  double caution_scale;  // [note: cautious] the tensor's s when the call is cautious (CPU), else 1
};

// [note: cautious] s = n / max(K, 0.001 n) in float64 for a tensor of n elements of which K keep
// their step (0 < n; K = 0 gives 1000, which multiplies nothing).
TC_FN double caution_scale_of(int64_t n, int64_t kept) {
  const double floor = 0.001 * double(n);
  const double k = double(kept);
  return double(n) / (k > floor ? k : floor);
}

}  // namespace tigercore
