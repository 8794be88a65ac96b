"""Input checks of lion_step_ / tiger_step_ for the reference kernel (mirror of csrc/step_common.h).

Every check runs before anything is modified. Messages follow the C++ ones: op, list, index, what
was expected.
"""
from __future__ import annotations

import math

import torch

PARAM_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)
PRECISIONS = ("none", "kahan", "stochastic", "master")
TIGER_CLASSES = ("K", "E", "V")


def _fail(op: str, msg: str):
    raise RuntimeError(f"tigercore::{op}: {msg}")


def check_step_inputs(op, params, grads, exp_avgs, aux, steps, param_ids, precision, grad_scale, found_inf):
    if precision not in PRECISIONS:
        raise RuntimeError(
            f"tigercore: precision must be one of 'none', 'kahan', 'stochastic', 'master', got '{precision}'")
    n = len(params)
    if not (len(grads) == len(exp_avgs) == len(steps) == n):
        _fail(op, f"params, grads, exp_avgs and steps must have the same length, got "
                  f"{n}, {len(grads)}, {len(exp_avgs)}, {len(steps)}")
    if len(aux) not in (0, n):
        _fail(op, f"aux must be empty or have one tensor per param, got {len(aux)} for {n} params")
    if len(param_ids) != n:
        _fail(op, f"param_ids must have one entry per param, got {len(param_ids)} for {n} params")
    device = None
    for i, (p, g, m, s) in enumerate(zip(params, grads, exp_avgs, steps)):
        if p.layout != torch.strided:
            _fail(op, f"params[{i}] must be dense (strided)")
        if g.layout != torch.strided:
            _fail(op, f"grads[{i}] is sparse; sparse gradients are not supported")
        if p.dtype not in PARAM_DTYPES:
            _fail(op, f"params[{i}] has dtype {p.dtype}; supported: float32, float64, float16, bfloat16")
        if g.is_complex():
            _fail(op, f"grads[{i}] is complex; complex parameters are not supported")
        if g.dtype != p.dtype:
            _fail(op, f"grads[{i}] has dtype {g.dtype} but params[{i}] has dtype {p.dtype}")
        if device is None:
            device = p.device
        if p.device != device:
            _fail(op, f"all params must be on one device, got {device} and {p.device} (index {i})")
        if g.device != p.device or m.device != p.device:
            _fail(op, f"grads[{i}] and exp_avgs[{i}] must be on {p.device}")
        if g.shape != p.shape:
            _fail(op, f"grads[{i}] has shape {list(g.shape)} but params[{i}] has shape {list(p.shape)}")
        if m.shape != p.shape:
            _fail(op, f"exp_avgs[{i}] has shape {list(m.shape)} but params[{i}] has shape {list(p.shape)}")
        if p.dtype == torch.float64:
            if m.dtype != torch.float64:
                _fail(op, f"exp_avgs[{i}] must be float64 for float64 params, got {m.dtype}")
        elif m.dtype not in (torch.float32,) + HALF_DTYPES:
            _fail(op, f"exp_avgs[{i}] must be float32, float16 or bfloat16, got {m.dtype}")
        if s.dtype != torch.int64 or s.numel() != 1 or s.device != p.device:
            _fail(op, f"steps[{i}] must be a one-element int64 tensor on {p.device}")
        if p.dtype in HALF_DTYPES and precision in ("kahan", "master"):
            if not aux:
                _fail(op, f"precision '{precision}' needs one aux tensor per param")
            a = aux[i]
            want = p.dtype if precision == "kahan" else torch.float32
            if a.dtype != want or a.shape != p.shape or a.device != p.device:
                name = "kahan_comp" if precision == "kahan" else "master_param"
                _fail(op, f"aux[{i}] must be a contiguous {want} tensor of shape {list(p.shape)} on {p.device} ({name})")
    for name, t in (("grad_scale", grad_scale), ("found_inf", found_inf)):
        if t is not None and n > 0 and (t.numel() != 1 or not t.is_floating_point() or t.device != device):
            _fail(op, f"{name} must be a one-element floating tensor on {device}")


def check_lion_hyper(lr, beta1, beta2, weight_decay):
    if not (math.isfinite(lr) and lr >= 0):
        _fail("lion_step_", f"lr must be finite and >= 0, got {lr}")
    if not (0 <= beta1 <= 1 and 0 <= beta2 <= 1):
        _fail("lion_step_", f"betas must lie in [0, 1], got ({beta1}, {beta2})")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        _fail("lion_step_", f"weight_decay must be finite and >= 0, got {weight_decay}")


def check_tiger_hyper(lr, beta, weight_decay, grad_accum_steps, tiger_class, shrink_ratio, rms_floor):
    if tiger_class not in TIGER_CLASSES:
        raise RuntimeError(f"tigercore: tiger_class must be 'K', 'E' or 'V', got '{tiger_class}'")
    if not (math.isfinite(lr) and lr >= 0):
        _fail("tiger_step_", f"lr must be finite and >= 0, got {lr}")
    if not (0 <= beta <= 1):
        _fail("tiger_step_", f"beta must lie in [0, 1], got {beta}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        _fail("tiger_step_", f"weight_decay must be finite and >= 0, got {weight_decay}")
    if grad_accum_steps < 1:
        _fail("tiger_step_", f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
    if not math.isfinite(shrink_ratio):
        _fail("tiger_step_", f"shrink_ratio must be finite, got {shrink_ratio}")
    if not (math.isfinite(rms_floor) and rms_floor >= 0):
        _fail("tiger_step_", f"rms_floor must be finite and >= 0, got {rms_floor}")
