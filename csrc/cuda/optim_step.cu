// optim_step.cu — CUDA entry points of tigercore::lion_step_ and tigercore::tiger_step_.
// A first, simple launch layer: one element-wise kernel per tensor (grid-stride, 64-bit index),
// Tiger's per-tensor / per-row sum of squares as a deterministic two-stage CUB block reduction,
// the non-finite guard as an integer OR. All element math is tigercore/optim_math.h, shared with
// the CPU kernels; GradScaler's found_inf and grad_scale and the step counter are read on the
// device, so a step never synchronises with the host. Reference: tigercore/reference/optim.py.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>

#include <vector>

#include "../step_common.h"

namespace tigercore {
namespace cuda {
namespace {

constexpr int kBlockSize = 256;
constexpr int64_t kSegment = int64_t(1) << 16;  // elements per reduction block of a K tensor

// Everything a kernel reads from device memory instead of the host.
struct DeviceFlags {
  const int64_t* step;        // state['step'] on entry
  const float* found_inf;     // nullptr, or GradScaler's flag
  const float* grad_scale;    // nullptr, or GradScaler's scale
  const int* nonfinite;       // Tiger guard flag of this tensor, or nullptr
  const double* row_sumsq;    // Tiger K: [1], E: [rows] sums of squares, or nullptr
};

int grid_for(int64_t n) {
  const int64_t blocks = (n + kBlockSize - 1) / kBlockSize;
  return int(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535)));
}

template <typename P, typename M, Precision kMode>
__global__ void lion_kernel(SignStepCall call, SignStepTensor t, DeviceFlags f) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  if (f.found_inf != nullptr && *f.found_inf != 0.0f) return;
  const LionCoeffs<T> k{T(call.beta1), T(1.0 - call.beta1), T(call.beta2), T(1.0 - call.beta2)};
  const T eta = T(call.lr), wd = T(call.weight_decay);
  const bool scaled = f.grad_scale != nullptr;
  const T scale = scaled ? T(*f.grad_scale) : T(1);
  const SrKey key{call.seed, t.param_id, uint64_t(*f.step)};
  P* param = static_cast<P*>(t.param);
  P* grad = static_cast<P*>(t.grad);
  M* mom = static_cast<M*>(t.exp_avg);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < t.numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    T g = storage<P>::load(grad, i);
    if (scaled) {
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
__global__ void tiger_kernel(SignStepCall call, SignStepTensor t, DeviceFlags f) {
  using T = typename storage<P>::opmath;
  using Access = ParamAccess<kMode, P>;
  if (f.found_inf != nullptr && *f.found_inf != 0.0f) return;
  const int64_t step = *f.step;
  const SrKey key{call.seed, t.param_id, uint64_t(step)};
  P* param = static_cast<P*>(t.param);
  P* grad = static_cast<P*>(t.grad);
  M* mom = static_cast<M*>(t.exp_avg);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if (f.nonfinite != nullptr && *f.nonfinite != 0) {  // guard fired: shrink only
    const T ratio = T(call.shrink_ratio), centre = T(call.shrink_center);
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < t.numel; i += stride) {
      const T w_old = Access::load(param, t.aux, i);
      Access::store(param, t.aux, i, w_old, tiger_shrink(w_old, centre, ratio), key);
    }
    return;
  }
  const int64_t k_accum = call.grad_accum_steps;
  const TigerCoeffs<T> k{tiger_is_first_micro_step(step, k_accum) ? T(call.beta) : T(1),
                         T((1.0 - call.beta) / double(k_accum))};
  const bool update = tiger_is_update_step(step, k_accum);
  const bool scaled = f.grad_scale != nullptr;
  const T scale = scaled ? T(*f.grad_scale) : T(1);
  const T wd = T(call.weight_decay);
  double eta_tensor = 0.5 * call.lr;  // V class
  if (call.tiger_class == TigerClass::kK)
    eta_tensor = tiger_eta_from_sumsq(call.lr, f.row_sumsq[0], t.numel, call.rms_floor);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < t.numel; i += stride) {
    T g = storage<P>::load(grad, i);
    if (scaled) {
      g = g / scale;
      storage<P>::store(grad, i, g);
    }
    if (call.maximize) g = -g;
    T m = T(storage<M>::load(mom, i));
    tiger_momentum(m, g, k);
    storage<M>::store(mom, i, typename storage<M>::opmath(m));
    if (update) {
      const double eta = call.tiger_class == TigerClass::kE
          ? tiger_eta_from_sumsq(call.lr, f.row_sumsq[i / t.row_len], t.row_len, call.rms_floor)
          : eta_tensor;
      const T w_old = Access::load(param, t.aux, i);
      T w = w_old;
      tiger_param(w, m, T(eta), wd);
      Access::store(param, t.aux, i, w_old, w, key);
    }
  }
}

