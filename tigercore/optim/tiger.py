"""Tiger (Su 2023; bojone/tiger tiger.py): Lion with beta1 = beta2, per-class step sizes, exact
gradient accumulation inside the momentum, and a NaN/Inf guard (optimizers.md §2).

    m = b1*m + b2*g            b1 = beta on a group's first micro-step else 1, b2 = (1-beta)/k
    theta -= eta*(sign(m) + wd*theta)   only on the last micro-step of a group of k
    eta = lr*RMS(theta) (class K), lr*RMS(row) (class E, embeddings), 0.5*lr and wd = 0 (class V)
    non-finite gradient (guard): m unchanged, theta = (theta - c)*shrink_ratio + c
Reference: tigercore/reference/optim.py::tiger_step_.
"""
from __future__ import annotations

import math
import warnings

import torch

from ._base import SignMomentumOptimizer, _as_float

CLASSES = ("K", "E", "V")


class Tiger(SignMomentumOptimizer):
    """Tiger with fused native kernels (CPU, CUDA) and an exact pure-PyTorch reference.

    Args:
        params: parameters or groups; build groups with ``tiger_param_groups(model)`` so that
            embeddings, norm weights and biases get their own step sizes. Group keys
            ``tiger_class`` ("K", "E", "V" or None = by ndim: >= 2 -> K, else V) and
            ``shrink_center`` (centre of the NaN shrink, 1.0 for norm gains).
        lr: the relative step size alpha (the schedule multiplies it; see PiecewiseLinearLR).
        beta: momentum coefficient (0.965 NLP, 0.945 CV).
        weight_decay: lambda for classes K and E (V never decays).
        grad_accum_steps: k; theta moves once every k calls to step(), on the mean gradient.
        shrink_ratio: s of the guard's shrink.
        nonfinite_guard: skip-and-shrink tensors whose gradient holds NaN or +-Inf.
        rms_floor: None (faithful: a tensor/row with RMS 0 never moves), or a floor f so that
            eta = lr*max(RMS, f) (a documented deviation).
        maximize, precision, momentum_dtype, seed, backend: as for Lion.
    State: ``exp_avg``, ``step`` (0-d int64, the micro-step count shared by all tensors), and
    ``master_param`` / ``kahan_comp`` for bf16/fp16 parameters.
    """

    _op_name = "tiger_step_"

    def __init__(self, params, lr=1e-3, beta=0.965, weight_decay=0.01, grad_accum_steps=1,
                 shrink_ratio=0.99, nonfinite_guard=True, rms_floor=None, *, maximize=False,
                 precision="master", momentum_dtype=None, seed=0, backend="auto"):
        defaults = dict(lr=lr, beta=beta, weight_decay=weight_decay, grad_accum_steps=grad_accum_steps,
                        shrink_ratio=shrink_ratio, nonfinite_guard=nonfinite_guard, rms_floor=rms_floor,
                        tiger_class=None, shrink_center=0.0, maximize=maximize)
        _validate(defaults)
        super().__init__(params, defaults, precision=precision, momentum_dtype=momentum_dtype,
                         seed=seed, backend=backend)
        self._rms_checked: set = set()
        if momentum_dtype == torch.bfloat16 and (grad_accum_steps > 1 or beta > 0.996):
            warnings.warn("Tiger: bfloat16 momentum loses small contributions: beta*m rounds back to m for "
                          "beta > 0.996 and terms (1-beta)*g/k are dropped when |g| << |m| "
                          "(optimizers.md §3.4); prefer float32 momentum here.", stacklevel=2)

    def add_param_group(self, param_group: dict) -> None:
        merged = {**getattr(self, "defaults", {}), **param_group}
        if "params" in merged and hasattr(self, "defaults"):
            _validate(merged)
        super().add_param_group(param_group)

    def _class_of(self, p, group) -> str:
        cls = group.get("tiger_class")
        if cls is None:
            return "K" if p.dim() >= 2 else "V"
        return cls

    def _batch_key(self, p, group):
        return self._class_of(p, group)

    def _warnings_for(self, p, group):
        super()._warnings_for(p, group)
        cls = self._class_of(p, group)
        if cls == "V" or id(p) in self._rms_checked or group.get("rms_floor") is not None:
            return
        self._rms_checked.add(id(p))
        # [note: zero RMS freezes] optimizers.md §2.8.3: eta = lr*RMS = 0 for an all-zero tensor
        # (or embedding row), so it never moves. Faithful to tiger.py; we warn once per parameter.
        w = p.detach()
        if cls == "K" and not bool(w.any()):
            warnings.warn(f"Tiger: a class-K parameter of shape {list(p.shape)} is all zeros; its step "
                          "size lr*RMS is 0 and it will never move. Pass rms_floor=... or initialise it.",
                          stacklevel=4)
        elif cls == "E" and w.dim() >= 1:
            zero_rows = int((~w.reshape(-1, w.shape[-1]).any(dim=-1)).sum())
            if zero_rows:
                warnings.warn(f"Tiger: {zero_rows} row(s) of an embedding of shape {list(p.shape)} are all "
                              "zeros (e.g. padding); their step size is 0 and they never move.", stacklevel=4)

    def _rms_caches(self, sub, params, states):
        """The carried sums of squares ([note: Tiger without an extra pass], csrc/cpu/optim_ops.cpp):
        float64 [rows + 2] per K/E parameter on the CPU; not part of the state dict."""
        if sub == "V" or params[0].device.type != "cpu":
            return []
        caches = []
        for p, st in zip(params, states):
            rows = 1 if sub == "K" or p.dim() == 0 else p.numel() // max(1, p.shape[-1])
            cache = st.get("rms_cache")
            if cache is None or cache.numel() != rows + 2:
                cache = st["rms_cache"] = torch.full((rows + 2,), -1.0, dtype=torch.float64)
            caches.append(cache)
        return caches

    def invalidate_rms_cache(self):
        """Forget the carried sums of squares. Needed only after writing to parameters in a way
        their version counter does not see (through ``.data``); in-place ops, ``copy_`` under
        no_grad and ``load_state_dict`` are noticed automatically."""
        for st in self.state.values():
            if "rms_cache" in st:
                st["rms_cache"].fill_(-1.0)

    def state_dict(self):
        sd = super().state_dict()
        for st in sd["state"].values():
            st.pop("rms_cache", None)  # derived data, recomputed after loading
        return sd

    def _call_op(self, op, group, sub, states, **common):
        floor = group.get("rms_floor")
        params = common.pop("params")
        op(params, common.pop("grads"), common.pop("exp_avgs"), common.pop("aux"),
           common.pop("steps"), self._rms_caches(sub, params, states), lr=_as_float(group["lr"]), beta=float(group["beta"]),
           weight_decay=float(group["weight_decay"]), grad_accum_steps=int(group["grad_accum_steps"]),
           tiger_class=sub, shrink_ratio=float(group["shrink_ratio"]),
           shrink_center=float(group.get("shrink_center", 0.0)),
           nonfinite_guard=bool(group["nonfinite_guard"]), rms_floor=0.0 if floor is None else float(floor),
           **common)

    def _advance_skipped(self, params_without_grad):
        # optimizers.md §2.8.5: one counter for all tensors; a tensor without a gradient keeps
        # its theta and m but its phase must stay aligned, so it gets a step counter too.
        for p in params_without_grad:
            st = self.state[p]
            if "step" not in st:
                st["step"] = torch.zeros((), dtype=torch.int64, device=p.device)
        super()._advance_skipped(params_without_grad)

    def _on_missing_step(self, pid):
        self._warn_once("missing-step", "Tiger.load_state_dict: the state has no 'step'; the accumulation "
                                        "phase and the schedule restart from micro-step 0.")


def _validate(g: dict):
    lr = _as_float(g["lr"])
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= g["beta"] <= 1.0:
        raise ValueError(f"Invalid beta: {g['beta']} (must lie in [0, 1])")
    if not (math.isfinite(g["weight_decay"]) and g["weight_decay"] >= 0):
        raise ValueError(f"Invalid weight_decay: {g['weight_decay']}")
    if int(g["grad_accum_steps"]) != g["grad_accum_steps"] or g["grad_accum_steps"] < 1:
        raise ValueError(f"Invalid grad_accum_steps: {g['grad_accum_steps']} (an integer >= 1)")
    if not math.isfinite(g["shrink_ratio"]):
        raise ValueError(f"Invalid shrink_ratio: {g['shrink_ratio']}")
    if g.get("rms_floor") is not None and not (math.isfinite(g["rms_floor"]) and g["rms_floor"] >= 0):
        raise ValueError(f"Invalid rms_floor: {g['rms_floor']}")
    if g.get("tiger_class") not in (None,) + CLASSES:
        raise ValueError(f"Invalid tiger_class: {g['tiger_class']!r} (one of 'K', 'E', 'V' or None)")


__all__ = ["Tiger"]
