"""The op table: schemas, fake (meta) implementations and the pure-PyTorch default kernels.
The Lion/Tiger ops are declared here, the Analytic-DPM ops in tigercore/dpm/_ops.py.

Declared here so that every op exists without the compiled extension. Native kernels are
registered in C++ (TORCH_LIBRARY_IMPL(tigercore, CPU|CUDA)) and, being more specific than the
"default" (CompositeExplicitAutograd) kernel registered here, win once tigercore._C is loaded.
"""
from __future__ import annotations

import torch

from .reference import optim as _ref_optim

_LIB = torch.library.Library("tigercore", "FRAGMENT")

# Must match the C++ signatures in csrc/cpu/optim_ops.cpp and csrc/cuda/optim_step.cu.
_LISTS = ("Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, Tensor(d!)[] aux, "
          "Tensor(e!)[] steps")
_TAIL = ("bool maximize, str precision, int seed, int[] param_ids, Tensor? grad_scale=None, "
         "Tensor? found_inf=None")

SCHEMAS = {
    "lion_step_": f"({_LISTS}, *, float lr, float beta1, float beta2, float weight_decay, {_TAIL}) -> ()",
    "tiger_step_": f"({_LISTS}, Tensor(f!)[] rms_cache, *, float lr, float beta, float weight_decay, "
                   f"int grad_accum_steps, str tiger_class, float shrink_ratio, float shrink_center, "
                   f"bool nonfinite_guard, float rms_floor, {_TAIL}) -> ()",
}

_DEFAULT_KERNELS = {"lion_step_": _ref_optim.lion_step_, "tiger_step_": _ref_optim.tiger_step_}


def _fake_inplace(*args, **kwargs):
    return None  # in-place ops return (); nothing to allocate


for _name, _schema in SCHEMAS.items():
    _LIB.define(_name + _schema)
    _LIB.impl(_name, _DEFAULT_KERNELS[_name], "CompositeExplicitAutograd")
    torch.library.register_fake(f"tigercore::{_name}", _fake_inplace, lib=_LIB)

from .dpm import _ops as _dpm_ops  # noqa: E402  (eps_stats, segment_moments, minplus_dp)

OPS = tuple(SCHEMAS) + _dpm_ops.OPS