// Stage 1: one block per segment [s * seg_len, min((s + 1) * seg_len, numel)) -> float64 sum.
template <typename S>
__global__ void segment_sumsq_kernel(const S* data, int64_t numel, int64_t seg_len, double* out) {
  using BlockReduce = cub::BlockReduce<double, kBlockSize>;
  __shared__ typename BlockReduce::TempStorage temp;
  const int64_t begin = int64_t(blockIdx.x) * seg_len;
  const int64_t end = begin + seg_len < numel ? begin + seg_len : numel;
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlockSize) {
    const double x = double(storage<S>::load(data, i));
    acc += x * x;
  }
  const double total = BlockReduce(temp).Sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// Stage 2 (K tensors): add the segment sums in order, in one thread.
__global__ void sum_in_order_kernel(const double* parts, int64_t n, double* out) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += parts[i];
  *out = s;
}

template <typename S>
__global__ void nonfinite_kernel(const S* grad, int64_t numel, const float* grad_scale, int* flag) {
  using T = typename storage<S>::opmath;
  const T scale = grad_scale != nullptr ? T(*grad_scale) : T(1);
  bool bad = false;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    T g = storage<S>::load(grad, i);
    if (grad_scale != nullptr) g = g / scale;
    bad |= !is_finite_bits(g);
  }
  if (bad) atomicOr(flag, 1);  // an integer OR: the result does not depend on ordering
}

__global__ void advance_step_kernel(int64_t* step, const float* found_inf) {
  if (found_inf == nullptr || *found_inf == 0.0f) *step += 1;
}

template <typename F>
void dispatch_storage(DType d, F&& f) {
  switch (d) {
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
    case DType::kFloat16: return f(half_t{});
    default: return f(bfloat16_t{});
  }
}

template <typename P, typename M>
void launch_update(const SignStepCall& c, const SignStepTensor& t, const DeviceFlags& f,
                   cudaStream_t stream) {
  const int grid = grid_for(t.numel);
#define TC_LAUNCH(MODE)                                                              \
  do {                                                                               \
    if (c.algo == Algo::kLion) lion_kernel<P, M, MODE><<<grid, kBlockSize, 0, stream>>>(c, t, f);  \
    else tiger_kernel<P, M, MODE><<<grid, kBlockSize, 0, stream>>>(c, t, f);         \
  } while (0)
  if constexpr (sizeof(P) == 2) {
    switch (c.precision) {
      case Precision::kKahan: TC_LAUNCH(Precision::kKahan); return;
      case Precision::kStochastic: TC_LAUNCH(Precision::kStochastic); return;
      case Precision::kMaster: TC_LAUNCH(Precision::kMaster); return;
      default: break;
    }
  }
  TC_LAUNCH(Precision::kNone);
#undef TC_LAUNCH
}

void dispatch_update(const SignStepCall& c, const SignStepTensor& t, const DeviceFlags& f,
                     cudaStream_t stream) {
  dispatch_storage(c.param_dtype, [&](auto p_tag) {
    using P = decltype(p_tag);
    if constexpr (sizeof(P) == 8) {
      launch_update<P, double>(c, t, f, stream);
    } else {
      switch (c.momentum_dtype) {
        case DType::kFloat16: return launch_update<P, half_t>(c, t, f, stream);
        case DType::kBFloat16: return launch_update<P, bfloat16_t>(c, t, f, stream);
        default: return launch_update<P, float>(c, t, f, stream);
      }
    }
  });
}

const float* as_float_ptr(const std::optional<at::Tensor>& t, std::vector<at::Tensor>& keep) {
  if (!t.has_value()) return nullptr;
  keep.push_back(t->to(at::kFloat).contiguous());
  return keep.back().data_ptr<float>();
}

