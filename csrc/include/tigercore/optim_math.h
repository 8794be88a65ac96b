// optim_math.h — the per-element Lion and Tiger steps, written once for the CPU and CUDA kernels.
//   Lion:  c = fma(b1, m, (1-b1) g);  u = fma(wd, w, sign(c));  w' = fma(-eta, u, w);
//          m' = fma(b2, m, (1-b2) g)
//   Tiger: m' = fma(b1, m, b2 g);  u = fma(wd, w, sign(m'));  w' = fma(-eta, u, w)
//          on a non-finite gradient (guard): m' = m, w' = fma(w - c, s, c)
// Semantics: docs/semantics.md ("Lion", "Tiger", "Numerics"). Reference: tigercore/reference/optim.py.
#pragma once
#include <cmath>
#include "tigercore/philox.h"

namespace tigercore {

enum class Precision : int32_t { kNone = 0, kKahan = 1, kStochastic = 2, kMaster = 3 };

TC_FN float fma_op(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return __builtin_fmaf(a, b, c);  // a single vfmadd where the target has FMA
#endif
}
TC_FN double fma_op(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __fma_rn(a, b, c);
#else
  return __builtin_fma(a, b, c);
#endif
}

// [note: sign keeps NaN]
// sign(0) = 0 and sign(NaN) = NaN, exactly as torch.sign. The bare (x > 0) - (x < 0) idiom maps
// NaN to 0, which would hide a diverged momentum; it is forbidden (docs/semantics.md, "Signs").
// Written as selects so that compilers if-convert and vectorise it.
template <typename T>
TC_FN T sign_keep_nan(T x) {
  T s = (x > T(0)) ? T(1) : T(0);
  s = (x < T(0)) ? T(-1) : s;
  return (x != x) ? x : s;
}

// Coefficients of one call, rounded once from float64 to the op-math type on the host
// (docs/semantics.md, "Numerics").
template <typename T>
struct LionCoeffs {
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
};
template <typename T>
struct TigerCoeffs {
  T b1, b2;  // m' = fma(b1, m, b2 g): b1 = beta on a group's first micro-step, else 1
};

// [note: cautious]
// Cautious masking (cautious=True; docs/semantics.md, "Cautious masking") keeps the sign step u
// only where it agrees with this step's gradient, u g > 0 (g negated under maximize: `sign`), and
// scales what is kept by s = n / max(K, 0.001 n), K the number kept in the whole tensor (counted by
// a pass before the update, with caution_keep). Off: every element is kept with s = 1, so the
// direction is u * 1 = u and the bits are those of the plain step.
template <typename T>
struct Caution {
  T scale;   // s (1 when off)
  T sign;    // +1, or -1 under maximize
  bool all;  // off: keep every element
};
template <typename T>
TC_FN Caution<T> caution_off() { return Caution<T>{T(1), T(1), true}; }
template <typename T>
TC_FN bool caution_keep(T u, T g, T sign) { return (u * g) * sign > T(0); }  // u is 0 or +-1: exact
// Who decides whether the mask applies: the loop, at compile time (the CPU loops and the CUDA
// update kernels are instantiated plain, kOff, and cautious, kOn: the plain ones do no extra work
// per element, vectorise as before and keep their registers), or Caution::all at run time
// (kRuntime, the default for a functor built for one use). All three give the same values.
enum class CautionUse : int { kRuntime = 0, kOff = 1, kOn = 2 };
template <CautionUse kU, typename T>
TC_FN T cautious_direction(T u, T g, const Caution<T>& c) {
  if constexpr (kU == CautionUse::kOff) {
    return u;
  } else {
    const T masked = u * (caution_keep(u, g, c.sign) ? c.scale : T(0));  // a NaN u stays NaN
    if constexpr (kU == CautionUse::kOn) return masked;
    else return c.all ? u : masked;
  }
}

template <typename T>
TC_FN T lion_direction(T m, T g, const LionCoeffs<T>& k) { return sign_keep_nan(fma_op(k.beta1, m, k.one_minus_beta1 * g)); }

template <CautionUse kU = CautionUse::kRuntime, typename T>
TC_FN void lion_update(T& w, T& m, T g, const LionCoeffs<T>& k, T eta, T wd, const Caution<T>& c = caution_off<T>()) {
  const T u = fma_op(wd, w, cautious_direction<kU>(lion_direction(m, g, k), g, c));
  w = fma_op(-eta, u, w);
  m = fma_op(k.beta2, m, k.one_minus_beta2 * g);
}

template <typename T>
TC_FN void tiger_momentum(T& m, T g, const TigerCoeffs<T>& k) { m = fma_op(k.b1, m, k.b2 * g); }

// g: this micro-step's gradient, read only by cautious masking.
template <CautionUse kU = CautionUse::kRuntime, typename T>
TC_FN void tiger_param(T& w, T m, T eta, T wd, T g = T(0), const Caution<T>& c = caution_off<T>()) {
  const T u = fma_op(wd, w, cautious_direction<kU>(sign_keep_nan(m), g, c));
  w = fma_op(-eta, u, w);
}

// [note: Tiger shrink]  tiger.py's NaN branch: theta <- (theta - c) * s + c, one fma.
template <typename T>
TC_FN T tiger_shrink(T w, T centre, T ratio) { return fma_op(w - centre, ratio, centre); }

// ---- storing the updated parameter (docs/semantics.md, "Storage of bf16/fp16 parameters") -------------------------------------
// [note: precision modes]
// The update is always computed in fp32 (fp64 for fp64 params); the modes differ only in how the
// new value w' is stored into a bf16/fp16 parameter:
//   none:       theta = RNE(w')
//   kahan:      delta = w' - w (exact: w, w' are close fp32 values), y = delta + kappa,
//               s = w + y, theta = RNE(s), kappa = RNE(s - theta)        (kappa: `kahan_comp`)
//   stochastic: theta = SR(w') with the Philox word of [note: stochastic rounding stream]
//   master:     master = w', theta = RNE(w')                             (master: `master_param`)
// For fp32/fp64 parameters every mode is "none".
template <typename S> struct sr_store;
template <> struct sr_store<bfloat16_t> {
  TC_FN void run(bfloat16_t* p, int64_t i, float v, uint32_t r) { p[i].bits = float_to_bf16_stochastic(v, r); }
};
template <> struct sr_store<half_t> {
  TC_FN void run(half_t* p, int64_t i, float v, uint32_t r) { p[i].bits = float_to_fp16_stochastic(v, r); }
};
template <> struct sr_store<float> {
  TC_FN void run(float* p, int64_t i, float v, uint32_t) { p[i] = v; }
};
template <> struct sr_store<double> {
  TC_FN void run(double* p, int64_t i, double v, uint32_t) { p[i] = v; }
};

// [note: momentum storage]
// Momentum is stored with round-to-nearest in its dtype; fp16 momentum saturates at +-65504
// instead of overflowing: one large gradient would otherwise pin m at +-Inf for good (beta*Inf +
// anything finite is Inf), and Lion/Tiger would then step by sign(Inf) forever. NaN stays NaN.
// bf16 and fp32 share fp32's range, so they need no rule. Reference: _store_momentum.
TC_FN float saturate_fp16(float x) {
  x = x > 65504.0f ? 65504.0f : x;
  return x < -65504.0f ? -65504.0f : x;
}
template <typename M>
struct momentum_store {
  TC_FN void run(M* p, int64_t i, typename storage<M>::opmath v) { storage<M>::store(p, i, v); }
};
template <>
struct momentum_store<half_t> {
  TC_FN void run(half_t* p, int64_t i, float v) { storage<half_t>::store(p, i, saturate_fp16(v)); }
};

// Everything a loop needs to know about one tensor's stochastic-rounding stream.
struct SrKey {
  uint32_t seed;
  uint32_t param_id;
  uint64_t step;
};

template <Precision kMode, typename P>
struct ParamAccess {
  using T = typename storage<P>::opmath;
  // aux: kahan -> P* compensation, master -> float* master copy, otherwise unused.
  TC_FN T load(const P* param, const void* aux, int64_t i) {
    if constexpr (kMode == Precision::kMaster) return static_cast<const float*>(aux)[i];
    else return storage<P>::load(param, i);
  }
  // Stores w_new and returns the working value now held (what a later load() returns), from
  // which Tiger's RMS is taken: the master value, or the rounded parameter. `r` is the element's
  // stochastic-rounding word (used by kStochastic only).
  TC_FN T store_r(P* param, void* aux, int64_t i, T w_old, T w_new, uint32_t r) {
    if constexpr (kMode == Precision::kNone) {
      storage<P>::store(param, i, w_new);
      return storage<P>::load(param, i);
    } else if constexpr (kMode == Precision::kKahan) {
      P* comp = static_cast<P*>(aux);
      const T y = (w_new - w_old) + storage<P>::load(comp, i);
      const T s = w_old + y;
      storage<P>::store(param, i, s);
      const T kept = storage<P>::load(param, i);
      storage<P>::store(comp, i, s - kept);
      return kept;
    } else if constexpr (kMode == Precision::kStochastic) {
      sr_store<P>::run(param, i, w_new, r);
      return storage<P>::load(param, i);
    } else {  // master
      static_cast<float*>(aux)[i] = w_new;
      storage<P>::store(param, i, w_new);
      return w_new;
    }
  }
  // store_r() with the word of the element's flat offset `elem` (the stochastic-rounding counter),
  // given apart from its position i in param/aux: the CUDA kernels store into register arrays
  // (i = lane) and write them back with 16-byte stores.
  TC_FN T store_at(P* param, void* aux, int64_t i, uint64_t elem, T w_old, T w_new, const SrKey& key) {
    const uint32_t r = kMode == Precision::kStochastic
        ? sr_random_word(key.seed, key.param_id, key.step, elem) : 0u;
    return store_r(param, aux, i, w_old, w_new, r);
  }
  TC_FN T store(P* param, void* aux, int64_t i, T w_old, T w_new, const SrKey& key) {
    return store_at(param, aux, i, uint64_t(i), w_old, w_new, key);
  }
};

// Tiger's per-call schedule from the micro-step count t (docs/semantics.md, "Tiger"):
//   b1 = beta if t mod k == 0 else 1;  the parameter moves iff (t + 1) mod k == 0.
TC_FN bool tiger_is_first_micro_step(int64_t t, int64_t k) { return t % k == 0; }
TC_FN bool tiger_is_update_step(int64_t t, int64_t k) { return (t + 1) % k == 0; }

// Per-class step size eta from the pre-update RMS (docs/semantics.md, "Tiger"):
//   K/E: alpha * max(rms, floor) with rms = sqrt(sumsq / n) in fp64;  V: 0.5 * alpha.
// Computed in fp64 and rounded to the op-math type once.
TC_FN double tiger_eta_from_sumsq(double alpha, double sumsq, int64_t n, double rms_floor) {
  double rms = n > 0 ? sqrt(sumsq / double(n)) : 0.0;
  if (rms < rms_floor) rms = rms_floor;
  return alpha * rms;
}

}  // namespace tigercore
