// optim_kernels.h — CPU loops of the fused Lion/Tiger step and of Tiger's per-tensor reductions.
// Included by kernels_{generic,avx2,avx512}.cpp, each with its own TC_ISA namespace and target
// pragma, so the compiler vectorises the same functors (tigercore/step_desc.h, element math in
// tigercore/optim_math.h) for each instruction set. Types come from the one dispatch table
// (tigercore/kernel_key.h). Reference: tigercore/reference/optim.py.
#pragma once
#include <algorithm>
#include <vector>

#include "kernel_table.h"
#include "sr_words.h"
#include "tigercore/kernel_key.h"

#ifndef TC_ISA
#error "define TC_ISA (the namespace of this instruction-set variant) before including"
#endif

// A lambda body that must be inlined into its loop (GCC otherwise outlines the larger ones, e.g.
// fp16 stores, and the loop then calls it per element instead of vectorising it).
#ifndef TC_INLINE_LAMBDA
#define TC_INLINE_LAMBDA __attribute__((always_inline))
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

// body(i, words) for i in [begin, end), summing double(body(...))^2 in the lane pattern above,
// in blocks of `block` elements (a multiple of kLanes, or the whole range) with the block's
// stochastic-rounding words from prepare(b, e): a block boundary falls on a lane-0 element, so the
// sums are the same for any block length.
template <typename Prepare, typename Body>
inline __attribute__((always_inline)) double for_each_summing(int64_t begin, int64_t end, int64_t block,
                                                               Prepare&& prepare, Body&& body) {
  double lanes[kLanes] = {};
  for (int64_t b = begin; b < end; b += block) {
    const int64_t e = std::min(end, b + block);
    const auto words = prepare(b, e);
    int64_t i = b;
    for (; i + kLanes <= e; i += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const double x = double(body(i + l, words));
        lanes[l] += x * x;
      }
    for (int l = 0; i < e; ++i, ++l) {
      const double x = double(body(i, words));
      lanes[l] += x * x;
    }
  }
  double s = 0.0;
  for (int l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}
template <typename Body>
inline __attribute__((always_inline)) double for_each_summing(int64_t begin, int64_t end, Body&& body) {
  return for_each_summing(begin, end, end > begin ? end - begin : 1, [](int64_t, int64_t) { return NoWords{}; },
                          [&](int64_t i, NoWords) { return body(i); });
}

// [note: GradScaler]
// With GradScaler's grad_scale the gradient is divided by it (the correctly rounded quotient)
// before it enters c or m, and the unscaled value is stored back into .grad, as torch's fused
// optimizers do: one read and one write of the gradient, and .grad holds what the step used.
// load_grad loads g, and with a scale divides and stores the quotient back.
template <typename P, bool kScaled>
inline __attribute__((always_inline)) typename storage<P>::opmath load_grad(P* grad, int64_t i,
                                                                          typename storage<P>::opmath scale) {
  auto g = storage<P>::load(grad, i);
  if constexpr (kScaled) {
    g = g / scale;
    storage<P>::store(grad, i, g);
  }
  return g;
}

// [note: vectorisable loops]
// Everything that varies per call but not per element (GradScaler division, the Tiger update flag,
// the step size, the coefficients) is hoisted out of the element loop into the functors, so the
// loops are branch-free and the compiler vectorises them for each instruction set.
// kU: the plain (kOff) or the cautious (kOn) loop ([note: cautious]).
template <typename P, typename M, Precision kMode, bool kScaled, CautionUse kU>
double lion_loop(const StepCall& call, const StepTensor& t, int64_t begin, int64_t end) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  const LionStep<T, kU> step = make_lion_step<T, kU>(call.coef, T(call.lr), make_caution<T>(call.hyper, t.caution_scale));
  const T scale = T(call.grad_scale);
  P* __restrict__ param = static_cast<P*>(t.param);
  P* __restrict__ grad = static_cast<P*>(t.grad);
  M* __restrict__ mom = static_cast<M*>(t.exp_avg);
  void* __restrict__ aux = t.aux;
  SrStream<kMode> sr(SrKey{call.hyper.seed, t.param_id, uint64_t(t.step)}, t.elem_offset);  // [note: stochastic rounding words on the CPU]
  const int64_t block = sr.block_len(begin, end);
  for (int64_t b = begin; b < end; b += block) {
    const int64_t e = std::min(end, b + block);
    sr_prefetch<kMode>(b, e, param, grad, mom);
    const auto words = sr.words(b, e);
    for (int64_t i = b; i < e; ++i) {
      const T g = load_grad<P, kScaled>(grad, i, scale);
      T m = T(storage<M>::load(mom, i));
      const T w_old = Access::load(param, aux, i);
      T w = w_old;
      step(w, m, g);
      Access::store_r(param, aux, i, w_old, w, words[i]);
      momentum_store<M>::run(mom, i, typename storage<M>::opmath(m));
    }
  }
  return 0.0;
}

