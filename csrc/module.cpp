// module.cpp — the tigercore._C Python module: a stub whose import loads the shared library (and
// with it every TORCH_LIBRARY_IMPL registration), plus build_info(), which tells what was compiled.
// Ops themselves are declared in Python (tigercore/_ops.py) and reached through torch.ops.tigercore.
#include <Python.h>

#include <string>

#include "cpu/kernel_table.h"
#include "generated/build_config.h"

#ifndef TIGERCORE_CUDA_ARCHS
#define TIGERCORE_CUDA_ARCHS ""
#endif
#ifndef TIGERCORE_CUDA_VERSION
#define TIGERCORE_CUDA_VERSION ""
#endif
#ifndef TIGERCORE_TORCH_VERSION
#define TIGERCORE_TORCH_VERSION ""
#endif

namespace {

std::string json_str(const char* s) { return std::string("\"") + s + "\""; }

PyObject* build_info(PyObject*, PyObject*) {
  using namespace tigercore::cpu;
#if defined(TIGERCORE_WITH_CUDA)
  const char* with_cuda = "true";
#else
  const char* with_cuda = "false";
#endif
  const std::string json = std::string("{") +
      "\"cpu_isas_compiled\": " + json_str(compiled_isas()) + ", " +
      "\"cpu_isas_supported\": " + json_str(cpu_supported_isas()) + ", " +
      "\"cpu_isa_active\": " + json_str(active_kernels().isa) + ", " +
      "\"cuda\": " + with_cuda + ", " +
      "\"cuda_archs\": " + json_str(TIGERCORE_CUDA_ARCHS) + ", " +
      "\"cuda_version\": " + json_str(TIGERCORE_CUDA_VERSION) + ", " +
      "\"torch_version\": " + json_str(TIGERCORE_TORCH_VERSION) + ", " +
      "\"compiler\": " + json_str(__VERSION__) + "}";
  return PyUnicode_FromString(json.c_str());
}

PyMethodDef kMethods[] = {
    {"build_info", build_info, METH_NOARGS, "JSON string describing the compiled kernels."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_C", "tigercore native kernels", -1, kMethods,
                       nullptr, nullptr, nullptr, nullptr};

}  // namespace

extern "C" PyObject* PyInit__C(void) { return PyModule_Create(&kModule); }
