// tiger_rms.cu — Tiger's per-tensor inputs as a deterministic two-stage multi-tensor reduction:
//   stage 1 (a block per chunk): sum(theta^2) in float64 per slot ([note: chunks and slots]) with
//            CUB warp/block reductions, and the guard's "non-finite unscaled gradient" flag;
//   stage 2 (a thread per row): the row's slots added in order -> eta = alpha * max(RMS, floor).
// Spec: shared/spec/optimizers.md §2.3, §2.6, §2.8.2-4. CPU counterpart: csrc/cpu/optim_ops.cpp.
#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include <type_traits>

#include "launch.cuh"

namespace tigercore {
namespace cuda {
namespace {

constexpr int kWarps = mta::kBlockSize / 32;

// [note: Tiger RMS on CUDA]
// The sums are recomputed on the device on every update step (the update flag and the guard live
// on the device; carried sums, rms_cache, are a CPU optimisation and must be empty on CUDA). Each
// slot is summed by one warp (chunks of at least kWarps whole rows: Tiger E) or by the whole block
// (a piece of a long row, or a few long rows), in a fixed order: no float atomics, and the result
// does not depend on launch grouping or timing. The flag is an integer OR (order-free), set once
// per block. Sums are skipped when the tensor does not move (V class, or an accumulation step).
// One thread's part of a slot-row: sum of squares of the working copy, and "some unscaled gradient
// is not finite" (unscaled exactly as the update does, [note: exact unscale]).
template <typename S, typename P>
struct SlotPart {
  using G = typename storage<P>::opmath;
  const S* src;
  const P* grad;
  bool want_sum, want_flag;
  template <bool kSum, bool kFlag>
  __device__ void add_as(int32_t begin, int32_t end, int32_t stride, const mta::GradIn<G>& unscale, double& sumsq,
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
  __device__ void add(int32_t begin, int32_t end, int32_t stride, const float* grad_scale, double& sumsq,
                      bool& bad) const {
    const mta::GradIn<G> unscale(grad_scale);
    if (want_sum && want_flag) add_as<true, true>(begin, end, stride, unscale, sumsq, bad);
    else if (want_sum) add_as<true, false>(begin, end, stride, unscale, sumsq, bad);
    else add_as<false, true>(begin, end, stride, unscale, sumsq, bad);
  }
};

template <typename P, bool kMaster>
__global__ __launch_bounds__(mta::kBlockSize, 1) void tiger_reduce_kernel(const __grid_constant__ mta::MtaArgs a,
                                                                       const __grid_constant__ SignStepCall call,
                                                                       const __grid_constant__ mta::KernelScalars d) {
  using S = std::conditional_t<kMaster, float, P>;  // the working copy whose RMS sets eta
  if (mta::step_skipped(d)) return;
  const mta::BlockLoc loc = mta::locate_block(a, blockIdx.x);
  const mta::MtaTensor& t = a.t[loc.tensor];
  SlotPart<S, P> part{nullptr, nullptr, call.tiger_class != TigerClass::kV && mta::tiger_moves(*t.step, call.grad_accum_steps),
                      call.nonfinite_guard};
  if (!part.want_sum && !part.want_flag) return;
  const mta::Span s = mta::span_of(t.numel, t.row_len, loc.chunk);
  part.src = static_cast<const S*>(t.ptr[kMaster ? 3 : 0]) + s.start;
  part.grad = static_cast<const P*>(t.ptr[1]) + s.start;
  bool bad = false;
  if (s.nrows >= kWarps) {
    using WarpReduce = cub::WarpReduce<double>;
    __shared__ typename WarpReduce::TempStorage warp_temp[kWarps];
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    for (int32_t r = warp; r < s.nrows; r += kWarps) {
      double sumsq = 0.0;
      part.add(r * s.rlen + lane, (r + 1) * s.rlen, 32, d.grad_scale, sumsq, bad);
      const double total = WarpReduce(warp_temp[warp]).Sum(sumsq);
      if (lane == 0 && part.want_sum) d.slot_sums[t.slot0 + s.slot + r] = total;
    }
  } else {
    using BlockReduce = cub::BlockReduce<double, mta::kBlockSize>;
    __shared__ typename BlockReduce::TempStorage block_temp;
    for (int32_t r = 0; r < s.nrows; ++r) {
      double sumsq = 0.0;
      part.add(r * s.rlen + int32_t(threadIdx.x), (r + 1) * s.rlen, mta::kBlockSize, d.grad_scale, sumsq, bad);
      const double total = BlockReduce(block_temp).Sum(sumsq);
      if (threadIdx.x == 0 && part.want_sum) d.slot_sums[t.slot0 + s.slot + r] = total;
      __syncthreads();  // block_temp is reused by the next row
    }
  }
  if (part.want_flag && __syncthreads_or(bad) && threadIdx.x == 0) atomicOr(d.flags + t.ordinal, 1);
}

__global__ __launch_bounds__(mta::kBlockSize, 1) void tiger_eta_kernel(const __grid_constant__ mta::MtaArgs a,
                                                                    const __grid_constant__ SignStepCall call,
                                                                    const __grid_constant__ mta::KernelScalars d) {
  mta::tiger_eta_block(a, call, d, blockIdx.x, threadIdx.x, mta::kBlockSize);
}

}  // namespace

cudaError_t launch_tiger_reduce(const KernelKey& key, const Launches& launches, const SignStepCall& call,
                                const mta::KernelScalars& d, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_dtype(key.param, [&](auto p) {
    using P = decltype(p);
    if constexpr (sizeof(P) == 2) {
      if (key.mode == Precision::kMaster) {
        err = launch_each(tiger_reduce_kernel<P, true>, launches, call, d, stream);
        return;
      }
    }
    err = launch_each(tiger_reduce_kernel<P, false>, launches, call, d, stream);
  });
  return err;
}

cudaError_t launch_tiger_eta(const Launches& launches, const SignStepCall& call, const mta::KernelScalars& d,
                             cudaStream_t stream) {
  return launch_each(tiger_eta_kernel, launches, call, d, stream);
}

}  // namespace cuda
}  // namespace tigercore
