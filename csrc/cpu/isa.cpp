// isa.cpp — picks the CPU kernel variant once, from what the processor supports.
// TIGERCORE_CPU_ISA=generic|avx2|avx512 overrides (an unsupported request falls back to the best
// supported variant with a warning on stderr). Model: ATen's native/cpu dispatch.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernel_table.h"

namespace tigercore {
namespace cpu {
namespace {

bool cpu_has_avx2() {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

const KernelTable* choose() {
  const KernelTable* best = &kGenericTable;
#if defined(__x86_64__) || defined(_M_X64)
  if (cpu_has_avx512()) best = &kAvx512Table;
  else if (cpu_has_avx2()) best = &kAvx2Table;
#endif
  const char* env = std::getenv("TIGERCORE_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  if (want == "generic") return &kGenericTable;
#if defined(__x86_64__) || defined(_M_X64)
  if (want == "avx2" && cpu_has_avx2()) return &kAvx2Table;
  if (want == "avx512" && cpu_has_avx512()) return &kAvx512Table;
#endif
  std::fprintf(stderr,
               "tigercore: TIGERCORE_CPU_ISA=%s is not supported by this processor or build; "
               "using %s\n", env, best->isa);
  return best;
}

}  // namespace

const KernelTable& active_kernels() {
  static const KernelTable* table = choose();
  return *table;
}

const char* compiled_isas() {
#if defined(__x86_64__) || defined(_M_X64)
  return "generic,avx2,avx512";
#else
  return "generic";
#endif
}

const char* cpu_supported_isas() {
  if (cpu_has_avx512()) return "generic,avx2,avx512";
  if (cpu_has_avx2()) return "generic,avx2";
  return "generic";
}

}  // namespace cpu
}  // namespace tigercore
