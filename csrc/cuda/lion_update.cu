// lion_update.cu — the multi-tensor fused Lion step kernels (update_kernel, launch.cuh), one per
// (param dtype, momentum dtype, precision mode); a block updates one chunk (lion_block):
//   c = fma(b1, m, (1-b1) g);  w' = fma(-lr, fma(wd, w, sign(c)), w);  m' = fma(b2, m, (1-b2) g)
// Spec: shared/spec/optimizers.md §1.1, §3. Reference: tigercore/reference/optim.py.
#include "launch.cuh"

namespace tigercore {
namespace cuda {

template cudaError_t launch_update<Algo::kLion>(const KernelKey&, const Launches&, const SignStepCall&,
                                                const mta::KernelScalars&, cudaStream_t);

}  // namespace cuda
}  // namespace tigercore
