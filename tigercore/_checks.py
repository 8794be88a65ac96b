"""Input checks of the step ops, in Python: the reference kernels run them, and the optimizers run
them for every batch of a step before any kernel runs (all or nothing). The native entries make
the same checks in C++ (csrc/host/step_plan.cpp); messages name the op, the list, the index and
what was expected. Semantics: docs/semantics.md.
"""
from __future__ import annotations

import math
import numbers

import torch

PARAM_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)
PRECISIONS = ("none", "kahan", "stochastic", "master")
TIGER_CLASSES = ("K", "E", "V")
MAX_ACCUM = 2**31  # grad_accum_steps < 2^31: the CUDA kernels test the phase in 32 bits


def _fail(op: str, msg: str):
    raise RuntimeError(f"tigercore::{op}: {msg}")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise RuntimeError(
            f"tigercore: precision must be one of 'none', 'kahan', 'stochastic', 'master', got '{precision}'")


def check_lr_tensor(op, lr, device):
    """lr: a one-element float64 tensor on the parameters' device or on the CPU."""
    if not isinstance(lr, torch.Tensor) or lr.numel() != 1 or lr.dtype != torch.float64:
        _fail(op, "lr must be a one-element float64 tensor")
    if device is not None and lr.device != device and lr.device.type != "cpu":
        _fail(op, f"lr must be on {device} or on the CPU, got {lr.device}")


def check_step_inputs(op, params, grads, exp_avgs, aux, steps, stamps, param_ids, precision, grad_scale,
                      found_inf, lr):
    check_precision(precision)
    n = len(params)
    if not (len(grads) == len(exp_avgs) == len(steps) == n):
        _fail(op, f"params, grads, exp_avgs and steps must have the same length, got "
                  f"{n}, {len(grads)}, {len(exp_avgs)}, {len(steps)}")
    if len(aux) not in (0, n):
        _fail(op, f"aux must be empty or have one tensor per param, got {len(aux)} for {n} params")
    if len(param_ids) != n:
        _fail(op, f"param_ids must have one entry per param, got {len(param_ids)} for {n} params")
    device = check_tensors(op, params, aux, precision)
    check_stamps(op, stamps, params)
    for i, (p, g, m, s) in enumerate(zip(params, grads, exp_avgs, steps)):
        if g.layout != torch.strided:
            _fail(op, f"grads[{i}] is sparse; sparse gradients are not supported")
        if g.is_complex():
            _fail(op, f"grads[{i}] is complex; complex parameters are not supported")
        if g.dtype != p.dtype:
            _fail(op, f"grads[{i}] has dtype {g.dtype} but params[{i}] has dtype {p.dtype}")
        if g.device != p.device or m.device != p.device:
            _fail(op, f"grads[{i}] and exp_avgs[{i}] must be on {p.device}")
        if g.shape != p.shape:
            _fail(op, f"grads[{i}] has shape {list(g.shape)} but params[{i}] has shape {list(p.shape)}")
        if m.shape != p.shape:
            _fail(op, f"exp_avgs[{i}] has shape {list(m.shape)} but params[{i}] has shape {list(p.shape)}")
        if m.dtype == torch.uint8:
            pass  # 8-bit momentum codes: check_absmax checks their absmax
        elif p.dtype == torch.float64:
            if m.dtype != torch.float64:
                _fail(op, f"exp_avgs[{i}] must be float64 (or uint8 8-bit codes) for float64 params, got {m.dtype}")
        elif m.dtype not in (torch.float32,) + HALF_DTYPES:
            _fail(op, f"exp_avgs[{i}] must be float32, float16, bfloat16 or uint8 (8-bit codes), got {m.dtype}")
        if s.dtype != torch.int64 or s.numel() != 1 or s.device != p.device:
            _fail(op, f"steps[{i}] must be a one-element int64 tensor on {p.device}")
    for name, t in (("grad_scale", grad_scale), ("found_inf", found_inf)):
        if t is not None and n > 0 and (t.numel() != 1 or not t.is_floating_point() or t.device != device):
            _fail(op, f"{name} must be a one-element floating tensor on {device}")
    check_lr_tensor(op, lr, device)
    return device


def check_absmax(op, exp_avg_absmax, exp_avgs, params):
    """[note: 8-bit momentum] A uint8 momentum needs its float32 block absmax: one contiguous
    tensor of ceil(numel / 256) values per param (the list is empty when no momentum is 8-bit)."""
    if exp_avg_absmax and len(exp_avg_absmax) != len(params):
        _fail(op, f"exp_avg_absmax must be empty or have one tensor per param, got {len(exp_avg_absmax)} for "
                  f"{len(params)} params")
    for i, (p, m) in enumerate(zip(params, exp_avgs)):
        if m.dtype != torch.uint8:
            continue
        if not exp_avg_absmax:
            _fail(op, f"exp_avgs[{i}] is uint8 (8-bit momentum codes) but exp_avg_absmax is empty; pass one "
                      f"float32 tensor of block absmax values per param")
        a = exp_avg_absmax[i]
        blocks = (p.numel() + 255) // 256
        if a.dtype != torch.float32 or a.numel() != blocks or a.device != p.device or not a.is_contiguous():
            _fail(op, f"exp_avg_absmax[{i}] must be a contiguous float32 tensor of {blocks} block absmax value(s) "
                      f"(one per 256 elements) on {p.device}")


