// kernel_table.h — the per-instruction-set CPU kernel table (no torch headers).
// optim_kernels.h is compiled once per ISA (optim_kernels_{generic,avx2,avx512}.cpp); isa.cpp picks
// the best one the processor supports at load time (TIGERCORE_CPU_ISA overrides).
#pragma once
#include "tigercore/params.h"

namespace tigercore {
namespace cpu {

struct KernelTable {
  const char* isa;
  // Lion/Tiger update of elements [begin, end) of one tensor. With t.want_sumsq (Tiger K/E), the
  // sum of squares of the new working values is returned (K) or written per row to row_sums (E;
  // [begin, end) then covers whole rows), exactly as sum_squares would compute it afterwards.
  double (*sign_step)(const SignStepCall& call, const SignStepTensor& t, int64_t begin, int64_t end,
                      double* row_sums);
  // Sum of squares in float64 of elements [begin, end) (eight fixed lanes, then in order).
  double (*sum_squares)(DType dtype, const void* data, int64_t begin, int64_t end);
  // True iff every g / grad_scale (or g) in [begin, end) is finite.
  bool (*all_finite)(DType dtype, const void* data, int64_t begin, int64_t end, bool has_scale,
                     double grad_scale);
};

extern const KernelTable kGenericTable;
#if defined(__x86_64__) || defined(_M_X64)
extern const KernelTable kAvx2Table;
extern const KernelTable kAvx512Table;
#endif

// The table in use (chosen once) and what the machine / build offer.
const KernelTable& active_kernels();
const char* compiled_isas();
const char* cpu_supported_isas();

}  // namespace cpu
}  // namespace tigercore
