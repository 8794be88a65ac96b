"""bench/cuda_inspect.py's parsers on canned cuobjdump output: registers/stack/local per kernel and
arch, loops from backward branches, 128-bit loads/stores inside a loop, LDL/STL as spills, and the
verdict for update kernels (the script itself runs on the built library in CI, .ci/run)."""
import importlib.util
import os
import sys

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "cuda_inspect.py")
_spec = importlib.util.spec_from_file_location("cuda_inspect", _PATH)
ci = importlib.util.module_from_spec(_spec)
sys.modules["cuda_inspect"] = ci  # dataclasses look their module up
_spec.loader.exec_module(ci)

RES_USAGE = """
Fatbin elf code:
================
arch = sm_80
Resource usage:
 Common:
  GLOBAL:28 CONSTANT[4]:224
 Function _Z13update_kernelv:
  REG:46 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:3912 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _Z17tiger_rows_kernelv:
  REG:54 STACK:8 SHARED:0 LOCAL:4 CONSTANT[0]:3912 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

SASS = """
	code for sm_80
		Function : _Z13update_kernelv
	.headerflags	@"EF_CUDA_SM80 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM80)"
        /*0000*/                   MOV R1, c[0x0][0x28] ;                  /* 0x00000a0000017a02 */
        /*0010*/               @P0 EXIT ;                                  /* 0x000000000000094d */
        /*0020*/                   LDG.E.128 R8, [R2.64] ;                 /* 0x0000000402087981 */
        /*0030*/                   FFMA R0, R8, R9, R10 ;                  /* 0x0000000908007223 */
        /*0040*/                   STG.E.128 [R2.64], R8 ;                 /* 0x0000000802007986 */
        /*0050*/              @!P1 BRA 0x20 ;                              /* 0xfffffffc00d49947 */
        /*0060*/                   EXIT ;                                  /* 0x000000000000794d */
		Function : _Z17tiger_rows_kernelv
        /*0000*/                   LDG.E.128 R8, [R2.64] ;                 /* 0x0000000402087981 */
        /*0010*/                   STL [R1], R8 ;                          /* 0x0000000801007387 */
        /*0020*/                   BRA 0x40 ;                              /* 0x0000000000047947 */
        /*0030*/                   LDL R8, [R1] ;                          /* 0x0000000001087983 */
        /*0040*/                   EXIT ;                                  /* 0x000000000000794d */
"""


def test_res_usage_is_parsed_per_arch_and_kernel():
    u = ci.parse_res_usage(RES_USAGE)
    assert u[("sm_80", "_Z13update_kernelv")] == (46, 0, 0)
    assert u[("sm_80", "_Z17tiger_rows_kernelv")] == (54, 8, 4)


def test_loops_vector_accesses_and_spills_from_sass():
    funcs = ci.split_sass(SASS.replace("code for sm_80", "arch = sm_80"))
    lion = ci.analyse_sass(funcs[("sm_80", "_Z13update_kernelv")])
    assert lion.loops == 1 and lion.ldg128_in_loop and lion.stg128_in_loop and lion.local_insns == 0
    rows = ci.analyse_sass(funcs[("sm_80", "_Z17tiger_rows_kernelv")])
    assert rows.loops == 0 and not rows.ldg128_in_loop and rows.local_insns == 2  # a forward branch is no loop


@pytest.mark.parametrize("insn, loop_to", [("@!P1 BRA 0x20", 0x20), ("BRA 0x20", 0x20), ("@P0 BRA P1, 0x20", 0x20),
                                           ("BRA.U 0x10", 0x10), ("@!UP0 BRA 0x0", 0x0)])
def test_branch_forms(insn, loop_to):
    m = ci.BRANCH.match(insn)
    assert m and int(m.group(1), 16) == loop_to


def test_verdicts():
    ok = ci.Kernel("_Z13update_kernelv", "lion", {"sm_90": ci.KernelArch(40, 0, 0, 0, True, True, 2)})
    no_vec = ci.Kernel("_Z13update_kernelv", "tiger", {"sm_90": ci.KernelArch(40, 0, 0, 0, False, True, 2)})
    spill = ci.Kernel("_Z13update_kernelv", "lion", {"sm_80": ci.KernelArch(40, 8, 0, 3, True, True, 2)})
    other = ci.Kernel("_Z17tiger_rows_kernelv", "rows", {"sm_80": ci.KernelArch(54, 0, 0, 0, False, False, 0)})
    assert ci.problems_of(ok) == [] and ci.problems_of(other) == []
    assert "no 128-bit load" in ci.problems_of(no_vec)[0]
    assert "stack 8 B" in ci.problems_of(spill)[0]
    assert ok.is_update and not other.is_update