void run(const char* op, const StepInputs& in, Precision mode, const SignStepCall& base) {
  if (in.params.empty()) return;
  const c10::cuda::CUDAGuard guard(in.params[0].device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> tensors;
  describe_tensors(in, mode, base, calls, tensors, /*read_steps=*/false);
  std::vector<at::Tensor> keep;
  const float* found_inf = as_float_ptr(in.found_inf, keep);
  const float* grad_scale = as_float_ptr(in.grad_scale, keep);
  const at::TensorOptions dopt = in.params[0].options().dtype(at::kDouble);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SignStepCall& c = calls[i];
    const SignStepTensor& t = tensors[i];
    if (t.numel == 0) continue;
    DeviceFlags f{in.steps[i].data_ptr<int64_t>(), found_inf, grad_scale, nullptr, nullptr};
    if (c.algo == Algo::kTiger && c.nonfinite_guard) {
      at::Tensor flag = at::zeros({1}, in.params[0].options().dtype(at::kInt));
      keep.push_back(flag);
      dispatch_storage(c.param_dtype, [&](auto tag) {
        using S = decltype(tag);
        nonfinite_kernel<S><<<grid_for(t.numel), kBlockSize, 0, stream>>>(
            static_cast<const S*>(t.grad), t.numel, grad_scale, flag.data_ptr<int>());
      });
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      f.nonfinite = flag.data_ptr<int>();
    }
    if (c.algo == Algo::kTiger && c.tiger_class != TigerClass::kV) {
      // [note: Tiger RMS on CUDA] computed on every call (the update flag lives on the device);
      // it is cheap next to the update and keeps the step free of host synchronisation.
      const bool per_row = c.tiger_class == TigerClass::kE;
      const int64_t seg = per_row ? t.row_len : kSegment;
      const int64_t nseg = (t.numel + seg - 1) / seg;
      at::Tensor parts = at::empty({nseg}, dopt);
      keep.push_back(parts);
      const bool master = c.precision == Precision::kMaster;
      dispatch_storage(master ? DType::kFloat32 : c.param_dtype, [&](auto tag) {
        using S = decltype(tag);
        segment_sumsq_kernel<S><<<unsigned(nseg), kBlockSize, 0, stream>>>(
            static_cast<const S*>(master ? t.aux : t.param), t.numel, seg, parts.data_ptr<double>());
      });
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (per_row) {
        f.row_sumsq = parts.data_ptr<double>();
      } else {
        at::Tensor total = at::empty({1}, dopt);
        keep.push_back(total);
        sum_in_order_kernel<<<1, 1, 0, stream>>>(parts.data_ptr<double>(), nseg, total.data_ptr<double>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        f.row_sumsq = total.data_ptr<double>();
      }
    }
    dispatch_update(c, t, f, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    advance_step_kernel<<<1, 1, 0, stream>>>(in.steps[i].data_ptr<int64_t>(), found_inf);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  (void)op;
}

void lion_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList aux, at::TensorList steps, double lr, double beta1, double beta2,
                    double weight_decay, bool maximize, c10::string_view precision, int64_t seed,
                    at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                    const std::optional<at::Tensor>& found_inf) {
  StepInputs in{params, grads, exp_avgs, aux, steps, param_ids, grad_scale, found_inf};
  const Precision mode = parse_precision(precision);
  check_step_inputs("lion_step_", in, mode, at::kCUDA);
  check_lion_hyper(lr, beta1, beta2, weight_decay);
  SignStepCall base{};
  base.algo = Algo::kLion;
  base.maximize = maximize;
  base.lr = lr;
  base.weight_decay = weight_decay;
  base.beta1 = beta1;
  base.beta2 = beta2;
  base.seed = uint32_t(seed);
  run("lion_step_", in, mode, base);
}

void tiger_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList aux, at::TensorList steps, at::TensorList rms_cache, double lr, double beta,
                     double weight_decay, int64_t grad_accum_steps, c10::string_view tiger_class,
                     double shrink_ratio, double shrink_center, bool nonfinite_guard,
                     double rms_floor, bool maximize, c10::string_view precision, int64_t seed,
                     at::IntArrayRef param_ids, const std::optional<at::Tensor>& grad_scale,
                     const std::optional<at::Tensor>& found_inf) {
  StepInputs in{params, grads, exp_avgs, aux, steps, param_ids, grad_scale, found_inf};
  const Precision mode = parse_precision(precision);
  const TigerClass cls = parse_tiger_class(tiger_class);
  check_step_inputs("tiger_step_", in, mode, at::kCUDA);
  check_tiger_hyper(lr, beta, weight_decay, grad_accum_steps, shrink_ratio, rms_floor);
  // [note: Tiger RMS on CUDA]: the sums are recomputed on the device every step; carried sums
  // (rms_cache) are a CPU optimisation and are not passed for CUDA parameters.
  TORCH_CHECK(rms_cache.empty(), "tigercore::tiger_step_: rms_cache is not used on CUDA; pass an empty list");
  SignStepCall base{};
  base.algo = Algo::kTiger;
  base.maximize = maximize;
  base.lr = lr;
  base.weight_decay = cls == TigerClass::kV ? 0.0 : weight_decay;
  base.beta = beta;
  base.grad_accum_steps = grad_accum_steps;
  base.tiger_class = cls;
  base.shrink_ratio = shrink_ratio;
  base.shrink_center = shrink_center;
  base.rms_floor = rms_floor;
  base.nonfinite_guard = nonfinite_guard;
  base.seed = uint32_t(seed);
  run("tiger_step_", in, mode, base);
}

}  // namespace

TORCH_LIBRARY_IMPL(tigercore, CUDA, m) {
  m.impl("lion_step_", &lion_step_cuda);
  m.impl("tiger_step_", &tiger_step_cuda);
}

}  // namespace cuda
}  // namespace tigercore
