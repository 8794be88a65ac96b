"""`tigercore info [--json]`: versions, the native extension's build (CPU instruction sets, CUDA
archs), and which kernel serves each tigercore:: op on each device.

"native" in the op table means a compiled kernel is registered with the dispatcher for that
device type; otherwise the pure-PyTorch reference kernel (tigercore/_ops.py) runs.
"""
from __future__ import annotations

import json
import os

import torch

import tigercore
from tigercore import _native, _ops

from . import arg, command

DEVICES = ("cpu", "cuda")


def _split(value) -> list[str]:
    return [s for s in (value or "").replace(";", ",").split(",") if s]


def op_names() -> list[str]:
    """tigercore._ops.OPS first, then any other tigercore:: op the dispatcher knows."""
    known = [n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("tigercore::")]
    return list(_ops.OPS) + sorted(set(known) - set(_ops.OPS))


def collect() -> dict:
    b = tigercore.build_info()
    cuda_ok = torch.cuda.is_available()
    return {
        "tigercore_version": tigercore.__version__,
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "native": {
            "loaded": b["native_loaded"],
            "error": b["native_error"],
            "built_with_torch": b.get("torch_version"),
            "compiler": b.get("compiler"),
        },
        "cpu": {
            "isas_compiled": _split(b.get("cpu_isas_compiled")),
            "isas_supported": _split(b.get("cpu_isas_supported")),
            "isa_active": b.get("cpu_isa_active"),
            "isa_env": os.environ.get("TIGERCORE_CPU_ISA") or None,
        },
        "cuda": {
            "kernels_compiled": bool(b.get("cuda", False)),
            "archs": _split(b.get("cuda_archs")),
            "built_with_cuda": b.get("cuda_version") or None,
            "device_available": cuda_ok,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count() if cuda_ok else 0)],
        },
        "ops": {op: {dev: _native.has_native(op, dev) for dev in DEVICES} for op in op_names()},
    }


def _text(info: dict) -> str:
    nat, cpu, cuda = info["native"], info["cpu"], info["cuda"]
    if nat["loaded"]:
        native = f"loaded (built with torch {nat['built_with_torch']}, compiler {nat['compiler']})"
    else:
        native = f"NOT loaded: {nat['error']}"
    env = f"TIGERCORE_CPU_ISA={cpu['isa_env']}" if cpu["isa_env"] else "TIGERCORE_CPU_ISA unset"
    if not nat["loaded"]:
        kernels = "unknown (extension not loaded)"
    elif cuda["kernels_compiled"]:
        kernels = f"compiled for archs {', '.join(cuda['archs'])} (CUDA {cuda['built_with_cuda']})"
    else:
        kernels = "not compiled (CPU-only build)"
    devices = ", ".join(cuda["devices"]) if cuda["device_available"] else "none"
    lines = [
        f"tigercore         {info['tigercore_version']}",
        f"torch             {info['torch_version']} (CUDA {info['torch_cuda_version'] or 'none'})",
        f"native extension  {native}",
        f"CPU ISAs          compiled: {', '.join(cpu['isas_compiled']) or '-'}; "
        f"supported: {', '.join(cpu['isas_supported']) or '-'}; active: {cpu['isa_active'] or '-'} ({env})",
        f"CUDA kernels      {kernels}",
        f"CUDA devices      {devices}",
        "",
        f"{'op':<16}" + "".join(f"{dev:<11}" for dev in DEVICES),
    ]
    for op, per_dev in info["ops"].items():
        lines.append(f"{op:<16}" + "".join(f"{'native' if per_dev[d] else 'reference':<11}" for d in DEVICES))
    return "\n".join(line.rstrip() for line in lines)


@command("info", "show versions, the native build and which kernel serves each op",
         arg("--json", action="store_true", help="print the same information as JSON"))
def info(args) -> int:
    data = collect()
    print(json.dumps(data, indent=2) if args.json else _text(data))
    return 0
