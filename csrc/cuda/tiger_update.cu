// tiger_update.cu — the multi-tensor fused Tiger step kernels (update_kernel, launch.cuh), one per
// (param dtype, momentum dtype, precision mode); a block updates one chunk (tiger_block), with the
// functors of tigercore/step_desc.h (make_tiger_step, make_tiger_shrink) that the CPU loops use:
//   m' = fma(b1, m, b2 g);  w' = fma(-eta, fma(wd, w, sign(m')), w)   (eta: K/E per row, V 0.5 lr)
//   guard fired: w' = fma(w - c, s, c), m unchanged.
// Semantics: docs/semantics.md ("Tiger"). Reference: tigercore/reference/optim.py (tiger_step_).
#include "launch.cuh"

namespace tigercore {
namespace cuda {

template cudaError_t launch_update<Algo::kTiger>(const KernelKey&, const Launches&, const StepCall&,
                                                 const mta::KernelScalars&, cudaStream_t);

}  // namespace cuda
}  // namespace tigercore
