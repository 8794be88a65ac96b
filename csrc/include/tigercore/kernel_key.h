// kernel_key.h — which compiled step kernel a tensor needs: (param dtype, momentum dtype, precision
// mode) -> storage types and mode as template arguments, plus the elements per 16-byte vector.
// Plain C++ (no CUDA, no torch): the CUDA launch layer dispatches through dispatch_key() and
// csrc/tests/test_mta.cpp checks the same function on the CPU.
#pragma once
#include <type_traits>

#include "tigercore/params.h"

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

// fp64 params keep fp64 momentum (the entry checks); modes other than "none" exist only for
// 16-bit params (describe_tensors() already reduces them, this keeps the key canonical).
inline KernelKey kernel_key(const SignStepCall& c) {
  const DType m = c.param_dtype == DType::kFloat64 ? DType::kFloat64 : c.momentum_dtype;
  return KernelKey{c.param_dtype, m, is_16bit(c.param_dtype) ? c.precision : Precision::kNone};
}

// Elements per 16-byte vector: every array is then read with whole 16-byte loads.
template <typename P, typename M>
constexpr int vec_width() {
  return int(16 / (sizeof(P) < sizeof(M) ? sizeof(P) : sizeof(M)));
}

template <typename F>
void dispatch_dtype(DType d, F&& f) {
  switch (d) {
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
    case DType::kFloat16: return f(half_t{});
    default: return f(bfloat16_t{});
  }
}

// Calls f(P{}, M{}, std::integral_constant<Precision, mode>{}) for the key's instantiation.
template <typename F>
void dispatch_key(const KernelKey& k, F&& f) {
  dispatch_dtype(k.param, [&](auto p_tag) {
    using P = decltype(p_tag);
    auto with_m = [&](auto m_tag) {
      using M = decltype(m_tag);
      if constexpr (sizeof(P) == 2) {
        switch (k.mode) {
          case Precision::kKahan: return f(P{}, M{}, std::integral_constant<Precision, Precision::kKahan>{});
          case Precision::kStochastic: return f(P{}, M{}, std::integral_constant<Precision, Precision::kStochastic>{});
          case Precision::kMaster: return f(P{}, M{}, std::integral_constant<Precision, Precision::kMaster>{});
          default: break;
        }
      }
      return f(P{}, M{}, std::integral_constant<Precision, Precision::kNone>{});
    };
    if constexpr (sizeof(P) == 8) {
      with_m(double{});
    } else {
      switch (k.momentum) {
        case DType::kFloat16: return with_m(half_t{});
        case DType::kBFloat16: return with_m(bfloat16_t{});
        default: return with_m(float{});
      }
    }
  });
}

}  // namespace tigercore
