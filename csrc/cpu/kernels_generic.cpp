// kernels_generic.cpp — the generic variant (any CPU) of the CPU kernels: the Lion/Tiger step loops
// (optim_kernels.h) and the Analytic-DPM loops (dpm_kernels.h; 16-byte vectors, 2-row minplus register tiles).
// Only torch-free headers are included, after the target pragma, so nothing outside the
// tigercore::cpu::generic namespace is compiled for this instruction set.

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#define TC_ISA generic
#define TC_VEC_BYTES 16
#define TC_MINPLUS_ROWS 2
#include "optim_kernels.h"
#include "dpm_kernels.h"

namespace tigercore {
namespace cpu {
const KernelTable kGenericTable = {"generic", &generic::sign_step, &generic::sum_squares, &generic::all_finite,
                                   &generic::caution_count};
const DpmKernelTable kDpmGenericTable = {"generic", &generic::dpm_loops::eps_stats_tiles,
                                         &generic::dpm_loops::minplus_outer, &generic::dpm_loops::minplus_inner};
}  // namespace cpu
}  // namespace tigercore

