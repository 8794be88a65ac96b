// optim_kernels_generic.cpp — the generic variant of the CPU step kernels (see optim_kernels.h).
// Only torch-free headers are included, after the target pragma, so nothing outside the
// tigercore::cpu::generic namespace is compiled for this instruction set.


#define TC_ISA generic
#include "optim_kernels.h"

namespace tigercore {
namespace cpu {
const KernelTable kGenericTable = {"generic", &generic::sign_step, &generic::sum_squares, &generic::all_finite};
}  // namespace cpu
}  // namespace tigercore