def check_tensors(op, params, aux, precision):
    """params dense, of a supported dtype, on one device; aux as the precision mode needs."""
    device = None
    for i, p in enumerate(params):
        if p.layout != torch.strided:
            _fail(op, f"params[{i}] must be dense (strided)")
        if p.dtype not in PARAM_DTYPES:
            _fail(op, f"params[{i}] has dtype {p.dtype}; supported: float32, float64, float16, bfloat16")
        if device is None:
            device = p.device
        if p.device != device:
            _fail(op, f"all params must be on one device, got {device} and {p.device} (index {i})")
        if p.dtype in HALF_DTYPES and precision in ("kahan", "master"):
            if not aux:
                _fail(op, f"precision '{precision}' needs one aux tensor per param")
            a = aux[i]
            want = p.dtype if precision == "kahan" else torch.float32
            if a.dtype != want or a.shape != p.shape or a.device != p.device:
                name = "kahan_comp" if precision == "kahan" else "master_param"
                _fail(op, f"aux[{i}] must be a contiguous {want} tensor of shape {list(p.shape)} on {p.device} ({name})")
    return device


def check_stamps(op, stamps, params):
    if len(stamps) not in (0, len(params)):
        _fail(op, f"stamps must be empty or have one tensor per param, got {len(stamps)} for {len(params)} params")
    for i, s in enumerate(stamps):
        if s.dtype != torch.int64 or s.numel() != 2 or s.device.type != "cpu":
            _fail(op, f"stamps[{i}] must be a two-element int64 CPU tensor (version counter, storage address)")


def check_elem_offsets(op, elem_offsets, params):
    """Empty, or per param the flat offset (>= 0) of its first element in the logical tensor."""
    if len(elem_offsets) not in (0, len(params)):
        _fail(op, f"elem_offsets must be empty or have one entry per param, got {len(elem_offsets)} for "
                  f"{len(params)} params")
    for i, off in enumerate(elem_offsets):
        if int(off) < 0:
            _fail(op, f"elem_offsets[{i}] must be >= 0, got {off}")


def check_sumsq(op, sumsq, params, tiger_class):
    if len(sumsq) not in (0, len(params)):
        _fail(op, f"sumsq must be empty or have one tensor per param, got {len(sumsq)} for {len(params)} params")
    for i, (s, p) in enumerate(zip(sumsq, params)):
        rows = rms_rows(p, tiger_class)
        if s.dtype != torch.float64 or s.numel() != rows or s.device != p.device or not s.is_contiguous():
            _fail(op, f"sumsq[{i}] must be a contiguous float64 tensor of {rows} element(s) on {p.device}")


def rms_rows(p: torch.Tensor, tiger_class: str) -> int:
    """Rows over which Tiger takes an RMS: 1 (K, V) or one per slice of the last dimension (E)."""
    if tiger_class != "E" or p.dim() == 0:
        return 1
    return math.prod(p.shape[:-1])


def check_lion_hyper(beta1, beta2, weight_decay):
    if not (0 <= beta1 <= 1 and 0 <= beta2 <= 1):
        _fail("lion_step_", f"betas must lie in [0, 1], got ({beta1}, {beta2})")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        _fail("lion_step_", f"weight_decay must be finite and >= 0, got {weight_decay}")


def check_tiger_hyper(beta, weight_decay, grad_accum_steps, tiger_class, shrink_ratio, shrink_center, rms_floor):
    if tiger_class not in TIGER_CLASSES:
        raise RuntimeError(f"tigercore: tiger_class must be 'K', 'E' or 'V', got '{tiger_class}'")
    if not (0 <= beta <= 1):
        _fail("tiger_step_", f"beta must lie in [0, 1], got {beta}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        _fail("tiger_step_", f"weight_decay must be finite and >= 0, got {weight_decay}")
    if not 1 <= grad_accum_steps < MAX_ACCUM:
        _fail("tiger_step_", f"grad_accum_steps must lie in [1, 2^31), got {grad_accum_steps}")
    if not 0 < shrink_ratio <= 1:
        _fail("tiger_step_", f"shrink_ratio must lie in (0, 1], got {shrink_ratio}")
    if not math.isfinite(shrink_center):
        _fail("tiger_step_", f"shrink_center must be finite, got {shrink_center}")
    if not (math.isfinite(rms_floor) and rms_floor >= 0):
        _fail("tiger_step_", f"rms_floor must be finite and >= 0, got {rms_floor}")


def check_scalar_values(op, lr, grad_scale):
    """Values of the scalar tensors, where reading them costs no device synchronisation (CPU)."""
    if lr.device.type == "cpu":
        v = float(lr.reshape(()))
        if not (math.isfinite(v) and v >= 0):
            _fail(op, f"lr must be finite and >= 0, got {v}")
    if grad_scale is not None and grad_scale.device.type == "cpu":
        v = float(grad_scale.reshape(()))
        if not (math.isfinite(v) and v > 0):
            _fail(op, f"grad_scale must be finite and > 0, got {v}")


# ---- the optimizers' own hyperparameter checks (ValueError, at construction and every step) ----
def is_real_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def validate_lr(lr, name="learning rate"):
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError(f"Invalid {name}: a tensor learning rate must be a one-element floating tensor, got "
                             f"shape {list(lr.shape)} and dtype {lr.dtype}")
        if lr.device.type == "cpu" and not torch.compiler.is_compiling():
            value = float(lr.reshape(()))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Invalid {name}: {value} (must be finite and >= 0)")
        return
    if not is_real_number(lr):
        raise ValueError(f"Invalid {name}: {lr!r} (a real number or a one-element floating tensor)")
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"Invalid {name}: {lr} (must be finite and >= 0)")


def validate_real(value, name, low=None, high=None, low_open=False, high_open=False):
    if not is_real_number(value):
        raise ValueError(f"Invalid {name}: {value!r} (a real number)")
    v = float(value)
    ok = math.isfinite(v)
    if low is not None:
        ok &= v > low if low_open else v >= low
    if high is not None:
        ok &= v < high if high_open else v <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        rng = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"Invalid {name}: {value} (must be finite and lie in {rng})")
