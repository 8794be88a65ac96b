// tiger_rms.cu — Tiger's per-tensor inputs as a deterministic two-stage multi-tensor reduction:
//   stage 1 (a block per chunk): sum(theta^2) in float64 per slot ([note: chunks and slots]) with
//            CUB warp/block reductions, and the guard's "non-finite unscaled gradient" flag;
//   stage 2 (a thread per row): the row's slots added in order -> eta = lr * max(RMS, floor), or
//            for tiger_stats the row's sum itself.
// Semantics: docs/semantics.md ("Tiger"). Reference: tigercore/reference/optim.py (tiger_eta,
// tiger_stats); CPU counterpart: csrc/cpu/optim_ops.cpp.
#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include <type_traits>

#include "launch.cuh"

namespace tigercore {
namespace cuda {
namespace {

constexpr int kWarps = mta::kBlockSize / 32;

// [note: Tiger RMS on CUDA]
// The CUDA step recomputes the sums of squares on the device, in stage 1, on every update step of
// a K/E tensor: the update flag and the guard live on the device, and a host-side choice between
// carried and fresh sums would need a synchronisation. So the carried sums (`sumsq`, which the
// CPU step keeps exact, [note: carried sums]) are not read on CUDA, and since the CUDA update does
// not sum what it writes, every sumsq of the call is set to -1 (unknown) at the end of the step
// (step_counters.cu): a state moved to the CPU later never trusts a stale value. tiger_stats on
// CUDA likewise computes fresh sums for every tensor. A caller's `eta` skips stage 1's sums and
// stage 2; a caller's `nonfinite` skips the flags.
// Each slot is summed by one warp (chunks of at least kWarps whole rows: Tiger E) or by the whole
// block (a piece of a long row, or a few long rows), in a fixed order: no float atomics, and the
// result does not depend on launch grouping or timing (it differs from the CPU's lane order in the
// last bits; the fp64 step sizes agree to ~1e-16 relative). The flag is an integer OR (order-free),
// set once per block. Sums are skipped when the tensor does not move (an accumulation step).
template <typename P, bool kMaster>
__global__ __launch_bounds__(mta::kBlockSize, 1) void tiger_reduce_kernel(const __grid_constant__ mta::MtaArgs a,
                                                                       const __grid_constant__ StepCall call,
                                                                       const __grid_constant__ mta::KernelScalars d) {
  using S = std::conditional_t<kMaster, float, P>;  // the working copy whose RMS sets eta
  if (mta::step_skipped(d)) return;
  const mta::ReduceJob job = mta::reduce_job(a, call, d, blockIdx.x);
  if (!job.want_sum && !job.want_flag) return;
  const mta::SlotPart<S, P> part = mta::slot_part<S, P>(job, kMaster);
  const mta::Span& s = job.s;
  const mta::MtaTensor& t = *job.t;
  bool bad = false;
  if (s.nrows >= kWarps) {
    using WarpReduce = cub::WarpReduce<double>;
    __shared__ typename WarpReduce::TempStorage warp_temp[kWarps];
    const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
    for (int32_t r = warp; r < s.nrows; r += kWarps) {
      double sumsq = 0.0;
      part.add(r * s.rlen + lane, (r + 1) * s.rlen, 32, d.grad_scale, sumsq, bad);
      const double total = WarpReduce(warp_temp[warp]).Sum(sumsq);
      if (lane == 0 && job.want_sum) d.slot_sums[t.slot0 + s.slot + r] = total;
    }
  } else {
    using BlockReduce = cub::BlockReduce<double, mta::kBlockSize>;
    __shared__ typename BlockReduce::TempStorage block_temp;
    for (int32_t r = 0; r < s.nrows; ++r) {
      double sumsq = 0.0;
      part.add(r * s.rlen + int32_t(threadIdx.x), (r + 1) * s.rlen, mta::kBlockSize, d.grad_scale, sumsq, bad);
      const double total = BlockReduce(block_temp).Sum(sumsq);
      if (threadIdx.x == 0 && job.want_sum) d.slot_sums[t.slot0 + s.slot + r] = total;
      __syncthreads();  // block_temp is reused by the next row
    }
  }
  if (job.want_flag && __syncthreads_or(bad) && threadIdx.x == 0) atomicOr(d.flags + t.ordinal, 1);
}

__global__ __launch_bounds__(mta::kBlockSize, 1) void tiger_rows_kernel(const __grid_constant__ mta::MtaArgs a,
                                                                     const __grid_constant__ StepCall call,
                                                                     const __grid_constant__ mta::KernelScalars d) {
  mta::tiger_rows_block(a, call, d, blockIdx.x, threadIdx.x, mta::kBlockSize);
}

}  // namespace

cudaError_t launch_tiger_reduce(const KernelKey& key, const Launches& launches, const StepCall& call,
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

cudaError_t launch_tiger_rows(const Launches& launches, const StepCall& call, const mta::KernelScalars& d,
                              cudaStream_t stream) {
  return launch_each(tiger_rows_kernel, launches, call, d, stream);
}

}  // namespace cuda
}  // namespace tigercore
