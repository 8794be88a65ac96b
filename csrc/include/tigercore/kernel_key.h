// kernel_key.h — the one dtype/mode dispatch of the step kernels, for the CPU loops and the CUDA
// launch layer alike: (param dtype, momentum dtype, precision mode) -> storage types and mode as
// template arguments. Every valid combination is listed here and nowhere else; the host plan
// (csrc/host/step_plan.cpp) rejects any other dtype before a kernel runs, so the defaults below
// are unreachable. Plain C++ (no CUDA, no torch); csrc/tests/test_mta.cpp checks it on the CPU.
#pragma once
#include <type_traits>

#include "tigercore/step_desc.h"

namespace tigercore {

struct KernelKey {
  DType param;
  DType momentum;
  Precision mode;  // kNone unless param is fp16/bf16
  bool operator==(const KernelKey& o) const {
    return param == o.param && momentum == o.momentum && mode == o.mode;
  }
};

TC_FN bool is_16bit(DType d) { return d == DType::kFloat16 || d == DType::kBFloat16; }

// fp64 params keep fp64 momentum unless it is 8-bit (the plan checks); modes other than "none"
// exist only for 16-bit params (the plan already reduces them; this keeps the key canonical).
inline KernelKey kernel_key(const StepTensor& t) {
  const DType m = t.param_dtype == DType::kFloat64 && t.momentum_dtype != DType::kCode8 ? DType::kFloat64
                                                                                     : t.momentum_dtype;
  return KernelKey{t.param_dtype, m, is_16bit(t.param_dtype) ? t.mode : Precision::kNone};
}

// Elements per 16-byte vector: every array is then read with whole 16-byte loads.
template <typename P, typename M>
constexpr int vec_width() {
  return int(16 / (sizeof(P) < sizeof(M) ? sizeof(P) : sizeof(M)));
}

template <typename F>
TC_FORCEINLINE void dispatch_dtype(DType d, F&& f) {
  switch (d) {
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
    case DType::kFloat16: return f(half_t{});
    case DType::kBFloat16: return f(bfloat16_t{});
    case DType::kCode8: break;  // a momentum storage, never a parameter or gradient dtype
  }
  TC_UNREACHABLE();
}

// Calls f(P{}, std::integral_constant<Precision, mode>{}): the parameter side of a key.
template <typename P, typename F>
TC_FORCEINLINE void dispatch_mode(Precision mode, F&& f) {
  if constexpr (sizeof(P) == 2) {
    switch (mode) {
      case Precision::kNone: return f(std::integral_constant<Precision, Precision::kNone>{});
      case Precision::kKahan: return f(std::integral_constant<Precision, Precision::kKahan>{});
      case Precision::kStochastic: return f(std::integral_constant<Precision, Precision::kStochastic>{});
      case Precision::kMaster: return f(std::integral_constant<Precision, Precision::kMaster>{});
    }
    TC_UNREACHABLE();
  } else {
    return f(std::integral_constant<Precision, Precision::kNone>{});
  }
}

// Calls f(P{}, M{}, std::integral_constant<Precision, mode>{}) for the key's instantiation. 8-bit
// momentum never reaches here: the CPU loops decode a chunk's blocks into an op-math buffer and
// dispatch on that ([note: 8-bit momentum], csrc/cpu/optim_kernels.h); the CUDA kernels have their
// own instantiations (dispatch_key_or_code8).
template <typename F>
TC_FORCEINLINE void dispatch_key(const KernelKey& k, F&& f) {
  dispatch_dtype(k.param, [&](auto p_tag) {
    using P = decltype(p_tag);
    auto with_m = [&](auto m_tag) {
      dispatch_mode<P>(k.mode, [&](auto mode) { f(P{}, decltype(m_tag){}, mode); });
    };
    if constexpr (sizeof(P) == 8) {
      with_m(double{});
    } else {
      switch (k.momentum) {
        case DType::kFloat32: return with_m(float{});
        case DType::kFloat16: return with_m(half_t{});
        case DType::kBFloat16: return with_m(bfloat16_t{});
        case DType::kFloat64: case DType::kCode8: break;
      }
      TC_UNREACHABLE();
    }
  });
}

// The momentum type of the CUDA kernels' 8-bit instantiations ([note: 8-bit momentum on CUDA],
// csrc/cuda/mta_plan.h): uint8 codes with a float32 absmax per block, decoded to op-math.
struct code8_t {};

// dispatch_key, and f(P{}, code8_t{}, mode) for 8-bit momentum keys (any param dtype and mode).
template <typename F>
TC_FORCEINLINE void dispatch_key_or_code8(const KernelKey& k, F&& f) {
  if (k.momentum != DType::kCode8) return dispatch_key(k, f);
  dispatch_dtype(k.param, [&](auto p_tag) {
    using P = decltype(p_tag);
    dispatch_mode<P>(k.mode, [&](auto mode) { f(P{}, code8_t{}, mode); });
  });
}

}  // namespace tigercore
