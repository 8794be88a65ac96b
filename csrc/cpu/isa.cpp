// isa.cpp — picks the CPU kernel variant once, from what the processor supports, for both kernel
// tables (the Lion/Tiger step kernels and the Analytic-DPM loops).
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

enum class Isa { kGeneric, kAvx2, kAvx512 };
const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "generic";
}

Isa choose() {
  Isa best = Isa::kGeneric;
#if defined(__x86_64__) || defined(_M_X64)
  if (cpu_has_avx512()) best = Isa::kAvx512;
  else if (cpu_has_avx2()) best = Isa::kAvx2;
#endif
  const char* env = std::getenv("TIGERCORE_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  if (want == "generic") return Isa::kGeneric;
#if defined(__x86_64__) || defined(_M_X64)
  if (want == "avx2" && cpu_has_avx2()) return Isa::kAvx2;
  if (want == "avx512" && cpu_has_avx512()) return Isa::kAvx512;
#endif
  std::fprintf(stderr,
               "tigercore: TIGERCORE_CPU_ISA=%s is not supported by this processor or build; "
               "using %s\n", env, isa_name(best));
  return best;
}

Isa active_isa() {
  static const Isa isa = choose();
  return isa;
}

}  // namespace

const KernelTable& active_kernels() {
  switch (active_isa()) {
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx512: return kAvx512Table;
    case Isa::kAvx2: return kAvx2Table;
#endif
    default: return kGenericTable;
  }
}

const DpmKernelTable& active_dpm_kernels() {
  switch (active_isa()) {
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx512: return kDpmAvx512Table;
    case Isa::kAvx2: return kDpmAvx2Table;
#endif
    default: return kDpmGenericTable;
  }
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
