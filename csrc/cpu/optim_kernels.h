// optim_kernels.h — CPU loops for the fused Lion/Tiger step and Tiger's pre-pass reductions.
// Included by kernels_{generic,avx2,avx512}.cpp, each with its own TC_ISA namespace and
// target pragma, so the compiler vectorises the same element math (tigercore/optim_math.h) for
// each instruction set. Reference: tigercore/reference/optim.py.
#pragma once
#include <algorithm>
#include <vector>

#include "kernel_table.h"

#ifndef TC_ISA
#error "define TC_ISA (the namespace of this instruction-set variant) before including"
#endif

namespace tigercore {
namespace cpu {
namespace TC_ISA {

// [note: deterministic sum of squares]
// kLanes lanes accumulate x = element begin + kLanes*j + lane as x*x in float64 (an fp32 square is
// exact in fp64), then the lanes are added in order. The tree depends only on (begin, end), which
// the launch layer fixes independently of the thread count. 32 lanes give the vectoriser four
// AVX-512 (eight AVX2) independent accumulators. The same pattern is used when the sum is fused
// into Tiger's update loop and when it is computed afresh, so both give identical bits.
constexpr int kLanes = 32;

// body(i) for i in [begin, end); with kSum, also sum double(body(i))^2 in the lane pattern above.
template <bool kSum, typename Body>
inline __attribute__((always_inline)) double for_each_summing(int64_t begin, int64_t end, Body&& body) {
  if constexpr (!kSum) {
    for (int64_t i = begin; i < end; ++i) body(i);
    return 0.0;
  } else {
    double lanes[kLanes] = {};
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const double x = double(body(i + l));
        lanes[l] += x * x;
      }
    for (int l = 0; i < end; ++i, ++l) {
      const double x = double(body(i));
      lanes[l] += x * x;
    }
    double s = 0.0;
    for (int l = 0; l < kLanes; ++l) s += lanes[l];
    return s;
  }
}

// [note: stochastic rounding words on the CPU]
// A chunk's Philox words are computed first, one call per four elements, into a buffer that the
// update loop then reads; the words are the same as sr_random_word's (philox.h), so CPU, CUDA and
// the reference still round identically. Other modes skip this.
template <Precision kMode>
struct SrWords {
  std::vector<uint32_t> words;
  int64_t begin = 0;
  SrWords(const SrKey& key, int64_t b, int64_t e) : begin(b) {
    if constexpr (kMode == Precision::kStochastic) {
      words.resize(size_t(e - b));
      sr_random_words(key.seed, key.param_id, key.step, uint64_t(b), uint64_t(e), words.data());
    }
  }
  // The word of element i is chunk()[i - begin] (not data() - begin: a pointer before the array).
  const uint32_t* chunk() const { return words.data(); }
};

// [note: vectorisable loops]
// Everything that varies per call but not per element (GradScaler division, the Tiger update flag,
// the step size) is hoisted out of the element loop, and `maximize` is folded into the gradient
// coefficients ((1-b)*(-g) == -((1-b)*g) exactly), so the loops are branch-free and the compiler
// vectorises them for each instruction set.
template <typename P, typename M, Precision kMode, bool kScaled>
double lion_loop(const SignStepCall& call, const SignStepTensor& t, int64_t begin, int64_t end, double*) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  const T sgn = call.maximize ? T(-1) : T(1);
  const LionCoeffs<T> k{T(call.beta1), sgn * T(1.0 - call.beta1), T(call.beta2), sgn * T(1.0 - call.beta2)};
  const T eta = T(t.eta), wd = T(call.weight_decay), scale = T(call.grad_scale);
  P* __restrict__ param = static_cast<P*>(t.param);
  P* __restrict__ grad = static_cast<P*>(t.grad);
  M* __restrict__ mom = static_cast<M*>(t.exp_avg);
  void* __restrict__ aux = t.aux;
  const SrWords<kMode> sr(SrKey{call.seed, t.param_id, uint64_t(t.step)}, begin, end);
  const uint32_t* __restrict__ r = sr.chunk();
  for (int64_t i = begin; i < end; ++i) {
    T g = storage<P>::load(grad, i);
    if constexpr (kScaled) {
      g = g / scale;
      storage<P>::store(grad, i, g);
    }
    T m = T(storage<M>::load(mom, i));
    const T w_old = Access::load(param, aux, i);
    T w = w_old;
    lion_update(w, m, g, k, eta, wd);
    Access::store_r(param, aux, i, w_old, w, kMode == Precision::kStochastic ? r[i - begin] : 0u);
    storage<M>::store(mom, i, typename storage<M>::opmath(m));
  }
  return 0.0;
}

// Tiger over [begin, end) with one step size; returns the sum of squares of the new working values
// when kSum (only meaningful with kUpdate).
template <typename P, typename M, Precision kMode, bool kScaled, bool kUpdate, bool kSum>
double tiger_range(const SignStepCall& call, const SignStepTensor& t, int64_t begin, int64_t end, double eta64) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  const T sgn = call.maximize ? T(-1) : T(1);
  const TigerCoeffs<T> k{tiger_is_first_micro_step(t.step, call.grad_accum_steps) ? T(call.beta) : T(1),
                         sgn * T((1.0 - call.beta) / double(call.grad_accum_steps))};
  const T wd = T(call.weight_decay), scale = T(call.grad_scale), eta = T(eta64);
  P* __restrict__ param = static_cast<P*>(t.param);
  P* __restrict__ grad = static_cast<P*>(t.grad);
  M* __restrict__ mom = static_cast<M*>(t.exp_avg);
  void* __restrict__ aux = t.aux;
  const SrWords<kUpdate ? kMode : Precision::kNone> sr(SrKey{call.seed, t.param_id, uint64_t(t.step)}, begin, end);
  const uint32_t* __restrict__ r = sr.chunk();
  return for_each_summing<kSum>(begin, end, [&](int64_t i) -> T {
    T g = storage<P>::load(grad, i);
    if constexpr (kScaled) {
      g = g / scale;
      storage<P>::store(grad, i, g);
    }
    T m = T(storage<M>::load(mom, i));
    tiger_momentum(m, g, k);
    storage<M>::store(mom, i, typename storage<M>::opmath(m));
    if constexpr (kUpdate) {
      const T w_old = Access::load(param, aux, i);
      T w = w_old;
      tiger_param(w, m, eta, wd);
      return Access::store_r(param, aux, i, w_old, w, kMode == Precision::kStochastic ? r[i - begin] : 0u);
    } else {
      return T(0);
    }
  });
}

