// tiger_update.cu — the multi-tensor fused Tiger step kernels (update_kernel, launch.cuh), one per
// (param dtype, momentum dtype, precision mode); a block updates one chunk (tiger_block):
//   m' = fma(b1, m, b2 g);  w' = fma(-eta, fma(wd, w, sign(m')), w)   (eta: K/E from tiger_rms.cu)
//   guard fired: w' = fma(w - c, s, c), m unchanged.
// Spec: shared/spec/optimizers.md §2, §3. Reference: tigercore/reference/optim.py.
#include "launch.cuh"

namespace tigercore {
namespace cuda {

template cudaError_t launch_update<Algo::kTiger>(const KernelKey&, const Launches&, const SignStepCall&,
                                                 const mta::KernelScalars&, cudaStream_t);

}  // namespace cuda
}  // namespace tigercore
