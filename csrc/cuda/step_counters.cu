// step_counters.cu — the last kernel of a step: a block per tensor advances its step counter
// (nothing moves when GradScaler's found_inf is set) and marks Tiger's carried sums of squares
// unknown (-1; [note: Tiger RMS on CUDA], tiger_rms.cu), kMaxCounters tensors per launch, after
// all update kernels on the same stream. Reference: tigercore/reference/optim.py (s_t.add_(1)).
#include "launch.cuh"

namespace tigercore {
namespace cuda {
namespace {

__global__ void counters_kernel(const __grid_constant__ mta::CounterArgs a, const float* found_inf) {
  mta::finish_tensor(a, found_inf, int32_t(blockIdx.x), int(threadIdx.x), mta::kCounterThreads);
}

}  // namespace

cudaError_t launch_counters(const std::vector<mta::CounterArgs>& launches, const float* found_inf,
                            cudaStream_t stream) {
  for (const mta::CounterArgs& a : launches) {
    counters_kernel<<<unsigned(a.n), mta::kCounterThreads, 0, stream>>>(a, found_inf);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace tigercore
