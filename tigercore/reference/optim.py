"""Pure-PyTorch reference of tigercore::lion_step_ and tigercore::tiger_step_ (any device).

It is registered as the ops' "default" kernel (tigercore/_ops.py), so the package works without
the compiled extension, and it is the oracle the native kernels are tested against. It computes
the same function as csrc/include/tigercore/optim_math.h: float32 op-math (float64 for float64
params) with correctly rounded fused multiply-adds (numerics.fma), coefficients rounded once from
float64, the same storage rules per precision mode, and the same Philox stream.
Spec: shared/spec/optimizers.md §1–§4.
"""
from __future__ import annotations


import torch

from .. import _checks
from .numerics import fma, sign, sr_random_words, stochastic_round

HALF = _checks.HALF_DTYPES


def _opmath(p: torch.Tensor) -> torch.dtype:
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def _const(x: float, dtype) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype)  # float64 value rounded once to the op-math type


def _load_grad(g: torch.Tensor, grad_scale, maximize: bool, write_back: bool) -> torch.Tensor:
    ga = g.to(_opmath(g))
    if grad_scale is not None:
        ga = ga / grad_scale.to(ga.dtype)
        if write_back:
            g.copy_(ga)  # [note: GradScaler] the unscaled gradient is stored back
    return -ga if maximize else ga


def _working_copy(p, aux_t, mode):
    if mode == "master":
        return aux_t.clone()
    return p.to(_opmath(p))


def _store_param(p, aux_t, mode, w_old, w_new, seed, param_id, step):
    """Store w_new per [note: precision modes] (csrc/include/tigercore/optim_math.h)."""
    if mode == "kahan":
        y = (w_new - w_old) + aux_t.float()
        s = w_old + y
        p.copy_(s)
        aux_t.copy_(s - p.float())
    elif mode == "stochastic":
        r = sr_random_words(seed, param_id, step, p.numel(), p.device).view(p.shape)
        p.copy_(stochastic_round(w_new, r, p.dtype))
    elif mode == "master":
        aux_t.copy_(w_new)
        p.copy_(w_new)
    else:
        p.copy_(w_new)


def _effective_mode(p, precision):
    return precision if p.dtype in HALF else "none"


def _skip_for_found_inf(found_inf) -> bool:
    return found_inf is not None and float(found_inf.item()) != 0.0


@torch.no_grad()
def lion_step_(params, grads, exp_avgs, aux, steps, *, lr, beta1, beta2, weight_decay, param_ids,
               maximize=False, precision="none", seed=0, grad_scale=None, found_inf=None):
    _checks.check_step_inputs("lion_step_", params, grads, exp_avgs, aux, steps, param_ids,
                              precision, grad_scale, found_inf)
    _checks.check_lion_hyper(lr, beta1, beta2, weight_decay)
    if _skip_for_found_inf(found_inf):
        return
    for i, (p, g, m_t, s_t) in enumerate(zip(params, grads, exp_avgs, steps)):
        if p.numel() == 0:
            s_t.add_(1)
            continue
        T = _opmath(p)
        mode = _effective_mode(p, precision)
        aux_t = aux[i] if mode in ("kahan", "master") else None
        k_b1, k_1mb1 = _const(beta1, T), _const(1.0 - beta1, T)
        k_b2, k_1mb2 = _const(beta2, T), _const(1.0 - beta2, T)
        eta, wd = _const(lr, T), _const(weight_decay, T)
        g = _load_grad(g, grad_scale, maximize, write_back=grad_scale is not None)
        m = m_t.to(T)
        w_old = _working_copy(p, aux_t, mode)
        c = fma(m, k_b1, k_1mb1 * g)
        u = fma(w_old, wd, sign(c))
        w_new = fma(u, -eta, w_old)
        m_new = fma(m, k_b2, k_1mb2 * g)
        _store_param(p, aux_t, mode, w_old, w_new, seed, param_ids[i], int(s_t.item()))
        m_t.copy_(m_new)
        s_t.add_(1)


def tiger_eta(alpha: float, sumsq: torch.Tensor, n: int, rms_floor: float) -> torch.Tensor:
    """alpha * max(sqrt(sumsq / n), rms_floor) in float64 (csrc: tiger_eta_from_sumsq)."""
    rms = torch.sqrt(sumsq / n) if n > 0 else torch.zeros_like(sumsq)
    return alpha * torch.clamp(rms, min=rms_floor)


@torch.no_grad()
def tiger_step_(params, grads, exp_avgs, aux, steps, rms_cache=(), *, lr, beta, weight_decay, grad_accum_steps,
                tiger_class, shrink_ratio, shrink_center, nonfinite_guard, rms_floor, param_ids,
                maximize=False, precision="none", seed=0, grad_scale=None, found_inf=None):
    _checks.check_step_inputs("tiger_step_", params, grads, exp_avgs, aux, steps, param_ids,
                              precision, grad_scale, found_inf)
    _checks.check_tiger_hyper(lr, beta, weight_decay, grad_accum_steps, tiger_class, shrink_ratio, rms_floor)
    if _skip_for_found_inf(found_inf):
        return
    k = int(grad_accum_steps)
    # [note: Tiger without an extra pass] (csrc/cpu/optim_ops.cpp): the reference always computes
    # the RMS afresh; it marks any carried sums invalid so a native step cannot trust them.
    for cache in rms_cache:
        if cache.numel() >= 2:
            cache[-2] = -1.0
    for i, (p, g, m_t, s_t) in enumerate(zip(params, grads, exp_avgs, steps)):
        t = int(s_t.item())
        if p.numel() == 0:
            s_t.add_(1)
            continue
        T = _opmath(p)
        mode = _effective_mode(p, precision)
        aux_t = aux[i] if mode in ("kahan", "master") else None
        g = _load_grad(g, grad_scale, maximize, write_back=grad_scale is not None)
        w_old = _working_copy(p, aux_t, mode)
        if nonfinite_guard and not bool(torch.isfinite(g).all()):
            # tiger.py's NaN branch (optimizers.md §2.6, §2.8.2): m unchanged, theta shrinks.
            centre = _const(shrink_center, T)
            w_new = fma(w_old - centre, _const(shrink_ratio, T), centre.expand_as(w_old))
            _store_param(p, aux_t, mode, w_old, w_new, seed, param_ids[i], t)
            s_t.add_(1)
            continue
        b1 = _const(beta if t % k == 0 else 1.0, T)
        b2 = _const((1.0 - beta) / k, T)
        m = fma(m_t.to(T), b1, b2 * g)
        m_t.copy_(m)
        if (t + 1) % k == 0:
            if tiger_class == "V":
                eta = _const(0.5 * lr, T)
            elif tiger_class == "K":
                sumsq = w_old.double().square().sum()
                eta = tiger_eta(lr, sumsq, w_old.numel(), rms_floor).to(T)
            else:  # E: one step size per row (last dimension)
                rows = w_old.double().reshape(-1, w_old.shape[-1] if w_old.dim() else 1)
                eta_rows = tiger_eta(lr, rows.square().sum(-1), rows.shape[-1], rms_floor).to(T)
                eta = eta_rows.unsqueeze(-1).expand_as(rows).reshape(w_old.shape)
            wd = _const(0.0 if tiger_class == "V" else weight_decay, T)
            u = fma(w_old, wd, sign(m))
            w_new = fma(u, -eta, w_old)
            _store_param(p, aux_t, mode, w_old, w_new, seed, param_ids[i], t)
        s_t.add_(1)
