// kernel_table.h — the per-instruction-set CPU kernel tables (no torch headers): the Lion/Tiger step
// loops (optim_kernels.h) and the Analytic-DPM loops (dpm_kernels.h), both compiled once per ISA in
// kernels_{generic,avx2,avx512}.cpp; isa.cpp picks the best ISA the processor supports at load
// time, for both tables (TIGERCORE_CPU_ISA overrides).
#pragma once
#include "tigercore/dpm_math.h"
#include "tigercore/step_desc.h"

namespace tigercore {
namespace cpu {

struct KernelTable {
  const char* isa;
  // Lion/Tiger update of elements [begin, end) of one tensor. Tiger returns the sum of squares of
  // the new working values of what it wrote (K; [note: carried sums]) and, with row_sums (E;
  // [begin, end) then covers whole rows), writes it per row, exactly as sum_squares would
  // compute it afterwards.
  double (*sign_step)(const StepCall& call, const StepTensor& t, int64_t begin, int64_t end, double* row_sums);
  // Sum of squares in float64 of elements [begin, end) ([note: deterministic sum of squares]).
  double (*sum_squares)(DType dtype, const void* data, int64_t begin, int64_t end);
  // True iff every g / grad_scale (or g) in [begin, end) is finite.
  bool (*all_finite)(DType dtype, const void* data, int64_t begin, int64_t end, bool has_scale,
                     double grad_scale);
  // Cautious masking: how many elements of [begin, end) of one tensor keep their step ([note: cautious]).
  int64_t (*caution_count)(const StepCall& call, const StepTensor& t, int64_t begin, int64_t end);
};

extern const KernelTable kGenericTable;
#if defined(__x86_64__) || defined(_M_X64)
extern const KernelTable kAvx2Table;
extern const KernelTable kAvx512Table;
#endif

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

// The tables in use (chosen once) and what the machine / build offer.
const KernelTable& active_kernels();
const DpmKernelTable& active_dpm_kernels();
const char* compiled_isas();
const char* cpu_supported_isas();

}  // namespace cpu
}  // namespace tigercore
