// dpm_kernels_generic.cpp — the generic (baseline x86-64 / any CPU) variant of the Analytic-DPM CPU
// loops (see dpm_kernels.h): 16-byte vectors, 2-row minplus register tiles.
#include <cstring>
#include <type_traits>
#define TC_ISA generic
#define TC_VEC_BYTES 16
#define TC_MINPLUS_ROWS 2
#include "dpm_kernels.h"

namespace tigercore {
namespace cpu {
const DpmKernelTable kDpmGenericTable = {"generic", &generic::eps_stats_tiles, &generic::minplus_outer,
                                         &generic::minplus_inner};
}  // namespace cpu
}  // namespace tigercore
