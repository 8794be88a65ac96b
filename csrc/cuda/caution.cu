// caution.cu — the count stage of cautious masking ([note: cautious], sign_step_block.h): per
// tensor, how many elements keep their step (each block adds its threads' parts in shared memory,
// then one 64-bit atomicAdd per block: integers, so the total is exact in any order), then each
// tensor's scale s = n / max(K, 0.001 n) (one thread per tensor). Runs on the update's launches,
// before the update reads the scales. Semantics: docs/semantics.md ("Cautious masking").
// Reference: tigercore/reference/optim.py (_cautious_direction); CPU: csrc/cpu/optim_ops.cpp.
#include "launch.cuh"

namespace tigercore {
namespace cuda {
namespace {

template <typename P, typename M>
__global__ __launch_bounds__(mta::kBlockSize, 1) void caution_count_kernel(const __grid_constant__ mta::MtaArgs a,
                                                                        const __grid_constant__ StepCall call,
                                                                        const __grid_constant__ mta::KernelScalars d) {
  if (mta::step_skipped(d)) return;
  __shared__ unsigned long long block_kept;
  if (threadIdx.x == 0) block_kept = 0;
  __syncthreads();
  const uint64_t kept = mta::caution_count_part<P, M>(a, call, d, blockIdx.x, threadIdx.x, mta::kBlockSize);
  if (kept != 0) atomicAdd(&block_kept, (unsigned long long)kept);
  __syncthreads();
  if (threadIdx.x == 0 && block_kept != 0)
    atomicAdd(d.caution_kept + a.t[mta::locate_block(a, blockIdx.x).tensor].ordinal, block_kept);
}

__global__ void caution_scales_kernel(const __grid_constant__ mta::MtaArgs a, const __grid_constant__ mta::KernelScalars d) {
  if (mta::step_skipped(d)) return;
  mta::caution_scales_part(a, d, threadIdx.x, blockDim.x);
}

}  // namespace

cudaError_t launch_caution_count(const KernelKey& key, const Launches& launches, const StepCall& call,
                                 const mta::KernelScalars& d, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_key_or_code8(key, [&](auto p, auto m, auto) {  // the precision mode does not matter here
    err = launch_each(caution_count_kernel<decltype(p), decltype(m)>, launches, call, d, stream);
  });
  return err;
}

cudaError_t launch_caution_scales(const Launches& launches, const mta::KernelScalars& d, cudaStream_t stream) {
  for (const mta::MtaArgs& a : launches) {
    caution_scales_kernel<<<1, mta::kMaxTensors, 0, stream>>>(a, d);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace tigercore