// Tiger on an accumulation micro-step: the momentum only.
template <typename P, typename M, bool kScaled>
double tiger_momentum_loop(const StepCall& call, const StepTensor& t, int64_t begin, int64_t end) {
  using T = typename storage<P>::opmath;
  const TigerStep<T> step = make_tiger_step<T>(call.coef, tiger_is_first_micro_step(t.step, call.hyper.grad_accum_steps));
  const T scale = T(call.grad_scale);
  P* __restrict__ grad = static_cast<P*>(t.grad);
  M* __restrict__ mom = static_cast<M*>(t.exp_avg);
  for (int64_t i = begin; i < end; ++i) {
    const T g = load_grad<P, kScaled>(grad, i, scale);
    momentum_store<M>::run(mom, i, typename storage<M>::opmath(step.momentum(T(storage<M>::load(mom, i)), g)));
  }
  return 0.0;
}

// Tiger's update over [begin, end) with one step size; returns the sum of squares of the new
// working values ([note: carried sums]).
template <typename P, typename M, Precision kMode, bool kScaled, CautionUse kU>
double tiger_update_range(const StepCall& call, const StepTensor& t, int64_t begin, int64_t end, double eta64) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  const TigerStep<T, kU> step = make_tiger_step<T, kU>(
      call.coef, tiger_is_first_micro_step(t.step, call.hyper.grad_accum_steps), make_caution<T>(call.hyper, t.caution_scale));
  const T scale = T(call.grad_scale), eta = T(eta64);
  P* __restrict__ param = static_cast<P*>(t.param);
  P* __restrict__ grad = static_cast<P*>(t.grad);
  M* __restrict__ mom = static_cast<M*>(t.exp_avg);
  void* __restrict__ aux = t.aux;
  SrStream<kMode> sr(SrKey{call.hyper.seed, t.param_id, uint64_t(t.step)}, t.elem_offset);
  const auto prepare = [&](int64_t b, int64_t e) TC_INLINE_LAMBDA {
    sr_prefetch<kMode>(b, e, param, grad, mom);
    return sr.words(b, e);
  };
  return for_each_summing(begin, end, sr.block_len(begin, end), prepare, [&](int64_t i, const auto& words) TC_INLINE_LAMBDA -> T {
    const T g = load_grad<P, kScaled>(grad, i, scale);
    const T m = step.momentum(T(storage<M>::load(mom, i)), g);
    momentum_store<M>::run(mom, i, typename storage<M>::opmath(m));
    const T w_old = Access::load(param, aux, i);
    return Access::store_r(param, aux, i, w_old, step.param(w_old, m, g, eta), words[i]);
  });
}

// The guard fired: m is unchanged and theta shrinks toward the centre; a GradScaler gradient is
// still stored back unscaled, as on every other path. Returns the new sum of squares.
template <typename P, Precision kMode, bool kScaled>
double tiger_shrink_range(const StepCall& call, const StepTensor& t, int64_t begin, int64_t end) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  const TigerShrink<T> shrink = make_tiger_shrink<T>(call.coef);
  const T scale = T(call.grad_scale);
  P* __restrict__ param = static_cast<P*>(t.param);
  P* __restrict__ grad = static_cast<P*>(t.grad);
  void* __restrict__ aux = t.aux;
  SrStream<kMode> sr(SrKey{call.hyper.seed, t.param_id, uint64_t(t.step)}, t.elem_offset);
  const auto prepare = [&](int64_t b, int64_t e) TC_INLINE_LAMBDA {
    if constexpr (kScaled) sr_prefetch<kMode>(b, e, grad);
    sr_prefetch<kMode>(b, e, param);
    return sr.words(b, e);
  };
  return for_each_summing(begin, end, sr.block_len(begin, end), prepare, [&](int64_t i, const auto& words) TC_INLINE_LAMBDA -> T {
    if constexpr (kScaled) load_grad<P, true>(grad, i, scale);
    const T w_old = Access::load(param, aux, i);
    return Access::store_r(param, aux, i, w_old, shrink(w_old), words[i]);
  });
}