// The guard fired: m is unchanged and theta shrinks toward the centre; a GradScaler gradient is
// still stored back unscaled, as on every other path.
template <typename P, Precision kMode, bool kScaled, bool kSum>
double tiger_shrink_range(const SignStepCall& call, const SignStepTensor& t, int64_t begin, int64_t end) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  const T ratio = T(call.shrink_ratio), centre = T(call.shrink_center), scale = T(call.grad_scale);
  P* __restrict__ param = static_cast<P*>(t.param);
  P* __restrict__ grad = static_cast<P*>(t.grad);
  void* __restrict__ aux = t.aux;
  const SrWords<kMode> sr(SrKey{call.seed, t.param_id, uint64_t(t.step)}, begin, end);
  const uint32_t* __restrict__ r = sr.chunk();
  return for_each_summing<kSum>(begin, end, [&](int64_t i) -> T {
    if constexpr (kScaled) storage<P>::store(grad, i, storage<P>::load(grad, i) / scale);
    const T w_old = Access::load(param, aux, i);
    return Access::store_r(param, aux, i, w_old, tiger_shrink(w_old, centre, ratio),
                           kMode == Precision::kStochastic ? r[i - begin] : 0u);
  });
}

// Runs range(b, e, eta) over [begin, end): once (K, V), or row by row (E) writing each row's
// sum to row_sums[row].
template <typename Range>
double by_rows(const SignStepTensor& t, int64_t begin, int64_t end, double* row_sums, Range&& range) {
  if (t.eta_rows == nullptr && row_sums == nullptr) return range(begin, end, t.eta);
  const int64_t row_len = t.row_len > 0 ? t.row_len : 1;
  double total = 0.0;
  for (int64_t b = begin; b < end;) {
    const int64_t row = b / row_len;
    const int64_t e = std::min(end, (row + 1) * row_len);
    const double s = range(b, e, t.eta_rows ? t.eta_rows[row] : t.eta);
    if (row_sums) row_sums[row] = s;
    total += s;
    b = e;
  }
  return total;
}

template <typename P, typename M, Precision kMode, bool kScaled>
double tiger_loop(const SignStepCall& call, const SignStepTensor& t, int64_t begin, int64_t end, double* row_sums) {
  if (t.shrink) {
    return by_rows(t, begin, end, row_sums, [&](int64_t b, int64_t e, double) {
      return t.want_sumsq ? tiger_shrink_range<P, kMode, kScaled, true>(call, t, b, e)
                          : tiger_shrink_range<P, kMode, kScaled, false>(call, t, b, e);
    });
  }
  if (!t.update) return tiger_range<P, M, kMode, kScaled, false, false>(call, t, begin, end, 0.0);
  return by_rows(t, begin, end, row_sums, [&](int64_t b, int64_t e, double eta) {
    return t.want_sumsq ? tiger_range<P, M, kMode, kScaled, true, true>(call, t, b, e, eta)
                        : tiger_range<P, M, kMode, kScaled, true, false>(call, t, b, e, eta);
  });
}

