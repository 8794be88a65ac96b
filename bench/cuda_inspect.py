"""Evidence about the CUDA kernels without a GPU: reads the built tigercore/_C*.so with cuobjdump.

For every kernel and SASS architecture: registers, stack and local memory (-res-usage), local-memory
instructions (LDL/STL: spills) and whether a loop holds 128-bit global loads and stores (LDG.E.128 /
STG.E.128, -sass). Prints a table; exits non-zero if an update kernel (update_kernel<lion|tiger, ...>)
spills, uses local memory or lacks 128-bit loads/stores in a loop, or if an expected architecture is
missing. cuobjdump comes from Triton (backends/nvidia/bin) or CUDA_HOME.
Usage: python bench/cuda_inspect.py [path/to/_C.so] [--expect sm_80,sm_90,compute_90] [--json]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPDATE_KERNELS = ("update_kernel",)
LDG128 = re.compile(r"\bLDG\.E(?:\.[A-Z0-9_]+)*\.128\b")
STG128 = re.compile(r"\bSTG\.E(?:\.[A-Z0-9_]+)*\.128\b")
LOCAL_MEM = re.compile(r"\b(?:LDL|STL)\b")
INSN = re.compile(r"^\s*(?:/\*([0-9a-f]{4,})\*/)\s+(.*?)\s*;")
BRANCH = re.compile(r"^(?:@!?U?P\w+\s+)?BRA(?:\.\w+)*\s+(?:`\(\.L_x_\d+\)|(?:!?U?P\w+,\s*)?0x([0-9a-f]+))")


@dataclass
class KernelArch:
    regs: int = -1
    stack: int = -1
    local: int = -1
    local_insns: int = 0
    ldg128_in_loop: bool = False
    stg128_in_loop: bool = False
    loops: int = 0


@dataclass
class Kernel:
    mangled: str
    name: str = ""
    archs: dict = field(default_factory=dict)  # arch -> KernelArch

    @property
    def is_update(self) -> bool:
        return any(k in self.mangled for k in UPDATE_KERNELS)


def find_cuobjdump() -> str:
    try:
        import triton  # noqa: PLC0415
        cand = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        if os.access(cand, os.X_OK):
            return cand
    except Exception:  # noqa: BLE001 - Triton is optional
        pass
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.access(os.path.join(home, "bin", "cuobjdump"), os.X_OK):
            return os.path.join(home, "bin", "cuobjdump")
    found = shutil.which("cuobjdump")
    if found:
        return found
    raise SystemExit("cuda_inspect: cuobjdump not found (install triton, or set CUDA_HOME to a toolkit that has it)")


def run(cmd: list) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cuda_inspect: {' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout


def parse_res_usage(text: str) -> dict:
    """{(arch, mangled): (regs, stack, local)} from `cuobjdump -res-usage`."""
    usage, arch, fn = {}, None, None
    for line in text.splitlines():
        m = re.match(r"\s*arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.match(r"\s*Function (\S+):\s*$", line)
        if m:
            fn = m.group(1)
            continue
        m = re.match(r"\s*REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", line)
        if m and fn and arch:
            usage[(arch, fn)] = tuple(int(x) for x in m.groups())
            fn = None
    return usage


def split_sass(text: str) -> dict:
    """{(arch, mangled): [instruction lines]} from `cuobjdump -sass`."""
    funcs, arch, fn = {}, None, None
    for line in text.splitlines():
        m = re.match(r"\s*arch = (sm_\w+)", line)
        if m:
            arch, fn = m.group(1), None
            continue
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            fn = (arch, m.group(1))
            funcs[fn] = []
            continue
        if fn is not None:
            funcs[fn].append(line)
    return funcs


def analyse_sass(lines: list) -> KernelArch:
    """Loops are the address ranges [target, branch] of backward branches."""
    insns = []
    for line in lines:
        m = INSN.match(line)
        if m:
            insns.append((int(m.group(1), 16), m.group(2)))
    k = KernelArch()
    k.local_insns = sum(1 for _, op in insns if LOCAL_MEM.search(op))
    loops = []
    for addr, op in insns:
        b = BRANCH.match(op)
        if b and b.group(1) is not None and int(b.group(1), 16) <= addr:
            loops.append((int(b.group(1), 16), addr))
    k.loops = len(loops)
    for lo, hi in loops:
        body = [op for a, op in insns if lo <= a <= hi]
        k.ldg128_in_loop |= any(LDG128.search(op) for op in body)
        k.stg128_in_loop |= any(STG128.search(op) for op in body)
    return k


_TYPES = {"(tigercore::Algo)0": "lion", "(tigercore::Algo)1": "tiger", "tigercore::bfloat16_t": "bf16", "tigercore::half_t": "f16", "float": "f32", "double": "f64",
          "(tigercore::Precision)0": "none", "(tigercore::Precision)1": "kahan",
          "(tigercore::Precision)2": "stochastic", "(tigercore::Precision)3": "master",
          "false": "param", "true": "master"}


def short_names(mangled: list) -> dict:
    """c++filt, then `kernel<arg, ...>` with short type names; the mangled name if c++filt is missing."""
    out = dict.fromkeys(mangled)
    tool = shutil.which("c++filt")
    if tool and mangled:
        demangled = subprocess.run([tool], input="\n".join(mangled), capture_output=True, text=True).stdout.splitlines()
        for m, d in zip(mangled, demangled):
            name = re.search(r"(\w+_kernel)(?:<(.*?)>)?\(", d)
            if name:
                args = [_TYPES.get(a.strip(), a.strip()) for a in (name.group(2) or "").split(",") if a.strip()]
                out[m] = name.group(1) + (f"<{', '.join(args)}>" if args else "")
    return {m: (n or m) for m, n in out.items()}


def inspect(so: str, cuobjdump: str) -> tuple:
    usage = parse_res_usage(run([cuobjdump, "-res-usage", so]))
    sass = split_sass(run([cuobjdump, "-sass", so]))
    listing = run([cuobjdump, "-lelf", "-lptx", so])
    elf_archs = sorted(set(re.findall(r"\.(sm_\d+a?)\.cubin", listing)))
    ptx_archs = sorted(set(re.findall(r"\.(sm_\d+a?)\.ptx", listing)))
    kernels = {}
    for (arch, fn), lines in sass.items():
        k = kernels.setdefault(fn, Kernel(fn))
        ka = analyse_sass(lines)
        ka.regs, ka.stack, ka.local = usage.get((arch, fn), (-1, -1, -1))
        k.archs[arch] = ka
    for m, n in short_names(list(kernels)).items():
        kernels[m].name = n
    return sorted(kernels.values(), key=lambda k: (not k.is_update, k.name)), elf_archs, ptx_archs


def problems_of(k: Kernel) -> list:
    out = []
    for arch, a in sorted(k.archs.items()):
        spills = a.stack > 0 or a.local > 0 or a.local_insns > 0
        if spills:
            out.append(f"{arch}: stack {a.stack} B, local {a.local} B, {a.local_insns} LDL/STL")
        if k.is_update and not (a.ldg128_in_loop and a.stg128_in_loop):
            out.append(f"{arch}: no 128-bit {'load' if not a.ldg128_in_loop else 'store'} in a loop")
    return out


def table(kernels: list, archs: list) -> str:
    head = ["kernel"] + [f"{a} regs/stack/local/LDL+STL/LDG128/STG128" for a in archs] + ["verdict"]
    rows = []
    for k in kernels:
        cells = [k.name]
        for arch in archs:
            a = k.archs.get(arch)
            cells.append("-" if a is None else
                         f"{a.regs:>3} / {a.stack} / {a.local} / {a.local_insns} / "
                         f"{'yes' if a.ldg128_in_loop else 'no '} / {'yes' if a.stg128_in_loop else 'no '}")
        probs = problems_of(k)
        cells.append(("FAIL: " if k.is_update else "warn: ") + "; ".join(probs) if probs else "ok")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("so", nargs="?", help="the extension (default: tigercore/_C*.so of this checkout)")
    ap.add_argument("--expect", default="", help="comma-separated archs that must be present, e.g. sm_80,sm_90,compute_90")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    so = args.so or next(iter(sorted(glob.glob(os.path.join(ROOT, "tigercore", "_C*.so")))), None)
    if not so or not os.path.exists(so):
        print("cuda_inspect: no built extension (tigercore/_C*.so); build it first", file=sys.stderr)
        return 2
    cuobjdump = find_cuobjdump()
    kernels, elf_archs, ptx_archs = inspect(so, cuobjdump)
    failures = [f"{k.name}: {p}" for k in kernels if k.is_update for p in problems_of(k)]
    updates = [k for k in kernels if k.is_update]
    if not updates:
        failures.append("no update kernels in the binary (was it built with CUDA?)")
    present = set(elf_archs) | {a.replace("sm_", "compute_") for a in ptx_archs}
    failures += [f"architecture {a} missing (SASS: {elf_archs}, PTX: {ptx_archs})"
                 for a in filter(None, args.expect.split(",")) if a not in present]
    if args.json:
        print(json.dumps({"so": so, "sass_archs": elf_archs, "ptx_archs": ptx_archs, "failures": failures,
                          "kernels": [{"name": k.name, "mangled": k.mangled, "update": k.is_update,
                                       "archs": {a: vars(v) for a, v in k.archs.items()}} for k in kernels]}, indent=1))
    else:
        print(f"cuda_inspect: {os.path.relpath(so, ROOT)}  (cuobjdump: {cuobjdump})")
        print(f"SASS: {', '.join(elf_archs) or 'none'};  PTX: {', '.join(ptx_archs) or 'none'};  "
              f"{len(kernels)} kernels, {len(updates)} update kernels")
        print(table(kernels, elf_archs))
        n_spill = sum(1 for k in kernels for a in k.archs.values() if a.stack or a.local or a.local_insns)
        print(f"summary: {len(kernels)} kernels x {len(elf_archs)} archs; {n_spill} (kernel, arch) with stack/local "
              f"memory; update kernels with 128-bit loads and stores in a loop on every arch: "
              f"{sum(1 for k in updates if all(a.ldg128_in_loop and a.stg128_in_loop for a in k.archs.values()))}"
              f"/{len(updates)}")
    for f in failures:
        print(f"cuda_inspect: FAIL {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