// Runs range(b, e, eta) over [begin, end): once (K, V), or row by row (E) writing each row's
// sum to row_sums[row]. Returns the total.
template <typename Range>
double by_rows(const StepTensor& t, int64_t begin, int64_t end, double* row_sums, Range&& range) {
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
double tiger_loop(const StepCall& call, const StepTensor& t, int64_t begin, int64_t end, double* row_sums) {
  if (t.shrink) {
    return by_rows(t, begin, end, row_sums, [&](int64_t b, int64_t e, double) {
      return tiger_shrink_range<P, kMode, kScaled>(call, t, b, e);
    });
  }
  if (!t.update) return tiger_momentum_loop<P, M, kScaled>(call, t, begin, end);
  return by_rows(t, begin, end, row_sums, [&](int64_t b, int64_t e, double eta) {
    return call.hyper.cautious ? tiger_update_range<P, M, kMode, kScaled, CautionUse::kOn>(call, t, b, e, eta)
                               : tiger_update_range<P, M, kMode, kScaled, CautionUse::kOff>(call, t, b, e, eta);
  });
}

inline double sign_step_q8(const StepCall& call, const StepTensor& t, int64_t b, int64_t e, double* row_sums);

inline double sign_step(const StepCall& call, const StepTensor& t, int64_t b, int64_t e, double* row_sums) {
  if (t.momentum_dtype == DType::kCode8) return sign_step_q8(call, t, b, e, row_sums);
  double result = 0.0;
  dispatch_key(kernel_key(t), [&](auto p, auto m, auto mode) {
    using P = decltype(p);
    using M = decltype(m);
    constexpr Precision kMode = decltype(mode)::value;
    if (call.hyper.algo == Algo::kLion) {
      auto lion = [&](auto scaled, auto use) {
        return lion_loop<P, M, kMode, decltype(scaled)::value, decltype(use)::value>(call, t, b, e);
      };
      using On = std::integral_constant<CautionUse, CautionUse::kOn>;
      using Off = std::integral_constant<CautionUse, CautionUse::kOff>;
      result = call.has_grad_scale ? (call.hyper.cautious ? lion(std::true_type{}, On{}) : lion(std::true_type{}, Off{}))
                                   : (call.hyper.cautious ? lion(std::false_type{}, On{}) : lion(std::false_type{}, Off{}));
    } else {
      result = call.has_grad_scale ? tiger_loop<P, M, kMode, true>(call, t, b, e, row_sums)
                                   : tiger_loop<P, M, kMode, false>(call, t, b, e, row_sums);
    }
  });
  return result;
}

// [note: 8-bit momentum on the CPU]
// [b, e) starts on a block boundary and ends on one or at the tensor's end (the launch layer's
// chunks are whole blocks), so this call owns its blocks. Their codes are decoded into a buffer of
// the op-math type, the ordinary loops run on that buffer as a float32 (float64) momentum, and the
// new values are re-encoded block by block: one pass over memory, the buffer stays in cache, and
// the element math (and Tiger's sums of squares) is exactly that of a float momentum. When the guard
// fired, m is unchanged: its codes are not touched.
template <typename T>
double sign_step_q8_as(const StepCall& call, const StepTensor& t, int64_t b, int64_t e, double* row_sums) {
  const bool touches_m = !(call.hyper.algo == Algo::kTiger && t.shrink);
  if (!touches_m || e <= b) {
    StepTensor s = t;
    s.momentum_dtype = sizeof(T) == 8 ? DType::kFloat64 : DType::kFloat32;
    s.exp_avg = nullptr;  // the shrink path never reads it
    return sign_step(call, s, b, e, row_sums);
  }
  thread_local std::vector<T> buf;
  buf.resize(size_t(e - b));
  const uint8_t* codes = static_cast<const uint8_t*>(t.exp_avg);
  float* absmax = t.absmax;
  for (int64_t blk = b; blk < e; blk += kQ8Block) {
    const int len = int(std::min<int64_t>(kQ8Block, e - blk));
    q8_decode_block<T>(codes + blk, absmax[blk / kQ8Block], len, buf.data() + (blk - b));
  }
  StepTensor s = t;
  s.momentum_dtype = sizeof(T) == 8 ? DType::kFloat64 : DType::kFloat32;
  // The loops index the momentum by the element index i in [b, e): element i is buf[i - b].
  s.exp_avg = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(buf.data()) - uintptr_t(b) * sizeof(T));
  const double result = sign_step(call, s, b, e, row_sums);
  uint8_t* out = static_cast<uint8_t*>(t.exp_avg);
  for (int64_t blk = b; blk < e; blk += kQ8Block) {
    const int len = int(std::min<int64_t>(kQ8Block, e - blk));
    const T* src = buf.data() + (blk - b);
    if constexpr (sizeof(T) == 4) {
      absmax[blk / kQ8Block] = q8_encode_block(src, len, out + blk);
    } else {
      float tmp[kQ8Block];
      for (int i = 0; i < len; ++i) tmp[i] = float(src[i]);  // float64 op-math: RNE to float32 (overflow -> Inf)
      absmax[blk / kQ8Block] = q8_encode_block(tmp, len, out + blk);
    }
  }
  return result;
}

