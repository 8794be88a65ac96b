// launch.cuh — the host API of the CUDA kernel files (lion_update.cu, tiger_update.cu, tiger_rms.cu,
// step_counters.cu), used by the entry points in optim_step.cu, and the fused update kernel. Each
// function launches one kernel per packed MtaArgs (mta_plan.h, [note: stages]) on the given stream
// and returns the first launch error. The kernel files include no ATen headers and compile in
// parallel. What a block computes: sign_step_block.h. Reference: tigercore/reference/optim.py.
#pragma once
#include <cuda_runtime_api.h>

#include <vector>

#include "sign_step_block.h"

namespace tigercore {
namespace cuda {

using Launches = std::vector<mta::MtaArgs>;

// The fused update of one algorithm: lion_update.cu / tiger_update.cu instantiate it.
template <Algo kAlgo>
cudaError_t launch_update(const KernelKey& key, const Launches& launches, const StepCall& call,
                          const mta::KernelScalars& d, cudaStream_t stream);
// Tiger stage 1: per-slot sums of squares and per-tensor guard flags (update_blocks() per tensor).
cudaError_t launch_tiger_reduce(const KernelKey& key, const Launches& launches, const StepCall& call,
                                const mta::KernelScalars& d, cudaStream_t stream);
// Tiger stage 2: per-row step sizes, or tiger_stats' per-row sums (row_blocks() per tensor); any dtype.
cudaError_t launch_tiger_rows(const Launches& launches, const StepCall& call, const mta::KernelScalars& d,
                              cudaStream_t stream);
// Cautious masking ([note: cautious], caution.cu): each tensor's kept count (into d.caution_kept,
// zeroed by the caller) over the update's launches of one key, then each tensor's scale.
cudaError_t launch_caution_count(const KernelKey& key, const Launches& launches, const StepCall& call,
                                 const mta::KernelScalars& d, cudaStream_t stream);
cudaError_t launch_caution_scales(const Launches& launches, const mta::KernelScalars& d, cudaStream_t stream);
// Step counters += 1 (unless found_inf) and carried sums marked unknown.
cudaError_t launch_counters(const std::vector<mta::CounterArgs>& launches, const float* found_inf,
                            cudaStream_t stream);

// [note: launch bounds]
// Every multi-tensor kernel is declared __launch_bounds__(kBlockSize, 1). With the block size alone,
// ptxas (CUDA 13) aimed at a higher occupancy and spilled a few registers in some instantiations
// (32-48 registers used); with "at least one block per SM" it does not spill (bench/cuda_inspect.py
// checks every build). Occupancy stays what the registers allow: 46-124 registers for the update
// instantiations (sm_80/sm_90), 1-5 blocks of 256 threads per SM.

// One launch per MtaArgs: grid = its blocks, kBlockSize threads.
template <typename Kernel>
cudaError_t launch_each(Kernel kernel, const Launches& launches, const StepCall& call,
                        const mta::KernelScalars& d, cudaStream_t stream) {
  for (const mta::MtaArgs& a : launches) {
    kernel<<<unsigned(a.block_start[a.n]), mta::kBlockSize, 0, stream>>>(a, call, d);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

// One block of the fused update: lion_block / tiger_block (sign_step_block.h); M = code8_t for 8-bit
// momentum ([note: 8-bit momentum on CUDA]).
template <Algo kAlgo, typename P, typename M, Precision kMode, CautionUse kU>
__global__ __launch_bounds__(mta::kBlockSize, 1) void update_kernel(const __grid_constant__ mta::MtaArgs a,
                                                                    const __grid_constant__ StepCall call,
                                                                    const __grid_constant__ mta::KernelScalars d) {
  if constexpr (kAlgo == Algo::kLion) mta::lion_block<P, M, kMode, kU>(a, call, d, blockIdx.x, threadIdx.x, mta::kBlockSize);
  else mta::tiger_block<P, M, kMode, kU>(a, call, d, blockIdx.x, threadIdx.x, mta::kBlockSize);
}

// Plain or cautious ([note: cautious]): separate instantiations, so the plain kernels keep their
// registers (the mask's values raised the f16/bf16 stochastic Tiger kernels from 105 to 136).
template <Algo kAlgo>
cudaError_t launch_update(const KernelKey& key, const Launches& launches, const StepCall& call,
                          const mta::KernelScalars& d, cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  dispatch_key_or_code8(key, [&](auto p, auto m, auto mode) {
    using P = decltype(p);
    using M = decltype(m);
    constexpr Precision kMode = decltype(mode)::value;
    err = call.hyper.cautious ? launch_each(update_kernel<kAlgo, P, M, kMode, CautionUse::kOn>, launches, call, d, stream)
                              : launch_each(update_kernel<kAlgo, P, M, kMode, CautionUse::kOff>, launches, call, d, stream);
  });
  return err;
}
extern template cudaError_t launch_update<Algo::kLion>(const KernelKey&, const Launches&, const StepCall&,
                                                       const mta::KernelScalars&, cudaStream_t);
extern template cudaError_t launch_update<Algo::kTiger>(const KernelKey&, const Launches&, const StepCall&,
                                                        const mta::KernelScalars&, cudaStream_t);

}  // namespace cuda
}  // namespace tigercore
