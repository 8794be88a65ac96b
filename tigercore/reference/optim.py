"""Pure-PyTorch reference of the step ops: lion_step_, tiger_step_, sync_external_writes_ and
tiger_stats (any device).

It is registered as the ops' "default" kernel (tigercore/_ops.py), so the package works without
the compiled extension, and it is the oracle the native kernels are tested against. It computes
the same function as csrc/include/tigercore/optim_math.h: float32 op-math (float64 for float64
params) with correctly rounded fused multiply-adds (numerics.fma), coefficients rounded once from
float64 (step_coefficients), the same storage rules per precision mode, and the same Philox stream.
Semantics: docs/semantics.md.
"""
from __future__ import annotations

import torch

from .. import _checks
from . import momentum8 as _m8
from .numerics import fma, sign, sr_random_words, stochastic_round

HALF = _checks.HALF_DTYPES
rms_rows = _checks.rms_rows
FP16_MAX = 65504.0


def _opmath(p: torch.Tensor) -> torch.dtype:
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def step_coefficients(algo: str, T: torch.dtype, *, beta1=0.0, beta2=0.0, beta=0.0, grad_accum_steps=1,
                      weight_decay=0.0, maximize=False, shrink_ratio=1.0, shrink_center=0.0) -> dict:
    """The call's coefficients, derived in float64 and rounded once to the op-math type T, with
    maximize folded into the gradient coefficients (csrc/include/tigercore/optim_math.h,
    derive_coefficients; [note: coefficients])."""
    sgn = -1.0 if maximize else 1.0
    if algo == "lion":
        v = {"b1": beta1, "g1": sgn * (1.0 - beta1), "b2": beta2, "g2": sgn * (1.0 - beta2), "wd": weight_decay}
    else:
        v = {"beta": beta, "g": sgn * (1.0 - beta) / grad_accum_steps, "wd": weight_decay,
             "shrink": shrink_ratio, "centre": shrink_center}
    return {k: torch.tensor(x, dtype=torch.float64).to(T) for k, x in v.items()}


def _load_grad(g: torch.Tensor, grad_scale, write_back: bool) -> torch.Tensor:
    ga = g.to(_opmath(g))
    if grad_scale is not None:
        ga = ga / grad_scale.to(device=ga.device, dtype=ga.dtype)
        if write_back:
            g.copy_(ga)  # [note: GradScaler] the unscaled gradient is stored back
    return ga


def _working_copy(p, aux_t, mode):
    if mode == "master":
        return aux_t.clone()
    return p.to(_opmath(p))


def _load_momentum(m_t: torch.Tensor, absmax, T: torch.dtype) -> torch.Tensor:
    """The momentum in op-math type T; 8-bit codes (uint8) are decoded with their block absmax."""
    if m_t.dtype == torch.uint8:
        return _m8.decode(m_t, absmax).to(T)
    return m_t.to(T)


def _store_momentum(m_t: torch.Tensor, m: torch.Tensor, absmax=None):
    """[note: momentum storage] fp16 momentum saturates at +-65504 (NaN stays NaN); 8-bit
    momentum is re-encoded block by block, with new absmax values ([note: 8-bit momentum])."""
    if m_t.dtype == torch.uint8:
        codes, a = _m8.encode(m)
        m_t.copy_(codes)
        absmax.copy_(a)
        return
    if m_t.dtype == torch.float16:
        m = m.clamp(-FP16_MAX, FP16_MAX)
    m_t.copy_(m)


def _store_param(p, aux_t, mode, w_old, w_new, seed, param_id, step, elem_offset=0):
    """Store w_new per [note: precision modes] (csrc/include/tigercore/optim_math.h); the
    stochastic-rounding counter of element i is elem_offset + i."""
    if mode == "kahan":
        y = (w_new - w_old) + aux_t.float()
        s = w_old + y
        p.copy_(s)
        aux_t.copy_(s - p.float())
    elif mode == "stochastic":
        r = sr_random_words(seed, param_id, step, p.numel(), p.device, elem_offset).view(p.shape)
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