template <typename P, typename M, Precision kMode>
double dispatch_algo(const SignStepCall& call, const SignStepTensor& t, int64_t b, int64_t e, double* rs) {
  if (call.algo == Algo::kLion) {
    return call.has_grad_scale ? lion_loop<P, M, kMode, true>(call, t, b, e, rs)
                               : lion_loop<P, M, kMode, false>(call, t, b, e, rs);
  }
  return call.has_grad_scale ? tiger_loop<P, M, kMode, true>(call, t, b, e, rs)
                             : tiger_loop<P, M, kMode, false>(call, t, b, e, rs);
}

template <typename P, typename M>
double dispatch_mode(const SignStepCall& call, const SignStepTensor& t, int64_t b, int64_t e, double* rs) {
  if constexpr (sizeof(P) == 2) {
    switch (call.precision) {
      case Precision::kKahan: return dispatch_algo<P, M, Precision::kKahan>(call, t, b, e, rs);
      case Precision::kStochastic: return dispatch_algo<P, M, Precision::kStochastic>(call, t, b, e, rs);
      case Precision::kMaster: return dispatch_algo<P, M, Precision::kMaster>(call, t, b, e, rs);
      default: break;
    }
  }
  return dispatch_algo<P, M, Precision::kNone>(call, t, b, e, rs);
}

template <typename P>
double dispatch_momentum(const SignStepCall& call, const SignStepTensor& t, int64_t b, int64_t e, double* rs) {
  if constexpr (sizeof(P) == 8) {
    return dispatch_mode<P, double>(call, t, b, e, rs);
  } else {
    switch (call.momentum_dtype) {
      case DType::kFloat16: return dispatch_mode<P, half_t>(call, t, b, e, rs);
      case DType::kBFloat16: return dispatch_mode<P, bfloat16_t>(call, t, b, e, rs);
      default: return dispatch_mode<P, float>(call, t, b, e, rs);
    }
  }
}

inline double sign_step(const SignStepCall& call, const SignStepTensor& t, int64_t b, int64_t e, double* rs) {
  switch (call.param_dtype) {
    case DType::kFloat32: return dispatch_momentum<float>(call, t, b, e, rs);
    case DType::kFloat64: return dispatch_momentum<double>(call, t, b, e, rs);
    case DType::kFloat16: return dispatch_momentum<half_t>(call, t, b, e, rs);
    default: return dispatch_momentum<bfloat16_t>(call, t, b, e, rs);
  }
}

template <typename S>
double sum_squares_loop(const S* __restrict__ p, int64_t begin, int64_t end) {
  return for_each_summing<true>(begin, end, [&](int64_t i) { return storage<S>::load(p, i); });
}

inline double sum_squares(DType dtype, const void* data, int64_t b, int64_t e) {
  switch (dtype) {
    case DType::kFloat32: return sum_squares_loop(static_cast<const float*>(data), b, e);
    case DType::kFloat64: return sum_squares_loop(static_cast<const double*>(data), b, e);
    case DType::kFloat16: return sum_squares_loop(static_cast<const half_t*>(data), b, e);
    default: return sum_squares_loop(static_cast<const bfloat16_t*>(data), b, e);
  }
}

// Non-finite check as an integer OR-reduction (a bool && chain would not vectorise).
template <typename S, bool kScaled>
bool all_finite_loop(const S* __restrict__ p, int64_t begin, int64_t end, double grad_scale) {
  using T = typename storage<S>::opmath;
  const T scale = T(grad_scale);
  uint32_t bad = 0;
  for (int64_t i = begin; i < end; ++i) {
    T g = storage<S>::load(p, i);
    if constexpr (kScaled) g = g / scale;
    bad |= uint32_t(!is_finite_bits(g));
  }
  return bad == 0;
}

template <typename S>
bool all_finite_as(const void* data, int64_t b, int64_t e, bool has_scale, double grad_scale) {
  const S* p = static_cast<const S*>(data);
  return has_scale ? all_finite_loop<S, true>(p, b, e, grad_scale) : all_finite_loop<S, false>(p, b, e, grad_scale);
}

inline bool all_finite(DType dtype, const void* data, int64_t b, int64_t e, bool has_scale,
                       double grad_scale) {
  switch (dtype) {
    case DType::kFloat32: return all_finite_as<float>(data, b, e, has_scale, grad_scale);
    case DType::kFloat64: return all_finite_as<double>(data, b, e, has_scale, grad_scale);
    case DType::kFloat16: return all_finite_as<half_t>(data, b, e, has_scale, grad_scale);
    default: return all_finite_as<bfloat16_t>(data, b, e, has_scale, grad_scale);
  }
}

}  // namespace TC_ISA
}  // namespace cpu
}  // namespace tigercore
