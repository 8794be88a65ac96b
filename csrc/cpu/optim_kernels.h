// optim_kernels.h — CPU loops for the fused Lion/Tiger step and Tiger's pre-pass reductions.
// Included by optim_kernels_{generic,avx2,avx512}.cpp, each with its own TC_ISA namespace and
// target pragma, so the compiler vectorises the same element math (tigercore/optim_math.h) for
// each instruction set. Reference: tigercore/reference/optim.py.
#pragma once
#include "kernel_table.h"

#ifndef TC_ISA
#error "define TC_ISA (the namespace of this instruction-set variant) before including"
#endif

namespace tigercore {
namespace cpu {
namespace TC_ISA {

template <typename P, typename M, Precision kMode>
void lion_loop(const SignStepCall& call, const SignStepTensor& t, int64_t begin, int64_t end) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  const LionCoeffs<T> k{T(call.beta1), T(1.0 - call.beta1), T(call.beta2), T(1.0 - call.beta2)};
  const T eta = T(t.eta), wd = T(call.weight_decay), scale = T(call.grad_scale);
  P* param = static_cast<P*>(t.param);
  P* grad = static_cast<P*>(t.grad);
  M* mom = static_cast<M*>(t.exp_avg);
  const SrKey key{call.seed, t.param_id, uint64_t(t.step)};
  for (int64_t i = begin; i < end; ++i) {
    T g = storage<P>::load(grad, i);
    if (call.has_grad_scale) {
      g = g / scale;
      storage<P>::store(grad, i, g);
    }
    if (call.maximize) g = -g;
    T m = T(storage<M>::load(mom, i));
    const T w_old = Access::load(param, t.aux, i);
    T w = w_old;
    lion_update(w, m, g, k, eta, wd);
    Access::store(param, t.aux, i, w_old, w, key);
    storage<M>::store(mom, i, typename storage<M>::opmath(m));
  }
}

template <typename P, typename M, Precision kMode>
void tiger_loop(const SignStepCall& call, const SignStepTensor& t, int64_t begin, int64_t end) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  P* param = static_cast<P*>(t.param);
  P* grad = static_cast<P*>(t.grad);
  M* mom = static_cast<M*>(t.exp_avg);
  const SrKey key{call.seed, t.param_id, uint64_t(t.step)};
  if (t.shrink) {  // guard fired: m unchanged, theta shrinks toward the centre
    const T ratio = T(call.shrink_ratio), centre = T(call.shrink_center);
    for (int64_t i = begin; i < end; ++i) {
      const T w_old = Access::load(param, t.aux, i);
      Access::store(param, t.aux, i, w_old, tiger_shrink(w_old, centre, ratio), key);
    }
    return;
  }
  const bool first = tiger_is_first_micro_step(t.step, call.grad_accum_steps);
  const TigerCoeffs<T> k{first ? T(call.beta) : T(1),
                         T((1.0 - call.beta) / double(call.grad_accum_steps))};
  const T wd = T(call.weight_decay), scale = T(call.grad_scale);
  const int64_t row_len = t.row_len > 0 ? t.row_len : 1;
  for (int64_t i = begin; i < end; ++i) {
    T g = storage<P>::load(grad, i);
    if (call.has_grad_scale) {
      g = g / scale;
      storage<P>::store(grad, i, g);
    }
    if (call.maximize) g = -g;
    T m = T(storage<M>::load(mom, i));
    tiger_momentum(m, g, k);
    storage<M>::store(mom, i, typename storage<M>::opmath(m));
    if (t.update) {
      const T eta = T(t.eta_rows ? t.eta_rows[i / row_len] : t.eta);
      const T w_old = Access::load(param, t.aux, i);
      T w = w_old;
      tiger_param(w, m, eta, wd);
      Access::store(param, t.aux, i, w_old, w, key);
    }
  }
}

template <typename P, typename M>
void dispatch_mode(const SignStepCall& call, const SignStepTensor& t, int64_t b, int64_t e) {
  const bool lion = call.algo == Algo::kLion;
  switch (call.precision) {
    case Precision::kNone:
      return lion ? lion_loop<P, M, Precision::kNone>(call, t, b, e)
                  : tiger_loop<P, M, Precision::kNone>(call, t, b, e);
    case Precision::kKahan:
      if constexpr (sizeof(P) == 2)
        return lion ? lion_loop<P, M, Precision::kKahan>(call, t, b, e)
                    : tiger_loop<P, M, Precision::kKahan>(call, t, b, e);
      break;
    case Precision::kStochastic:
      if constexpr (sizeof(P) == 2)
        return lion ? lion_loop<P, M, Precision::kStochastic>(call, t, b, e)
                    : tiger_loop<P, M, Precision::kStochastic>(call, t, b, e);
      break;
    case Precision::kMaster:
      if constexpr (sizeof(P) == 2)
        return lion ? lion_loop<P, M, Precision::kMaster>(call, t, b, e)
                    : tiger_loop<P, M, Precision::kMaster>(call, t, b, e);
      break;
  }
}

template <typename P>
void dispatch_momentum(const SignStepCall& call, const SignStepTensor& t, int64_t b, int64_t e) {
  if constexpr (sizeof(P) == 8) {
    return dispatch_mode<P, double>(call, t, b, e);
  } else {
    switch (call.momentum_dtype) {
      case DType::kFloat16: return dispatch_mode<P, half_t>(call, t, b, e);
      case DType::kBFloat16: return dispatch_mode<P, bfloat16_t>(call, t, b, e);
      default: return dispatch_mode<P, float>(call, t, b, e);
    }
  }
}

inline void sign_step(const SignStepCall& call, const SignStepTensor& t, int64_t b, int64_t e) {
  switch (call.param_dtype) {
    case DType::kFloat32: return dispatch_momentum<float>(call, t, b, e);
    case DType::kFloat64: return dispatch_momentum<double>(call, t, b, e);
    case DType::kFloat16: return dispatch_momentum<half_t>(call, t, b, e);
    case DType::kBFloat16: return dispatch_momentum<bfloat16_t>(call, t, b, e);
  }
}

// [note: deterministic sum of squares]
// Eight lanes accumulate elements i = begin + 8j + lane in float64 (an fp32 square is exact in
// fp64), then the lanes are added in order. The tree depends only on (begin, end), which the
// launch layer fixes independently of the thread count.
template <typename S>
double sum_squares_loop(const S* p, int64_t begin, int64_t end) {
  double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = begin;
  for (; i + 8 <= end; i += 8)
    for (int l = 0; l < 8; ++l) {
      const double x = double(storage<S>::load(p, i + l));
      lanes[l] += x * x;
    }
  for (int l = 0; i < end; ++i, ++l) {
    const double x = double(storage<S>::load(p, i));
    lanes[l] += x * x;
  }
  double s = 0;
  for (int l = 0; l < 8; ++l) s += lanes[l];
  return s;
}

inline double sum_squares(DType dtype, const void* data, int64_t b, int64_t e) {
  switch (dtype) {
    case DType::kFloat32: return sum_squares_loop(static_cast<const float*>(data), b, e);
    case DType::kFloat64: return sum_squares_loop(static_cast<const double*>(data), b, e);
    case DType::kFloat16: return sum_squares_loop(static_cast<const half_t*>(data), b, e);
    default: return sum_squares_loop(static_cast<const bfloat16_t*>(data), b, e);
  }
}

template <typename S>
bool all_finite_loop(const S* p, int64_t begin, int64_t end, bool has_scale, double grad_scale) {
  using T = typename storage<S>::opmath;
  const T scale = T(grad_scale);
  bool ok = true;
  for (int64_t i = begin; i < end; ++i) {
    T g = storage<S>::load(p, i);
    if (has_scale) g = g / scale;
    ok &= is_finite_bits(g);
  }
  return ok;
}

inline bool all_finite(DType dtype, const void* data, int64_t b, int64_t e, bool has_scale,
                       double grad_scale) {
  switch (dtype) {
    case DType::kFloat32: return all_finite_loop(static_cast<const float*>(data), b, e, has_scale, grad_scale);
    case DType::kFloat64: return all_finite_loop(static_cast<const double*>(data), b, e, has_scale, grad_scale);
    case DType::kFloat16: return all_finite_loop(static_cast<const half_t*>(data), b, e, has_scale, grad_scale);
    default: return all_finite_loop(static_cast<const bfloat16_t*>(data), b, e, has_scale, grad_scale);
  }
}

}  // namespace TC_ISA
}  // namespace cpu
}  // namespace tigercore