def _each_tensor(params, grads, exp_avgs, aux, steps, precision):
    """(i, p, g, m_t, s_t, T, mode, aux_t) per non-empty tensor; an empty one only counts a step."""
    for i, (p, g, m_t, s_t) in enumerate(zip(params, grads, exp_avgs, steps)):
        if p.numel() == 0:
            s_t.add_(1)
            continue
        mode = _effective_mode(p, precision)
        yield i, p, g, m_t, s_t, _opmath(p), mode, aux[i] if mode in ("kahan", "master") else None


def _lr(lr: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return lr.reshape(()).to(device=p.device, dtype=torch.float64)


# ---- external writes ----------------------------------------------------------------------------
def _stamp_of(p: torch.Tensor, offset: int = 0):
    return (p._version - offset, p.data_ptr())


def _record(stamp: torch.Tensor, p: torch.Tensor):
    v, addr = _stamp_of(p)
    stamp[0], stamp[1] = v, addr


@torch.no_grad()
def sync_external_writes_(params, aux, stamps, sumsq=(), *, precision, compiled=False):
    """[note: external writes] For every parameter whose version counter or storage address differs
    from its stamp (it was written by someone else since this optimizer last wrote it): re-seed the
    master copy wherever it no longer rounds to the parameter, zero the Kahan compensation, and mark
    the carried sums of squares unknown. Then stamp every parameter. ``compiled``: the call runs in
    a torch.compile'd graph, whose runtime has bumped every mutated input's version once already."""
    op = "sync_external_writes_"
    _checks.check_precision(precision)
    _checks.check_tensors(op, params, aux, precision)
    _checks.check_stamps(op, stamps, params)
    if sumsq and len(sumsq) != len(params):
        _checks._fail(op, f"sumsq must be empty or have one tensor per param, got {len(sumsq)}")
    if not stamps:
        return
    offset = 1 if compiled else 0
    for i, (p, stamp) in enumerate(zip(params, stamps)):
        if _stamp_of(p, offset) == (int(stamp[0]), int(stamp[1])):
            continue
        mode = _effective_mode(p, precision)
        if mode == "master":
            master = aux[i]
            width = torch.int16
            stale = master.to(p.dtype).view(width) != p.view(width)
            master.copy_(torch.where(stale, p.float(), master))
        elif mode == "kahan":
            aux[i].zero_()
        if sumsq:
            sumsq[i].fill_(-1.0)
        _record(stamp, p)


# ---- Tiger's per-tensor inputs -------------------------------------------------------------------
def _sum_squares(w: torch.Tensor, tiger_class: str) -> torch.Tensor:
    """Sum of squares in float64 of the working copy: one value (K, V) or one per row (E)."""
    w64 = w.double()
    if tiger_class != "E" or w.dim() == 0:
        return w64.square().sum().reshape(1)
    return w64.reshape(rms_rows(w, tiger_class), w.shape[-1]).square().sum(-1)  # rows of width 0 sum to 0


def _row_count(p: torch.Tensor, tiger_class: str) -> int:
    if tiger_class != "E" or p.dim() == 0:
        return p.numel()
    return p.shape[-1]


def tiger_eta(alpha, sumsq: torch.Tensor, n: int, rms_floor: float) -> torch.Tensor:
    """alpha * max(sqrt(sumsq / n), rms_floor) in float64 (csrc: tiger_eta_from_sumsq); n = 0 -> RMS 0."""
    rms = torch.sqrt(sumsq / n) if n > 0 else torch.zeros_like(sumsq)
    return alpha * torch.clamp(rms, min=rms_floor)


def _nonfinite(g: torch.Tensor) -> bool:
    return not bool(torch.isfinite(g).all())


@torch.no_grad()
def tiger_stats(params, grads, aux, sumsq=(), *, tiger_class, precision, grad_scale=None):
    """Per row (K, V: one per tensor; E: one per last-dimension slice) the float64 sum of squares
    of the working copy (the carried value where sumsq holds one, >= 0), concatenated in call
    order; and per tensor whether its unscaled gradient holds a NaN or an Inf."""
    op = "tiger_stats"
    _checks.check_precision(precision)
    if tiger_class not in _checks.TIGER_CLASSES:
        raise RuntimeError(f"tigercore: tiger_class must be 'K', 'E' or 'V', got '{tiger_class}'")
    device = _checks.check_tensors(op, params, aux, precision)
    _checks.check_sumsq(op, sumsq, params, tiger_class)
    if len(grads) != len(params):
        _checks._fail(op, f"params and grads must have the same length, got {len(params)}, {len(grads)}")
    device = device or torch.device("cpu")
    sums, flags = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
            _checks._fail(op, f"grads[{i}] must match params[{i}] in shape, dtype and device")
        mode = _effective_mode(p, precision)
        if sumsq and bool((sumsq[i] >= 0).all()):
            sums.append(sumsq[i].clone())
        else:
            sums.append(_sum_squares(_working_copy(p, aux[i] if mode == "master" else None, mode), tiger_class))
        flags.append(_nonfinite(_load_grad(g, grad_scale, write_back=False)))
    s = torch.cat(sums) if sums else torch.zeros(0, dtype=torch.float64, device=device)
    return s, torch.tensor(flags, dtype=torch.bool, device=device)


def caution_scale(n: int, kept: int) -> float:
    """[note: cautious] s = n / max(K, 0.001 n) in float64 (csrc: caution_scale_of)."""
    return n / max(float(kept), 0.001 * n)


def _cautious_direction(u: torch.Tensor, g: torch.Tensor, maximize: bool) -> torch.Tensor:
    """d = u * (keep ? s : 0), keep = u g > 0 (g negated under maximize), s from the whole
    tensor's count, rounded once to u's dtype; a NaN u stays NaN (docs/semantics.md, "Cautious
    masking")."""
    keep = (u * g) * (-1.0 if maximize else 1.0) > 0
    s = torch.tensor(caution_scale(u.numel(), int(keep.sum())), dtype=torch.float64).to(u.dtype)
    return u * torch.where(keep, s, torch.zeros_like(u))


# ---- the steps ------------------------------------------------------------------------------------
@torch.no_grad()
def lion_step_(params, grads, exp_avgs, aux, steps, stamps=(), exp_avg_absmax=(), *, lr, beta1, beta2, weight_decay, param_ids,
               maximize=False, precision="none", seed=0, grad_scale=None, found_inf=None, compiled=False,
               elem_offsets=(), cautious=False):
    _checks.check_step_inputs("lion_step_", params, grads, exp_avgs, aux, steps, stamps, param_ids,
                              precision, grad_scale, found_inf, lr)
    _checks.check_elem_offsets("lion_step_", elem_offsets, params)
    _checks.check_absmax("lion_step_", exp_avg_absmax, exp_avgs, params)
    _checks.check_lion_hyper(beta1, beta2, weight_decay)
    _checks.check_scalar_values("lion_step_", lr, grad_scale)
    sync_external_writes_(params, aux, stamps, precision=precision, compiled=compiled)
    if _skip_for_found_inf(found_inf):
        return
    for i, p, g, m_t, s_t, T, mode, aux_t in _each_tensor(params, grads, exp_avgs, aux, steps, precision):
        k = step_coefficients("lion", T, beta1=beta1, beta2=beta2, weight_decay=weight_decay, maximize=maximize)
        eta = _lr(lr, p).to(T)
        g = _load_grad(g, grad_scale, write_back=grad_scale is not None)
        absmax = exp_avg_absmax[i] if exp_avg_absmax else None
        m = _load_momentum(m_t, absmax, T)
        w_old = _working_copy(p, aux_t, mode)
        c = fma(m, k["b1"], k["g1"] * g)
        d = _cautious_direction(sign(c), g, maximize) if cautious else sign(c)
        u = fma(w_old, k["wd"], d)
        w_new = fma(u, -eta, w_old)
        m_new = fma(m, k["b2"], k["g2"] * g)
        _store_param(p, aux_t, mode, w_old, w_new, seed, param_ids[i], int(s_t.item()),
                     elem_offsets[i] if elem_offsets else 0)
        _store_momentum(m_t, m_new, absmax)
        s_t.add_(1)
    for stamp, p in zip(stamps, params):
        _record(stamp, p)


@torch.no_grad()
def tiger_step_(params, grads, exp_avgs, aux, steps, stamps=(), sumsq=(), exp_avg_absmax=(), *, lr, beta, weight_decay,
                grad_accum_steps, tiger_class, shrink_ratio, shrink_center, nonfinite_guard, rms_floor, param_ids,
                maximize=False, precision="none", seed=0, grad_scale=None, found_inf=None, compiled=False,
                eta=None, nonfinite=None, elem_offsets=(), cautious=False):
    op = "tiger_step_"
    _checks.check_step_inputs(op, params, grads, exp_avgs, aux, steps, stamps, param_ids, precision, grad_scale,
                              found_inf, lr)
    _checks.check_elem_offsets(op, elem_offsets, params)
    _checks.check_absmax(op, exp_avg_absmax, exp_avgs, params)
    _checks.check_tiger_hyper(beta, weight_decay, grad_accum_steps, tiger_class, shrink_ratio, shrink_center,
                              rms_floor)
    _checks.check_scalar_values(op, lr, grad_scale)
    _checks.check_sumsq(op, sumsq, params, tiger_class) if tiger_class != "V" else None
    rows = [rms_rows(p, tiger_class) for p in params]
    if eta is not None and tiger_class != "V" and (eta.dtype != torch.float64 or eta.numel() != sum(rows)):
        _checks._fail(op, f"eta must be a float64 tensor of {sum(rows)} step size(s) (one per tensor or row)")
    if nonfinite is not None and (nonfinite.dtype != torch.bool or nonfinite.numel() != len(params)):
        _checks._fail(op, f"nonfinite must be a bool tensor of {len(params)} flag(s) (one per tensor)")
    sync_external_writes_(params, aux, stamps, sumsq if tiger_class != "V" else (), precision=precision,
                          compiled=compiled)
    if _skip_for_found_inf(found_inf):
        return
    k_accum = int(grad_accum_steps)
    row0 = [sum(rows[:i]) for i in range(len(rows))]
    for i, p, g, m_t, s_t, T, mode, aux_t in _each_tensor(params, grads, exp_avgs, aux, steps, precision):
        first_row, t = row0[i], int(s_t.item())
        offset = elem_offsets[i] if elem_offsets else 0
        k = step_coefficients("tiger", T, beta=beta, grad_accum_steps=k_accum,
                              weight_decay=0.0 if tiger_class == "V" else weight_decay, maximize=maximize,
                              shrink_ratio=shrink_ratio, shrink_center=shrink_center)
        g = _load_grad(g, grad_scale, write_back=grad_scale is not None)
        w_old = _working_copy(p, aux_t, mode)
        fired = bool(nonfinite[i]) if nonfinite is not None else _nonfinite(g)
        written = False
        if nonfinite_guard and fired:
            # tiger.py's NaN branch (docs/semantics.md, "Tiger's guard"): m unchanged, theta shrinks.
            centre = k["centre"]
            w_new = fma(w_old - centre, k["shrink"], centre.expand_as(w_old))
            _store_param(p, aux_t, mode, w_old, w_new, seed, param_ids[i], t, offset)
            written = True
        else:
            b1 = k["beta"] if t % k_accum == 0 else torch.tensor(1.0, dtype=T)
            absmax = exp_avg_absmax[i] if exp_avg_absmax else None
            m = fma(_load_momentum(m_t, absmax, T), b1, k["g"] * g)
            _store_momentum(m_t, m, absmax)
            if (t + 1) % k_accum == 0:
                lr64 = _lr(lr, p)
                if tiger_class == "V":
                    step_size = (0.5 * lr64).to(T)
                else:
                    if eta is not None:
                        e = eta[first_row:first_row + rows[i]].to(p.device)
                    else:
                        carried = sumsq[i] if sumsq and bool((sumsq[i] >= 0).all()) else None
                        s = carried if carried is not None else _sum_squares(w_old, tiger_class)
                        e = tiger_eta(lr64, s, _row_count(p, tiger_class), rms_floor)
                    e = e.to(T)
                    step_size = e.reshape(()) if tiger_class == "K" or p.dim() == 0 else \
                        e.unsqueeze(-1).expand(-1, p.shape[-1]).reshape(p.shape)
                d = _cautious_direction(sign(m), g, maximize) if cautious else sign(m)
                u = fma(w_old, k["wd"], d)
                w_new = fma(u, -step_size, w_old)
                _store_param(p, aux_t, mode, w_old, w_new, seed, param_ids[i], t, offset)
                written = True
        if written and sumsq and tiger_class != "V":
            sumsq[i].copy_(_sum_squares(_working_copy(p, aux_t, mode), tiger_class))
        s_t.add_(1)
    for stamp, p in zip(stamps, params):
        _record(stamp, p)
