// dpm_kernel_table.h — the per-instruction-set table of the Analytic-DPM CPU loops (no torch
// headers). dpm_kernels.h is compiled once per ISA (dpm_kernels_{generic,avx2,avx512}.cpp); the
// variant is the one isa.cpp chose for the step kernels (TIGERCORE_CPU_ISA overrides both).
#pragma once
#include "tigercore/dpm_math.h"

namespace tigercore {
namespace cpu {

struct DpmKernelTable {
  const char* isa;
  // Fixed-tree fp64 partial sums of the work items [begin, end) (item w = row * ntiles + tile),
  // written to partials[w * kStatCols + column] for the columns the call has.
  void (*eps_stats_tiles)(const dpm::EpsStatsCall& call, int64_t begin, int64_t end, double* partials);
  // minplus_dp on the column block [tb, te): candidates s < tb for rows [k_begin, k_end) (rows are
  // independent), and the in-block candidates tb <= s < t for rows [k_begin, k_end) in order.
  void (*minplus_outer)(const dpm::MinplusCall& call, int64_t tb, int64_t te, int64_t k_begin, int64_t k_end);
  void (*minplus_inner)(const dpm::MinplusCall& call, int64_t tb, int64_t te, int64_t k_begin, int64_t k_end);
};

extern const DpmKernelTable kDpmGenericTable;
#if defined(__x86_64__) || defined(_M_X64)
extern const DpmKernelTable kDpmAvx2Table;
extern const DpmKernelTable kDpmAvx512Table;
#endif

const DpmKernelTable& active_dpm_kernels();

}  // namespace cpu
}  // namespace tigercore