inline double sign_step_q8(const StepCall& call, const StepTensor& t, int64_t b, int64_t e, double* row_sums) {
  return t.param_dtype == DType::kFloat64 ? sign_step_q8_as<double>(call, t, b, e, row_sums)
                                          : sign_step_q8_as<float>(call, t, b, e, row_sums);
}

// [note: cautious] The count pass: how many elements of [begin, end) keep their step, decided by
// the update's own functors (LionStep::keeps, TigerStep::keeps) on the unscaled gradient (not
// stored back here: the update does that) and the momentum as the update reads it (8-bit: decoded).
template <typename P, bool kScaled, typename LoadM>
int64_t caution_count_loop(const StepCall& call, const StepTensor& t, int64_t begin, int64_t end, LoadM&& load_m) {
  using T = typename storage<P>::opmath;
  const T scale = T(call.grad_scale);
  const Caution<T> caution = make_caution<T>(call.hyper, 1.0);
  const P* __restrict__ grad = static_cast<const P*>(t.grad);
  auto count = [&](const auto& step) {
    int64_t kept = 0;
    for (int64_t i = begin; i < end; ++i) {
      T g = storage<P>::load(grad, i);
      if constexpr (kScaled) g = g / scale;
      kept += step.keeps(load_m(i), g) ? 1 : 0;
    }
    return kept;
  };
  if (call.hyper.algo == Algo::kLion) return count(make_lion_step<T>(call.coef, T(0), caution));
  return count(make_tiger_step<T>(call.coef, tiger_is_first_micro_step(t.step, call.hyper.grad_accum_steps), caution));
}

inline int64_t caution_count(const StepCall& call, const StepTensor& t, int64_t b, int64_t e) {
  int64_t kept = 0;
  dispatch_dtype(t.param_dtype, [&](auto p_tag) {
    using P = decltype(p_tag);
    using T = typename storage<P>::opmath;
    auto run = [&](auto load_m) {
      kept = call.has_grad_scale ? caution_count_loop<P, true>(call, t, b, e, load_m)
                                 : caution_count_loop<P, false>(call, t, b, e, load_m);
    };
    if (t.momentum_dtype == DType::kCode8) {
      const uint8_t* codes = static_cast<const uint8_t*>(t.exp_avg);
      const float* absmax = t.absmax;
      run([=](int64_t i) { return T(q8_decode(codes[i], absmax[i / kQ8Block])); });
    } else {
      dispatch_dtype(t.momentum_dtype, [&](auto m_tag) {
        using M = decltype(m_tag);
        const M* mom = static_cast<const M*>(t.exp_avg);
        run([=](int64_t i) { return T(storage<M>::load(mom, i)); });
      });
    }
  });
  return kept;
}

template <typename S>
double sum_squares_loop(const S* __restrict__ p, int64_t begin, int64_t end) {
  return for_each_summing(begin, end, [&](int64_t i) { return storage<S>::load(p, i); });
}

inline double sum_squares(DType dtype, const void* data, int64_t b, int64_t e) {
  double result = 0.0;
  dispatch_dtype(dtype, [&](auto tag) { result = sum_squares_loop(static_cast<const decltype(tag)*>(data), b, e); });
  return result;
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

inline bool all_finite(DType dtype, const void* data, int64_t b, int64_t e, bool has_scale, double grad_scale) {
  bool result = true;
  dispatch_dtype(dtype, [&](auto tag) {
    using S = decltype(tag);
    const S* p = static_cast<const S*>(data);
    result = has_scale ? all_finite_loop<S, true>(p, b, e, grad_scale) : all_finite_loop<S, false>(p, b, e, grad_scale);
  });
  return result;
}

}  // namespace TC_ISA
}  // namespace cpu
}  // namespace tigercore
