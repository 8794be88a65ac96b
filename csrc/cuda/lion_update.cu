// lion_update.cu — the multi-tensor fused Lion step kernels (update_kernel, launch.cuh), one per
// (param dtype, momentum dtype, precision mode); a block updates one chunk (lion_block), with the
// functor of tigercore/step_desc.h (make_lion_step) that the CPU loops use:
//   c = fma(b1, m, (1-b1) g);  w' = fma(-lr, fma(wd, w, sign(c)), w);  m' = fma(b2, m, (1-b2) g)
// Semantics: docs/semantics.md ("Lion"). Reference: tigercore/reference/optim.py (lion_step_).
#include "launch.cuh"

namespace tigercore {
namespace cuda {

template cudaError_t launch_update<Algo::kLion>(const KernelKey&, const Launches&, const StepCall&,
                                                const mta::KernelScalars&, cudaStream_t);

}  // namespace cuda
}  // namespace tigercore
