// dtype.h — the storage dtypes of the kernels (no torch headers), shared by the step kernels
// (step_desc.h, kernel_key.h) and the Analytic-DPM kernels (dpm_math.h). The host code maps
// at::ScalarType to these and rejects every other dtype before a kernel runs. kCode8 is not a
// number format but the 8-bit momentum storage: uint8 codes with a float32 absmax per block
// (momentum8.h); only a momentum can have it.
#pragma once
#include "tigercore/macros.h"

namespace tigercore {

enum class DType : int32_t { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3, kCode8 = 4 };

TC_FN const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kCode8: return "8-bit codes";
  }
  return "invalid";
}

}  // namespace tigercore
