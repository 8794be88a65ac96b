// sign_step_block.h — what one thread block of the multi-tensor CUDA step kernels does: the fused
// Lion update, the fused Tiger update (momentum, step or guard shrink), Tiger's stage-1 partial
// sums and flags (the per-thread part; the CUB reduction is in tiger_rms.cu), stage 2 (per-row step
// sizes, or tiger_stats' sums) and the step counters. The element steps are the functors of
// tigercore/step_desc.h, built from the host plan's coefficients exactly as the CPU loops build
// them. Host+device code: the kernels in csrc/cuda/ call these with (blockIdx.x, threadIdx.x,
// kBlockSize); csrc/tests/test_mta.cpp runs every block and thread on the CPU and compares with the
// CPU kernels bit for bit. Reference: tigercore/reference/optim.py.
#pragma once
#include "mta_plan.h"
#include "vec_access.h"

namespace tigercore {
namespace mta {

// [note: kernel scalars]
// What the kernels need besides the tensor list and the call (StepCall: hyperparameters and the
// coefficients derived once on the host, [note: coefficients]). Values that live on the device are
// read there, so that a step never synchronises and can be captured in a CUDA graph:
// GradScaler's found_inf (skip everything) and grad_scale (unscale; float32 tensors, as GradScaler
// makes them), the lr tensor when it is on the device ([note: tensor lr]; else StepCall::lr holds
// its value), each tensor's step counter (MtaTensor::step), and Tiger's workspace
// (WorkspaceLayout): stage-1 sums of squares per slot, per-row step sizes (stage 2's, or the
// caller's `eta`) and per-tensor guard flags (stage 1's, or the caller's `nonfinite`).
struct KernelScalars {
  const float* found_inf;
  const float* grad_scale;
  const double* lr;    // the lr tensor on the device, or nullptr
  double* slot_sums;
  double* eta_rows;    // row layout of the host plan (row0)
  int32_t* flags;
  double* stats_sums;  // tiger_stats: stage 2 writes each row's sum here (not a step size)
  unsigned long long* caution_kept;  // cautious: per tensor, the elements that keep their step
  double* caution_scales;            // cautious: per tensor, s = n / max(K, 0.001 n)
  bool reduce_sums, reduce_flags;  // what stage 1 computes (Stages)
};
static_assert(sizeof(MtaArgs) + sizeof(StepCall) + sizeof(KernelScalars) <= kMaxKernelArgBytes,
              "kernel arguments must stay under 4 KB");

// Points what the entry did not provide (a caller's eta or flags, tiger_stats' flags) at the
// call's workspace of ws.bytes() bytes at `base` (WorkspaceLayout); returns the flags the caller
// must zero before stage 1 (nullptr when they are the entry's own).
inline int32_t* use_workspace(const WorkspaceLayout& ws, unsigned char* base, KernelScalars& d) {
  d.slot_sums = reinterpret_cast<double*>(base);
  if (d.eta_rows == nullptr) d.eta_rows = reinterpret_cast<double*>(base + ws.eta_offset());
  if (ws.caution) {  // the caller zeroes the counts before the count stage
    d.caution_kept = reinterpret_cast<unsigned long long*>(base + ws.kept_offset());
    d.caution_scales = reinterpret_cast<double*>(base + ws.scales_offset());
  }
  if (d.flags != nullptr) return nullptr;
  d.flags = reinterpret_cast<int32_t*>(base + ws.flags_offset());
  return d.flags;
}

TC_FN double lr_of(const StepCall& call, const KernelScalars& d) { return d.lr != nullptr ? *d.lr : call.lr; }

// [note: no calls in the update kernels]
// A 64-bit integer division, a double division and the slow path of an fp32 division are
// subroutine calls on the GPU, and around a call ptxas saves registers to local memory. The
// update kernels therefore make none: the chunk geometry divides in 32 bits (span_of), Tiger's
// phase t mod k uses divides(), (1-beta)/k comes from the host (Coefficients), and GradScaler's
// unscale multiplies by a reciprocal ([note: exact unscale]).
TC_FN bool divides(int64_t k, int64_t t) {  // k >= 1: t % k == 0
  const uint64_t a = t < 0 ? uint64_t(0) - uint64_t(t) : uint64_t(t);
  return divmod_u64(a, uint64_t(k)).r == 0;
}
// tiger_is_first_micro_step / tiger_is_update_step of optim_math.h, without the division.
TC_FN bool tiger_first(int64_t t, int64_t k) { return divides(k, t); }
TC_FN bool tiger_moves(int64_t t, int64_t k) { return divides(k, t + 1); }

TC_FN bool step_skipped(const KernelScalars& d) { return d.found_inf != nullptr && *d.found_inf != 0.0f; }

template <typename P, Precision kMode> struct aux_of { using type = P; };  // kahan_comp, or unused
template <typename P> struct aux_of<P, Precision::kMaster> { using type = float; };
template <Precision kMode> constexpr bool has_aux() { return kMode == Precision::kKahan || kMode == Precision::kMaster; }

// The arrays a loop touches (read and written back), as a bit set.
enum Touch : unsigned { kGrad = 1, kMom = 2, kParamIn = 4, kParamOut = 8, kAuxIO = 16 };

// Arrays touched when the parameter is updated in mode kMode: the master copy replaces the
// parameter as input; kahan_comp and master_param are read and written.
template <Precision kMode> constexpr unsigned param_touch() {
  return kParamOut | (kMode == Precision::kMaster ? 0u : unsigned(kParamIn)) | (has_aux<kMode>() ? unsigned(kAuxIO) : 0u);
}

// [note: exact unscale]
// GradScaler's unscale g / s (stored back into the gradient, [note: GradScaler]) must be the
// correctly rounded quotient, as on the CPU; but a division's slow path is a subroutine call on the
// GPU and ptxas spills around calls. So the kernels divide without dividing:
//  - y = RN(1/s) in fp64: a hardware seed (host: fp32) refined by Newton steps y += y (1 - s y);
//    once y is within an ulp, the same step gives RN(1/s) (Markstein), as 1 - s y is exact: s is an
//    fp32 value, 24 significant bits. Four steps suffice from any seed with 8 correct bits;
//  - fp32 g: RN_f(RN_d(g y)) = RN_f(g / s). RN_d(g y) is within 2^-52 (relative) of g / s, and a
//    quotient of two fp32 numbers is either an fp32 midpoint (then s is a power of two, y and g y
//    are exact, and RN_f breaks the tie correctly) or at least 2^-49 away from one, except an
//    exact tie between two fp32 subnormals, which is detected exactly (an fma) and broken to even;
//  - fp64 g: q = RN(g y), q' = RN(q + RN(g - q s) y) with g - q s exact (an fma): Markstein's
//    theorem makes q' = RN(g / s) (not for quotients below 2^-1022, far below any gradient).
// csrc/tests/test_mta.cpp compares both with real division over all exponents.
TC_FN double reciprocal_from_seed(double s, double y) {
  for (int k = 0; k < 4; ++k) y = fma_op(y, fma_op(-s, y, 1.0), y);
  return y;
}
TC_FN double reciprocal_rn(float s) {
  const double sd = double(s);
  if (s != s) return sd;
  if (s == 0.0f) return float_as_bits(s) >> 31 ? -INFINITY : INFINITY;
  if (!is_finite_bits(s)) return float_as_bits(s) >> 31 ? -0.0 : 0.0;
#if defined(__CUDA_ARCH__)
  double seed;
  asm("rcp.approx.ftz.f64 %0, %1;" : "=d"(seed) : "d"(sd));
#else
  int e = 0;
  const float m = float(std::frexp(sd, &e));  // sd = m 2^e: an fp32 reciprocal of m cannot overflow
  const double seed = std::ldexp(double(1.0f / m), -e);
#endif
  return reciprocal_from_seed(sd, seed);
}

TC_FN float div_by(float g, float s, double y) {
  const double q = double(g) * y;
  float r = float(q);
  const double aq = q < 0 ? -q : q;
  if (aq < 0x1p-126 && aq != 0.0) {  // between fp32 subnormals j 2^-149 and (j+1) 2^-149
    const double j = floor(aq * 0x1p149);
    const double mid = (2.0 * j + 1.0) * 0x1p-150;
    const double ag = g < 0 ? -double(g) : double(g), as = s < 0 ? -double(s) : double(s);
    if (fma_op(-mid, as, ag) == 0.0) {  // |g / s| is exactly the midpoint: ties to even
      const double even = (int64_t(j) & 1) == 0 ? j : j + 1.0;
      r = float(q < 0 ? -even * 0x1p-149 : even * 0x1p-149);
    }
  }
  return r;
}
TC_FN double div_by(double g, double s, double y) {
  const double q = g * y;
  if (q == 0.0 || !is_finite_bits(q)) return q;  // zeros keep their sign; Inf/NaN as g / s
  return fma_op(fma_op(-q, s, g), y, q);
}

// Loads g (op-math type); with a grad_scale, unscales it and stores it back ([note: exact unscale]).
// Built at the top of each loop from the device value; `scaled` is only the pointer test, which
// ptxas re-reads from the kernel parameters (it spilled a computed flag that lived across loops).
template <typename T>
struct GradIn {
  const float* scale_ptr;
  T scale;
  double inv;
  TC_HOST_DEVICE explicit GradIn(const float* grad_scale)
      : scale_ptr(grad_scale), scale(grad_scale ? T(*grad_scale) : T(1)), inv(grad_scale ? reciprocal_rn(*grad_scale) : 1.0) {}
  TC_HOST_DEVICE bool scaled() const { return scale_ptr != nullptr; }
  TC_HOST_DEVICE T unscale(T g) const { return div_by(g, scale, inv); }
  template <typename P>
  TC_HOST_DEVICE T operator()(P* grad, int32_t i) const {
    T g = storage<P>::load(grad, i);
    if (scaled()) {
      g = unscale(g);
      storage<P>::store(grad, i, g);
    }
    return g;
  }
};

// kN gradients from a 16-byte-aligned vector into g (op-math); with a grad_scale they are unscaled
// and stored back ([note: exact unscale]).
template <int kN, typename T, typename P>
TC_FN void load_grads(const GradIn<T>& grad_in, P* grad, T (&g)[kN]) {
  P rg[kN];
  load_vec(grad, rg);
  TC_UNROLL
  for (int k = 0; k < kN; ++k) g[k] = grad_in(rg, k);
  if (grad_in.scaled()) store_vec(grad, rg);
}

// [note: chunk loop]
// body(param, mom, aux, i, local, g) performs the step of the chunk's element `local`, held at
// index i of the param/mom/aux arrays, with its (unscaled) gradient g. Aligned chunks ([note:
// vector path]) load kVec elements of every touched array into registers with 16-byte loads, run
// the body on them (i = 0..kVec-1) and store them back; the rest of the chunk, and unaligned chunks
// entirely, run the body on the arrays in memory (i = local). Consecutive threads take consecutive
// vectors (or elements), so every access is coalesced. The gradient is unscaled and stored back
// first ([note: exact unscale]).
template <unsigned kTouch, int kVec, typename T, typename P, typename M, typename A, typename Body>
TC_FN void chunk_loop(const float* grad_scale, P* param, P* grad, M* mom, A* aux, int32_t len, bool aligned,
                      int tid, int nthreads, Body&& body) {
  const GradIn<T> grad_in(grad_scale);
  int32_t first_scalar = 0;
  if (aligned) {
    const int32_t n_vec = len - len % kVec;
    for (int32_t v = tid * kVec; v < n_vec; v += nthreads * kVec) {
      P rp[kVec];
      M rm[kVec];
      A ra[kVec];
      T g[kVec] = {};  // stays 0 where the gradient is not touched (the guard's shrink)
      if constexpr ((kTouch & kGrad) != 0) load_grads(grad_in, grad + v, g);
      if constexpr ((kTouch & kMom) != 0) load_vec(mom + v, rm);
      if constexpr ((kTouch & kParamIn) != 0) load_vec(param + v, rp);
      if constexpr ((kTouch & kAuxIO) != 0) load_vec(aux + v, ra);
      TC_UNROLL
      for (int k = 0; k < kVec; ++k) body(rp, rm, ra, k, v + k, g[k]);
      if constexpr ((kTouch & kMom) != 0) store_vec(mom + v, rm);
      if constexpr ((kTouch & kParamOut) != 0) store_vec(param + v, rp);
      if constexpr ((kTouch & kAuxIO) != 0) store_vec(aux + v, ra);
    }
    first_scalar = n_vec;
  }
  for (int32_t i = first_scalar + tid; i < len; i += nthreads)
    body(param, mom, aux, i, i, (kTouch & kGrad) != 0 ? grad_in(grad, i) : T(0));
}

// [note: 8-bit momentum on CUDA] (the chunking: mta_plan.h)
// A warp re-encodes one quantisation block of kQ8Block = 256 elements at a time, each lane holding
// 8 consecutive elements in registers (one 8-byte load of codes, 16-byte loads of the rest): decode
// with the old absmax, run the step's element body (the same functors as every other path, with an
// op-math momentum), write the parameter, round the new momentum to float32, take the block's
// absmax as an integer max over the lanes (a shuffle butterfly: order-free, so exact), encode, and
// lane 0 writes the absmax. Element for element this is the CPU's decode / float-momentum step /
// q8_encode_block ([note: 8-bit momentum on the CPU]); the quotient |m| / absmax is divided
// without a division instruction, as the unscale ([note: exact unscale]). On the host
// (csrc/tests/test_mta.cpp runs the block code on the CPU) the call of a warp's first thread runs
// all 32 lanes, so that the max needs no communication between calls.
constexpr int kQ8LaneElems = kQ8Block / 32;  // 8

TC_FN uint32_t warp_max(uint32_t v) {
#if defined(__CUDA_ARCH__)
  TC_UNROLL
  for (int o = 16; o > 0; o >>= 1) {
    const uint32_t w = __shfl_xor_sync(0xFFFFFFFFu, v, o);
    v = v > w ? v : w;
  }
#endif
  return v;
}

// The code of x in a block whose absmax has bits amax and reciprocal inv = RN(1/absmax) in fp64:
// q8_encode_block's code, bit for bit.
TC_FN uint8_t q8_code(float x, uint32_t amax, double inv) {
  if (amax == 0u) return q8_code_without_scale(x);
  const uint32_t xb = float_as_bits(x);
  return q8_code_of_quotient(xb, div_by(q8_magnitude_of(xb), bits_as_float(amax), inv));
}

template <unsigned kTouch, typename T, typename P, typename A, typename Body>
TC_FN void q8_chunk_loop(const float* grad_scale, P* param, P* grad, uint8_t* codes, float* absmax, A* aux,
                         int32_t len, bool aligned, int tid, int nthreads, Body&& body) {
  constexpr int kN = kQ8LaneElems;
#if defined(__CUDA_ARCH__)
  constexpr int kLanes = 1;  // this thread is one lane
#else
  constexpr int kLanes = 32;  // this call runs the whole warp
  if (tid % 32 != 0) return;
#endif
  const GradIn<T> grad_in(grad_scale);
  const int warp = tid / 32, lane0 = tid % 32, warps = nthreads / 32;
  const int32_t blocks = (len + kQ8Block - 1) / kQ8Block;
  for (int32_t q = warp; q < blocks; q += warps) {
    const float a_old = absmax[q];
    float m_new[kLanes][kN];
    uint32_t amax = 0;
    for (int l = 0; l < kLanes; ++l) {
      const int32_t base = q * kQ8Block + (lane0 + l) * kN;
      const int32_t rest = len - base;
      const int32_t cnt = rest < 0 ? 0 : rest < kN ? rest : kN;
      const bool vec = aligned && cnt == kN;
      P rp[kN];
      A ra[kN];
      T rm[kN];
      T g[kN] = {};
      uint8_t c[kN] = {};
      if (vec) {
        if constexpr ((kTouch & kGrad) != 0) load_grads(grad_in, grad + base, g);
        load_codes8(codes + base, c);
        if constexpr ((kTouch & kParamIn) != 0) load_vec(param + base, rp);
        if constexpr ((kTouch & kAuxIO) != 0) load_vec(aux + base, ra);
      } else {  // unrolled and predicated: the register arrays are only indexed by constants
        TC_UNROLL
        for (int k = 0; k < kN; ++k) {
          if (k >= cnt) continue;
          if constexpr ((kTouch & kGrad) != 0) g[k] = grad_in(grad + base, k);
          c[k] = codes[base + k];
          if constexpr ((kTouch & kParamIn) != 0) rp[k] = param[base + k];
          if constexpr ((kTouch & kAuxIO) != 0) ra[k] = aux[base + k];
        }
      }
      TC_UNROLL
      for (int k = 0; k < kN; ++k) rm[k] = T(q8_decode(c[k], a_old));
      TC_UNROLL
      for (int k = 0; k < kN; ++k)
        if (k < cnt) body(rp, rm, ra, k, base + k, g[k]);
      if (vec) {
        if constexpr ((kTouch & kParamOut) != 0) store_vec(param + base, rp);
        if constexpr ((kTouch & kAuxIO) != 0) store_vec(aux + base, ra);
      } else {
        TC_UNROLL
        for (int k = 0; k < kN; ++k) {
          if (k >= cnt) continue;
          if constexpr ((kTouch & kParamOut) != 0) param[base + k] = rp[k];
          if constexpr ((kTouch & kAuxIO) != 0) aux[base + k] = ra[k];
        }
      }
      TC_UNROLL
      for (int k = 0; k < kN; ++k) m_new[l][k] = k < cnt ? float(rm[k]) : 0.0f;  // fp64 op-math: RNE to fp32
      const uint32_t a = q8_absmax_bits(m_new[l], kN);
      amax = amax > a ? amax : a;
    }
    amax = warp_max(amax);
    const double inv = amax != 0u ? reciprocal_rn(bits_as_float(amax)) : 0.0;
    for (int l = 0; l < kLanes; ++l) {
      const int32_t base = q * kQ8Block + (lane0 + l) * kN;
      const int32_t rest = len - base;
      const int32_t cnt = rest < 0 ? 0 : rest < kN ? rest : kN;
      uint8_t c[kN];
      TC_UNROLL
      for (int k = 0; k < kN; ++k) c[k] = q8_code(m_new[l][k], amax, inv);
      if (aligned && cnt == kN) {
        store_codes8(codes + base, c);
      } else {
        TC_UNROLL
        for (int k = 0; k < kN; ++k)
          if (k < cnt) codes[base + k] = c[k];
      }
    }
    if (lane0 == 0) absmax[q] = bits_as_float(amax);
  }
}

// One block's chunk, typed: its arrays (offset to the chunk's first element), geometry, step and
// stochastic-rounding key, and its loops ([note: chunk loop]). M = code8_t: 8-bit momentum, flat
// chunks and q8_chunk_loop ([note: 8-bit momentum on CUDA]); the element bodies then see the
// momentum as MR = the op-math type.
template <typename P, typename M, Precision kMode>
struct Block {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  using A = typename aux_of<P, kMode>::type;
  static constexpr bool kQ8 = std::is_same<M, code8_t>::value;
  using MR = std::conditional_t<kQ8, T, M>;        // the momentum as the element bodies see it
  using MS = std::conditional_t<kQ8, uint8_t, M>;  // its storage
  static constexpr int kVec = vec_width<P, std::conditional_t<kQ8, P, M>>();
  static constexpr unsigned kUpdate = kGrad | kMom | param_touch<kMode>();
  const MtaTensor& t;
  Span s;
  bool aligned;
  int64_t step;
  SrKey key;
  P* param;
  P* grad;
  MS* mom;
  A* aux;         // kahan_comp / master_param (non-null: checked by the host plan), else nullptr
  float* absmax;  // 8-bit momentum: the absmax of the chunk's first block
  TC_HOST_DEVICE Block(const MtaArgs& a, const StepCall& call, int64_t block)
      : Block(a, call, locate_block(a, block)) {}
  TC_HOST_DEVICE Block(const MtaArgs& a, const StepCall& call, BlockLoc loc)
      : t(a.t[loc.tensor]),
        s(kQ8 ? flat_span(t.numel, t.row_len, loc.chunk) : span_of(t.numel, t.row_len, loc.chunk)),
        aligned(chunk_is_aligned(t, s.start, kVec)),
        step(*t.step),
        key{call.hyper.seed, t.param_id, uint64_t(step)},
        param(static_cast<P*>(t.ptr[0]) + s.start),
        grad(static_cast<P*>(t.ptr[1]) + s.start),
        mom(static_cast<MS*>(t.ptr[2]) + s.start),
        aux(has_aux<kMode>() ? static_cast<A*>(t.ptr[3]) + s.start : nullptr),
        absmax(kQ8 ? t.absmax + s.start / kQ8Block : nullptr) {}
  template <unsigned kTouch, typename Body>
  TC_HOST_DEVICE void loop(const float* grad_scale, int tid, int nthreads, Body&& body) const {
    if constexpr (kQ8 && (kTouch & kMom) != 0) {
      q8_chunk_loop<kTouch, T>(grad_scale, param, grad, mom, absmax, aux, s.len, aligned, tid, nthreads, body);
    } else if constexpr (kQ8) {  // the guard's shrink: no momentum
      chunk_loop<kTouch, kVec, T>(grad_scale, param, grad, static_cast<MR*>(nullptr), aux, s.len, aligned, tid,
                                  nthreads, body);
    } else {
      chunk_loop<kTouch, kVec, T>(grad_scale, param, grad, mom, aux, s.len, aligned, tid, nthreads, body);
    }
  }
  // Stores w_new per [note: precision modes]; the stochastic-rounding counter is the flat offset
  // in the logical tensor (a shard's elem_offset plus the offset in the shard).
  TC_HOST_DEVICE void store(P* p, A* x, int32_t i, int32_t local, T w_old, T w_new) const {
    Access::store_at(p, x, i, uint64_t(t.elem_offset + s.start + local), w_old, w_new, key);
  }
};

// ---- cautious masking ([note: cautious]) --------------------------------------------------------
// The update kernels are instantiated plain (kOff) and cautious (kOn), so the mask costs the plain
// kernels no registers; a cautious one reads its tensor's scale as the count stage left it.
template <typename T, CautionUse kU>
TC_FN Caution<T> caution_of(const StepCall& call, const KernelScalars& d, const MtaTensor& t) {
  if constexpr (kU == CautionUse::kOn) return make_caution<T>(call.hyper, d.caution_scales[t.ordinal]);
  else return caution_off<T>();
}

// Does this tensor move on this call (Lion: always; Tiger: on the last micro-step of a window)?
TC_FN bool moves(const StepCall& call, const MtaTensor& t) {
  return call.hyper.algo == Algo::kLion || tiger_moves(*t.step, call.hyper.grad_accum_steps);
}

// Thread tid's part of the count stage for the chunk of `block` (a launch of the update's plan):
// how many of its elements keep their step, with the update's functors on the unscaled gradient
// (not stored back: the update does it) and the momentum as the update reads it (8-bit: decoded).
// caution.cu adds the parts of a block and then the blocks of a tensor (integers: exact).
template <typename P, typename M>
TC_FN uint64_t caution_count_part(const MtaArgs& a, const StepCall& call, const KernelScalars& d, int64_t block,
                                  int tid, int nthreads) {
  using B = Block<P, M, Precision::kNone>;
  using T = typename B::T;
  const B b(a, call, block);
  if (!moves(call, b.t)) return 0;
  const GradIn<T> grad_in(d.grad_scale);
  const Caution<T> caution = make_caution<T>(call.hyper, 1.0);
  auto load_m = [&](int32_t i) -> T {
    if constexpr (B::kQ8) return T(q8_decode(b.mom[i], b.absmax[uint32_t(i) / uint32_t(kQ8Block)]));
    else return T(storage<M>::load(b.mom, i));
  };
  auto count = [&](const auto& step) {
    uint64_t kept = 0;
    for (int32_t i = tid; i < b.s.len; i += nthreads) {
      const T g0 = storage<P>::load(b.grad, i);
      const T g = grad_in.scaled() ? grad_in.unscale(g0) : g0;
      kept += step.keeps(load_m(i), g) ? 1u : 0u;
    }
    return kept;
  };
  if (call.hyper.algo == Algo::kLion) return count(make_lion_step<T>(call.coef, T(0), caution));
  return count(make_tiger_step<T>(call.coef, tiger_first(b.step, call.hyper.grad_accum_steps), caution));
}

// The scales of a launch's tensors: thread tid takes tensors tid, tid + nthreads, ...
TC_FN void caution_scales_part(const MtaArgs& a, const KernelScalars& d, int tid, int nthreads) {
  for (int32_t j = tid; j < a.n; j += nthreads) {
    const MtaTensor& t = a.t[j];
    d.caution_scales[t.ordinal] = caution_scale_of(t.numel, int64_t(d.caution_kept[t.ordinal]));
  }
}

// ---- Lion ---------------------------------------------------------------------------------------
template <typename P, typename M, Precision kMode, CautionUse kU>
TC_FN void lion_block(const MtaArgs& a, const StepCall& call, const KernelScalars& d, int64_t block,
                      int tid, int nthreads) {
  if (step_skipped(d)) return;
  using B = Block<P, M, kMode>;
  using T = typename B::T;
  using A = typename B::A;
  const B b(a, call, block);
  using MR = typename B::MR;
  const LionStep<T, kU> step = make_lion_step<T, kU>(call.coef, T(lr_of(call, d)), caution_of<T, kU>(call, d, b.t));
  b.template loop<B::kUpdate>(d.grad_scale, tid, nthreads, [&](P* param, MR* mom, A* aux, int32_t i, int32_t local, T g) {
    T m = T(storage<MR>::load(mom, i));
    const T w_old = B::Access::load(param, aux, i);
    T w = w_old;
    step(w, m, g);
    b.store(param, aux, i, local, w_old, w);
    momentum_store<MR>::run(mom, i, typename storage<MR>::opmath(m));
  });
}

// ---- Tiger ------------------------------------------------------------------------------------
// One block of Tiger's update: on a fired guard only the shrink θ <- (θ - c)·s + c; on an
// accumulation micro-step only the momentum; otherwise momentum and parameter, with the step size
// of the tensor (K: eta_rows[row0], V: 0.5·lr) or of each row (E: eta_rows[row0 + row]).
template <typename P, typename M, Precision kMode, CautionUse kU>
TC_FN void tiger_block(const MtaArgs& a, const StepCall& call, const KernelScalars& d, int64_t block,
                       int tid, int nthreads) {
  if (step_skipped(d)) return;
  using B = Block<P, M, kMode>;
  using T = typename B::T;
  using A = typename B::A;
  using MR = typename B::MR;
  const B b(a, call, block);
  if (call.hyper.nonfinite_guard && d.flags[b.t.ordinal] != 0) {  // a scaled gradient is still stored unscaled
    const TigerShrink<T> shrink = make_tiger_shrink<T>(call.coef);
    b.template loop<param_touch<kMode>() | kGrad>(d.grad_scale, tid, nthreads, [&](P* param, MR*, A* aux, int32_t i, int32_t local, T) {
      const T w_old = B::Access::load(param, aux, i);
      b.store(param, aux, i, local, w_old, shrink(w_old));
    });
    return;
  }
  const TigerStep<T, kU> step = make_tiger_step<T, kU>(call.coef, tiger_first(b.step, call.hyper.grad_accum_steps),
                                                       caution_of<T, kU>(call, d, b.t));
  auto momentum = [&](MR* mom, int32_t i, T g) -> T {
    const T m = step.momentum(T(storage<MR>::load(mom, i)), g);
    momentum_store<MR>::run(mom, i, typename storage<MR>::opmath(m));
    return m;
  };
  if (!tiger_moves(b.step, call.hyper.grad_accum_steps)) {
    b.template loop<kGrad | kMom>(d.grad_scale, tid, nthreads,
                                  [&](P*, MR* mom, A*, int32_t i, int32_t, T g) { momentum(mom, i, g); });
    return;
  }
  auto update = [&](P* param, MR* mom, A* aux, int32_t i, int32_t local, T g, T eta) {
    const T m = momentum(mom, i, g);
    const T w_old = B::Access::load(param, aux, i);
    b.store(param, aux, i, local, w_old, step.param(w_old, m, g, eta));
  };
  if (call.hyper.tiger_class == TigerClass::kE) {
    // element `local` of the chunk is in row s.row + (s.lead + local) / s.rlen (lead: flat_span)
    const double* eta_rows = d.eta_rows + b.t.row0 + b.s.row;
    const uint32_t rlen = uint32_t(b.s.rlen), lead = uint32_t(b.s.lead);
    b.template loop<B::kUpdate>(d.grad_scale, tid, nthreads, [&](P* param, MR* mom, A* aux, int32_t i, int32_t local, T g) {
      update(param, mom, aux, i, local, g, T(eta_rows[(lead + uint32_t(local)) / rlen]));
    });
  } else {
    const T eta = call.hyper.tiger_class == TigerClass::kK ? T(d.eta_rows[b.t.row0]) : T(0.5 * lr_of(call, d));
    b.template loop<B::kUpdate>(d.grad_scale, tid, nthreads, [&](P* param, MR* mom, A* aux, int32_t i, int32_t local, T g) {
      update(param, mom, aux, i, local, g, eta);
    });
  }
}

// ---- Tiger stage 1 (tiger_rms.cu; the reduction across threads is CUB's) ------------------------
// What block `block` of a stage-1 launch computes: the chunk's slot sums when its tensor moves on
// this micro-step (tiger_stats: always) and stage 1 sums at all, and its guard flag.
struct ReduceJob {
  const MtaTensor* t;
  Span s;
  bool want_sum, want_flag;
};
TC_FN ReduceJob reduce_job(const MtaArgs& a, const StepCall& call, const KernelScalars& d, int64_t block) {
  const BlockLoc loc = locate_block(a, block);
  const MtaTensor& t = a.t[loc.tensor];
  const bool moves = d.stats_sums != nullptr || tiger_moves(*t.step, call.hyper.grad_accum_steps);
  return ReduceJob{&t, span_of(t.numel, t.row_len, loc.chunk), d.reduce_sums && moves, d.reduce_flags};
}

// One thread's part of a slot-row: the sum of squares of the working copy S (the parameter, or the
// master copy), and "some unscaled gradient is not finite" (unscaled exactly as the update does,
// [note: exact unscale]). Elements begin, begin + stride, ... < end, offsets into the chunk.
template <typename S, typename P>
struct SlotPart {
  using G = typename storage<P>::opmath;
  const S* src;   // the chunk's working copy
  const P* grad;  // the chunk's gradient
  bool want_sum, want_flag;
  template <bool kSum, bool kFlag>
  TC_HOST_DEVICE void add_as(int32_t begin, int32_t end, int32_t stride, const GradIn<G>& unscale, double& sumsq,
                             bool& bad) const {
    for (int32_t i = begin; i < end; i += stride) {
      if constexpr (kSum) {
        const double x = double(storage<S>::load(src, i));
        sumsq += x * x;
      }
      if constexpr (kFlag) {
        const G g = storage<P>::load(grad, i);
        bad |= !is_finite_bits(unscale.scaled() ? unscale.unscale(g) : g);
      }
    }
  }
  TC_HOST_DEVICE void add(int32_t begin, int32_t end, int32_t stride, const float* grad_scale, double& sumsq,
                          bool& bad) const {
    const GradIn<G> unscale(grad_scale);
    if (want_sum && want_flag) add_as<true, true>(begin, end, stride, unscale, sumsq, bad);
    else if (want_sum) add_as<true, false>(begin, end, stride, unscale, sumsq, bad);
    else if (want_flag) add_as<false, true>(begin, end, stride, unscale, sumsq, bad);
  }
};

template <typename S, typename P>
TC_FN SlotPart<S, P> slot_part(const ReduceJob& job, bool master) {
  const MtaTensor& t = *job.t;
  return SlotPart<S, P>{static_cast<const S*>(t.ptr[master ? 3 : 0]) + job.s.start,
                        static_cast<const P*>(t.ptr[1]) + job.s.start, job.want_sum, job.want_flag};
}

// ---- Tiger stage 2 ------------------------------------------------------------------------------
// Does this Tiger tensor move on this micro-step (needs its step size)?
TC_FN bool tiger_needs_eta(const StepCall& call, const KernelScalars& d, const MtaTensor& t) {
  return tiger_moves(*t.step, call.hyper.grad_accum_steps) && !(call.hyper.nonfinite_guard && d.flags[t.ordinal] != 0);
}

// One thread per row adds the row's slot sums in piece order and stores the row's step size
// lr·max(RMS, floor) (tiger_eta_from_sumsq, as the CPU), or for tiger_stats the sum itself.
// Blocks: row_blocks().
TC_FN void tiger_rows_block(const MtaArgs& a, const StepCall& call, const KernelScalars& d, int64_t block, int tid,
                            int nthreads) {
  if (step_skipped(d)) return;
  const BlockLoc loc = locate_block(a, block);
  const MtaTensor& t = a.t[loc.tensor];
  const Grid g = grid_of(t.numel, t.row_len);
  const int64_t row = int64_t(loc.chunk) * nthreads + tid;
  const bool stats = d.stats_sums != nullptr;
  if (row >= g.rows || !(stats || tiger_needs_eta(call, d, t))) return;
  const double* sums = d.slot_sums + t.slot0 + row * g.pieces;
  double s = 0.0;
  for (int64_t p = 0; p < g.pieces; ++p) s += sums[p];
  if (stats) d.stats_sums[t.row0 + row] = s;
  else d.eta_rows[t.row0 + row] = tiger_eta_from_sumsq(lr_of(call, d), s, t.row_len, call.hyper.rms_floor);
}

// ---- the end of a step: counters and carried sums ------------------------------------------------
// Thread tid of tensor j's block: step += 1 unless GradScaler found an inf; the tensor's carried
// sums of squares (Tiger K/E) become unknown (-1) in any case ([note: Tiger RMS on CUDA]).
TC_FN void finish_tensor(const CounterArgs& a, const float* found_inf, int32_t j, int tid, int nthreads) {
  if (tid == 0 && (found_inf == nullptr || *found_inf == 0.0f)) *a.step[j] += 1;
  double* sums = a.sums[j];
  if (sums != nullptr)
    for (int64_t r = tid; r < a.rows[j]; r += nthreads) sums[r] = -1.0;
}

}  // namespace mta
}  // namespace tigercore
