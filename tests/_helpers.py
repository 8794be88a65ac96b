"""Small helpers for calling the step ops directly on explicit tensors."""
from __future__ import annotations

import torch

from tigercore.reference import optim as ref


def step_fns(backend: str):
    """(lion_step_, tiger_step_) of a backend: the dispatcher ops (native when registered) or the
    reference functions called directly."""
    if backend == "reference":
        return ref.lion_step_, ref.tiger_step_
    return torch.ops.tigercore.lion_step_, torch.ops.tigercore.tiger_step_


def steps_like(params, value=0):
    return [torch.full((), value, dtype=torch.int64, device=p.device) for p in params]


def lr_tensor(lr):
    """The ops take lr as a one-element float64 tensor ([note: tensor lr])."""
    return lr if isinstance(lr, torch.Tensor) else torch.tensor(float(lr), dtype=torch.float64)


def lion(backend, params, grads, moms, *, lr, betas=(0.9, 0.99), wd=0.0, steps=None, aux=(), stamps=(),
         precision="none", seed=0, maximize=False, grad_scale=None, found_inf=None, param_ids=None, elem_offsets=(),
         absmax=()):
    fn = step_fns(backend)[0]
    steps = steps if steps is not None else steps_like(params)
    fn(list(params), list(grads), list(moms), list(aux), steps, list(stamps), list(absmax), lr=lr_tensor(lr), beta1=betas[0],
       beta2=betas[1], weight_decay=wd, maximize=maximize, precision=precision, seed=seed,
       param_ids=list(param_ids if param_ids is not None else range(len(params))),
       grad_scale=grad_scale, found_inf=found_inf, elem_offsets=list(elem_offsets))
    return steps


def tiger(backend, params, grads, moms, *, lr, beta=0.965, wd=0.01, k=1, cls="K", shrink=0.99,
          centre=0.0, guard=True, rms_floor=0.0, steps=None, aux=(), stamps=(), sumsq=(), precision="none", seed=0,
          maximize=False, grad_scale=None, found_inf=None, param_ids=None, eta=None, nonfinite=None, elem_offsets=(),
          absmax=()):
    fn = step_fns(backend)[1]
    steps = steps if steps is not None else steps_like(params)
    fn(list(params), list(grads), list(moms), list(aux), steps, list(stamps), list(sumsq), list(absmax),
       lr=lr_tensor(lr), beta=beta,
       weight_decay=wd, grad_accum_steps=k, tiger_class=cls, shrink_ratio=shrink, shrink_center=centre,
       nonfinite_guard=guard, rms_floor=rms_floor, maximize=maximize, precision=precision, seed=seed,
       param_ids=list(param_ids if param_ids is not None else range(len(params))),
       grad_scale=grad_scale, found_inf=found_inf, eta=eta, nonfinite=nonfinite, elem_offsets=list(elem_offsets))
    return steps
