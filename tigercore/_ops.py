"""The op table: schemas, fake (meta) implementations and the pure-PyTorch default kernels.
The Lion/Tiger ops are declared here, the Analytic-DPM ops in tigercore/dpm/_ops.py; what every
argument means is written down in docs/semantics.md ("The step ops").

Declared here so that every op exists without the compiled extension. Native kernels are
registered in C++ (TORCH_LIBRARY_IMPL(tigercore, CPU|CUDA)) and, being more specific than the
"default" (CompositeExplicitAutograd) kernel registered here, win once tigercore._C is loaded.
"""
from __future__ import annotations

import torch

from .reference import optim as _ref_optim

_LIB = torch.library.Library("tigercore", "FRAGMENT")

# Must match the C++ entry signatures (csrc/cpu/optim_ops.cpp, csrc/cuda/optim_step.cu).
_LISTS = ("Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, Tensor(d!)[] aux, "
          "Tensor(e!)[] steps, Tensor(f!)[] stamps")
_TAIL = ("bool maximize, str precision, int seed, int[] param_ids, Tensor? grad_scale=None, "
         "Tensor? found_inf=None, bool compiled=False")

SCHEMAS = {
    "lion_step_": f"({_LISTS}, Tensor(g!)[] exp_avg_absmax, *, Tensor lr, float beta1, float beta2, float weight_decay, {_TAIL}, "
                  f"int[] elem_offsets=[], bool cautious=False) -> ()",
    "tiger_step_": f"({_LISTS}, Tensor(g!)[] sumsq, Tensor(h!)[] exp_avg_absmax, *, Tensor lr, float beta, float weight_decay, "
                   f"int grad_accum_steps, str tiger_class, float shrink_ratio, float shrink_center, "
                   f"bool nonfinite_guard, float rms_floor, {_TAIL}, Tensor? eta=None, "
                   f"Tensor? nonfinite=None, int[] elem_offsets=[], bool cautious=False) -> ()",
    "sync_external_writes_": "(Tensor[] params, Tensor(a!)[] aux, Tensor(b!)[] stamps, Tensor(c!)[] sumsq, *, "
                             "str precision, bool compiled=False) -> ()",
    "tiger_stats": "(Tensor[] params, Tensor[] grads, Tensor[] aux, Tensor[] sumsq, *, str tiger_class, "
                   "str precision, Tensor? grad_scale=None) -> (Tensor, Tensor)",
}

_DEFAULT_KERNELS = {name: getattr(_ref_optim, name) for name in SCHEMAS}


def _fake_inplace(*args, **kwargs):
    return None  # in-place ops return (); nothing to allocate


def _fake_tiger_stats(params, grads, aux, sumsq, *, tiger_class, precision, grad_scale=None):
    rows = sum(_ref_optim.rms_rows(p, tiger_class) for p in params)
    device = params[0].device if params else torch.device("cpu")
    return (torch.empty(rows, dtype=torch.float64, device=device),
            torch.empty(len(params), dtype=torch.bool, device=device))


_FAKES = {"tiger_stats": _fake_tiger_stats}

for _name, _schema in SCHEMAS.items():
    _LIB.define(_name + _schema)
    _LIB.impl(_name, _DEFAULT_KERNELS[_name], "CompositeExplicitAutograd")
    torch.library.register_fake(f"tigercore::{_name}", _FAKES.get(_name, _fake_inplace), lib=_LIB)

from .dpm import _ops as _dpm_ops  # noqa: E402  (eps_stats, segment_moments, minplus_dp)

OPS = tuple(SCHEMAS) + _dpm_ops.OPS
