// step_counters.cu — advances every step counter of a call with one small kernel (a launch per
// kMaxSteps counters), after all update kernels on the same stream; nothing moves when
// GradScaler's found_inf is set. Spec: shared/spec/optimizers.md §2.8.5 (one counter).
#include "launch.cuh"

namespace tigercore {
namespace cuda {
namespace {

__global__ void advance_steps_kernel(const __grid_constant__ mta::StepArgs a, const float* found_inf) {
  mta::advance_step(a, found_inf, int64_t(blockIdx.x) * blockDim.x + threadIdx.x);
}

}  // namespace

cudaError_t launch_advance_steps(const std::vector<mta::StepArgs>& launches, const float* found_inf,
                                 cudaStream_t stream) {
  for (const mta::StepArgs& a : launches) {
    advance_steps_kernel<<<unsigned((a.n + 127) / 128), 128, 0, stream>>>(a, found_inf);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace tigercore
