"""Tiger (Su 2023; bojone/tiger tiger.py): Lion with beta1 = beta2, per-class step sizes, exact
gradient accumulation inside the momentum, and a NaN/Inf guard (docs/semantics.md, "Tiger").

    m = b1*m + b2*g            b1 = beta on a group's first micro-step else 1, b2 = (1-beta)/k
    theta -= eta*(sign(m) + wd*theta)   only on the last micro-step of a group of k
    eta = lr*RMS(theta) (class K), lr*RMS(row) (class E, embeddings), 0.5*lr and wd = 0 (class V)
    non-finite gradient (guard): m unchanged, theta = (theta - c)*shrink_ratio + c
Reference: tigercore/reference/optim.py::tiger_step_.
"""
from __future__ import annotations

import torch

from .. import _checks
from . import _distributed as _dist
from ._base import HALF, SignMomentumOptimizer

CLASSES = ("K", "E", "V")


class Tiger(SignMomentumOptimizer):
    """Tiger with fused native kernels (CPU, CUDA) and an exact pure-PyTorch reference.

    Args:
        params: parameters or groups; build groups with ``tiger_param_groups(model)`` so that
            embeddings, norm weights and biases get their own step sizes. Group keys
            ``tiger_class`` ("K", "E", "V" or None = by ndim: >= 2 -> K, else V) and
            ``shrink_center`` (centre of the NaN shrink, 1.0 for norm gains).
        lr: the relative step size alpha, a float or a one-element floating tensor (the schedule
            multiplies it; see PiecewiseLinearLR).
        beta: momentum coefficient in [0, 1] (0.965 NLP, 0.945 CV).
        weight_decay: lambda >= 0 for classes K and E (V never decays).
        grad_accum_steps: k, an integer in [1, 2^31); theta moves once every k calls to step(), on
            the mean gradient.
        shrink_ratio: s in (0, 1] of the guard's shrink.
        nonfinite_guard: skip-and-shrink tensors whose gradient holds NaN or +-Inf.
        rms_floor: None (faithful: a tensor/row with RMS 0 never moves), or a floor f >= 0 so that
            eta = lr*max(RMS, f) (a documented deviation).
        cautious: keep the sign step only where it agrees with the update micro-step's gradient and
            rescale the kept part by n / max(kept, n/1000) per tensor (docs/semantics.md, "Cautious
            masking"). One more read of the gradient and momentum per update step.
        maximize, precision, momentum_dtype, momentum_bits, seed, backend: as for Lion. With
            momentum_bits=8 every micro-step re-quantises the momentum: see docs/semantics.md,
            "8-bit momentum", on accumulation.
    State: ``exp_avg``, ``step`` (0-d int64, the micro-step count shared by all tensors),
    ``master_param`` / ``kahan_comp`` for bf16/fp16 parameters, ``exp_avg_absmax`` (8-bit momentum);
    not saved: ``param_stamp`` and ``sumsq`` (the carried sums of squares of classes K and E; [note:
    carried sums]).
    """

    _op_name = "tiger_step_"
    _kind_keys = ("beta", "grad_accum_steps")

    def __init__(self, params, lr=1e-3, beta=0.965, weight_decay=0.01, grad_accum_steps=1,
                 shrink_ratio=0.99, nonfinite_guard=True, rms_floor=None, *, maximize=False, cautious=False,
                 precision="master", momentum_dtype=None, momentum_bits=32, seed=0, backend="auto"):
        defaults = dict(lr=lr, beta=beta, weight_decay=weight_decay, grad_accum_steps=grad_accum_steps,
                        shrink_ratio=shrink_ratio, nonfinite_guard=nonfinite_guard, rms_floor=rms_floor,
                        tiger_class=None, shrink_center=0.0, maximize=maximize, cautious=cautious)
        if momentum_dtype == torch.bfloat16 and _checks.is_real_number(beta) and _checks.is_real_number(grad_accum_steps) \
                and (grad_accum_steps > 1 or beta > 0.996):
            self._warned = set()
            self._warn_once("bf16-momentum", "Tiger: bfloat16 momentum loses small contributions: beta*m rounds back "
                                             "to m for beta > 0.996 and terms (1-beta)*g/k are dropped when |g| << |m| "
                                             "(docs/semantics.md, 'Momentum storage'); prefer float32 momentum here.")
        super().__init__(params, defaults, precision=precision, momentum_dtype=momentum_dtype,
                         seed=seed, backend=backend, momentum_bits=momentum_bits)

    def _validate_group(self, group: dict) -> None:
        _checks.validate_lr(group["lr"])
        _checks.validate_real(group["beta"], "beta", 0.0, 1.0)
        _checks.validate_real(group["weight_decay"], "weight_decay", 0.0)
        k = group["grad_accum_steps"]
        if not (_checks.is_real_number(k) and int(k) == k and 1 <= k < _checks.MAX_ACCUM):
            raise ValueError(f"Invalid grad_accum_steps: {k!r} (an integer in [1, 2^31))")
        _checks.validate_real(group["shrink_ratio"], "shrink_ratio", 0.0, 1.0, low_open=True)
        _checks.validate_real(group.get("shrink_center", 0.0), "shrink_center")
        if group.get("rms_floor") is not None:
            _checks.validate_real(group["rms_floor"], "rms_floor", 0.0)
        if group.get("tiger_class") not in (None,) + CLASSES:
            raise ValueError(f"Invalid tiger_class: {group['tiger_class']!r} (one of 'K', 'E', 'V' or None)")
        for key in ("nonfinite_guard", "maximize", "cautious"):
            if not isinstance(group.get(key, False), bool):
                raise ValueError(f"Invalid {key}: {group[key]!r} (a bool)")
        if float(group["beta"]) == 1.0:
            self._warn_once(("beta", id(group)), "Tiger: beta = 1 keeps the momentum at its initial value and "
                                                 "ignores every gradient: theta never moves except by decay.")

    def _class_of(self, p, group) -> str:
        cls = group.get("tiger_class")
        if cls is None:
            return "K" if p.dim() >= 2 else "V"
        return cls

    def _batch_key(self, p, group):
        return self._class_of(p, group)

    def _extra_state(self, p, group):
        cls = self._class_of(p, group)
        if cls == "V":
            return {}
        lp = _dist.local(p)  # the sums of a DTensor's local rows
        return {"sumsq": torch.full((_checks.rms_rows(lp, cls),), -1.0, dtype=torch.float64, device=lp.device)}

    def _init_state(self, p, group):
        state = super()._init_state(p, group)
        if p.dtype in HALF and self.precision == "none":
            self._warn_once("precision-none", (
                "Tiger: precision='none' with bf16/fp16 parameters stores updates with round-to-nearest; "
                "relative steps below half an ulp (2^-9 for bf16) are lost. Use precision='master' (default), "
                "'kahan' or 'stochastic'."))
        self._warn_zero_rms(p, group)
        return state

    def _warn_zero_rms(self, p, group):
        # [note: zero RMS freezes] eta = lr*RMS = 0 for an all-zero tensor (or embedding row), so it
        # never moves. Faithful to tiger.py; we warn once per parameter, when it is added.
        cls = self._class_of(p, group)
        if cls == "V" or group.get("rms_floor") is not None or p.numel() == 0:
            return
        w = p.detach()
        if cls == "K" and not bool(w.any()):
            self._warn_once(("zero", id(p)), f"Tiger: a class-K parameter of shape {list(p.shape)} is all zeros; "
                                             "its step size lr*RMS is 0 and it will never move. Pass rms_floor=... "
                                             "or initialise it.")
        elif cls == "E" and w.dim() >= 1:
            zero_rows = int((~w.reshape(-1, w.shape[-1]).any(dim=-1)).sum())
            if zero_rows:
                self._warn_once(("zero", id(p)), f"Tiger: {zero_rows} row(s) of an embedding of shape {list(p.shape)} "
                                                 "are all zeros (e.g. padding); their step size is 0 and they never move.")

    def _call_op(self, op, group, sub, states, **common):
        floor = group.get("rms_floor")
        sumsq = [st["sumsq"] for st in states] if sub != "V" else []
        op(common.pop("params"), common.pop("grads"), common.pop("exp_avgs"), common.pop("aux"),
           common.pop("steps"), common.pop("stamps"), sumsq, common.pop("exp_avg_absmax", []),
           beta=float(group["beta"]), weight_decay=float(group["weight_decay"]),
           grad_accum_steps=int(group["grad_accum_steps"]),
           tiger_class=sub, shrink_ratio=float(group["shrink_ratio"]),
           shrink_center=float(group.get("shrink_center", 0.0)),
           nonfinite_guard=bool(group["nonfinite_guard"]), rms_floor=0.0 if floor is None else float(floor),
           **common)

    def _plan_step(self):
        batches, without_grad = super()._plan_step()
        for group, _, sub, _, params, _ in batches:  # a group's class may have been edited since
            for p in params:
                st, extra = self.state[p], self._extra_state(p, group)
                if "sumsq" in extra and ("sumsq" not in st or st["sumsq"].shape != extra["sumsq"].shape):
                    st["sumsq"] = extra["sumsq"]
        return batches, without_grad

    def _on_missing_step(self, pid):
        self._warn_once("missing-step", "Tiger.load_state_dict: the state has no 'step'; the accumulation "
                                        "phase and the schedule restart from micro-step 0.")


__all__ = ["Tiger"]
