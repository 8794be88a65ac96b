"""Machinery shared by Lion and Tiger: state layout, precision modes, GradScaler protocol,
backend routing, and a state_dict loader that keeps every state tensor's own dtype.

State per parameter (optimizers.md §7): ``exp_avg`` (momentum), ``step`` (0-d int64 micro-step
count on the parameter's device), and for bf16/fp16 parameters ``kahan_comp`` (precision="kahan")
or ``master_param`` (fp32, precision="master").
"""
from __future__ import annotations

import warnings
from collections import defaultdict

import torch

from .. import _checks, _native
from ..reference import optim as _ref

PRECISIONS = _checks.PRECISIONS
BACKENDS = ("auto", "native", "reference")
HALF = _checks.HALF_DTYPES


def _as_float(x) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


class SignMomentumOptimizer(torch.optim.Optimizer):
    """Base class; subclasses define ``_op_name`` and ``_call_op``."""

    _op_name = ""
    # GradScaler: hand us grad_scale / found_inf as tensors instead of unscaling on the host.
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults, *, precision, momentum_dtype, seed, backend):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if momentum_dtype not in (None, torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise ValueError(f"momentum_dtype must be None, torch.float32, torch.float16, torch.bfloat16 "
                             f"or torch.float64, got {momentum_dtype!r}")
        if not (0 <= int(seed) < 2**32):
            raise ValueError(f"seed must be a 32-bit unsigned integer, got {seed}")
        self.precision = precision
        self.momentum_dtype = momentum_dtype
        self.seed = int(seed)
        self.backend = backend
        self._warned: set = set()
        super().__init__(params, defaults)

    # ---- state ----------------------------------------------------------------------------
    def _momentum_dtype_for(self, p: torch.Tensor) -> torch.dtype:
        if p.dtype == torch.float64:
            if self.momentum_dtype not in (None, torch.float64):
                raise ValueError(f"float64 parameters keep float64 momentum; got momentum_dtype={self.momentum_dtype}")
            return torch.float64
        if self.momentum_dtype in (None, torch.float64):
            return torch.float32
        return self.momentum_dtype

    def _aux_key(self, p: torch.Tensor):
        if p.dtype not in HALF:
            return None
        return {"kahan": "kahan_comp", "master": "master_param"}.get(self.precision)

    def _init_state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.int64, device=p.device)
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, dtype=self._momentum_dtype_for(p),
                                                memory_format=torch.contiguous_format)
        key = self._aux_key(p)
        if key == "kahan_comp" and key not in state:
            state[key] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        elif key == "master_param" and key not in state:
            state[key] = p.detach().float().clone(memory_format=torch.contiguous_format)
        return state

    def _warn_once(self, key, message: str):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def _check_grad(self, p: torch.Tensor):
        g = p.grad
        name = type(self).__name__
        if g.is_sparse or g.layout != torch.strided:
            raise RuntimeError(f"{name} does not support sparse gradients")
        if g.is_complex() or p.is_complex():
            raise RuntimeError(f"{name} does not support complex parameters")
        if p.dtype not in _checks.PARAM_DTYPES:
            raise RuntimeError(f"{name}: parameter dtype {p.dtype} is not supported "
                               f"(float32, float64, float16, bfloat16)")
        if g.shape != p.shape or g.dtype != p.dtype:
            raise RuntimeError(f"{name}: gradient of shape {list(g.shape)} / {g.dtype} does not match its "
                               f"parameter of shape {list(p.shape)} / {p.dtype}")

    def _warnings_for(self, p: torch.Tensor, group: dict):
        if p.dtype in HALF and self.precision == "none":
            self._warn_once("precision-none", (
                f"{type(self).__name__}: precision='none' with {p.dtype} parameters stores updates with "
                "round-to-nearest; steps smaller than half an ulp are lost (e.g. bf16 weights with "
                "|w| >= 1/32 never move at lr 1e-4). Use precision='master' (default), 'kahan' or 'stochastic'."))

    # ---- routing --------------------------------------------------------------------------
    def _param_ids(self) -> dict:
        ids, n = {}, 0
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in ids:
                    ids[id(p)] = n
                    n += 1
        return ids

    def _use_reference(self, tensors) -> bool:
        if self.backend == "reference":
            return True
        # [note: non-contiguous tensors] the native kernels take contiguous storage; anything
        # else (rare for parameters) is updated correctly by the reference kernel instead.
        return not all(t.is_contiguous() for t in tensors)

    def _op(self, use_reference: bool, device: torch.device):
        if use_reference:
            return getattr(_ref, self._op_name)
        if self.backend == "native" and not _native.has_native(self._op_name, device):
            raise RuntimeError(
                f"{type(self).__name__}(backend='native'): no native tigercore::{self._op_name} kernel is "
                f"registered for {device.type} (extension: {_native.load_error() or 'loaded'}). "
                "Build the extension or use backend='auto'.")
        return getattr(torch.ops.tigercore, self._op_name)

    def _gradscaler_tensors(self, device):
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if grad_scale is not None:
            grad_scale = grad_scale.to(device=device, dtype=torch.float32)
        if found_inf is not None:
            found_inf = found_inf.to(device=device, dtype=torch.float32)
        return grad_scale, found_inf

    def _advance_skipped(self, params_without_grad):
        """Advance the step of parameters that have state but no gradient (phase stays aligned)."""
        for p in params_without_grad:
            st = self.state.get(p)
            if st and "step" in st:
                _, found_inf = self._gradscaler_tensors(p.device)
                if found_inf is None:
                    st["step"].add_(1)
                else:
                    st["step"].add_((found_inf == 0).to(torch.int64))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ids = self._param_ids()
        for group in self.param_groups:
            batches = defaultdict(list)
            without_grad = []
            for p in group["params"]:
                if p.grad is None:
                    without_grad.append(p)
                    continue
                self._check_grad(p)
                state = self._init_state(p)
                self._warnings_for(p, group)
                aux_key = self._aux_key(p)
                tensors = [p, p.grad, state["exp_avg"]] + ([state[aux_key]] if aux_key else [])
                key = (p.device, self._batch_key(p, group), self._use_reference(tensors))
                batches[key].append(p)
            for (device, sub, use_ref), params in batches.items():
                self._run_batch(group, params, device, sub, use_ref, ids)
            self._advance_skipped(without_grad)
        return loss

    def _batch_key(self, p, group):
        return None

    def _run_batch(self, group, params, device, sub, use_ref, ids):
        states = [self.state[p] for p in params]
        need_aux = self.precision in ("kahan", "master") and any(p.dtype in HALF for p in params)
        aux = []
        if need_aux:
            for p, st in zip(params, states):
                key = self._aux_key(p)
                aux.append(st[key] if key else p.new_empty(0))
        grad_scale, found_inf = self._gradscaler_tensors(device)
        op = self._op(use_ref, device)
        self._call_op(op, group, sub, states, params=params, grads=[p.grad for p in params],
                      exp_avgs=[st["exp_avg"] for st in states], aux=aux,
                      steps=[st["step"] for st in states], param_ids=[ids[id(p)] for p in params],
                      maximize=bool(group.get("maximize", False)), precision=self.precision,
                      seed=self.seed, grad_scale=grad_scale, found_inf=found_inf)

    def _call_op(self, op, group, sub, states, **common):
        raise NotImplementedError

    # ---- state_dict -----------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader casts every floating state tensor to its parameter's dtype, which would
        round fp32 momentum and master weights of bf16 parameters; we re-cast from the saved
        values to each state tensor's own dtype, after checking that the state fits."""
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state dict has {len(saved_groups)} "
                             f"parameter groups, the optimizer has {len(self.param_groups)}")
        id_to_param = {}
        for g_saved, g in zip(saved_groups, self.param_groups):
            if len(g_saved["params"]) != len(g["params"]):
                raise ValueError(f"{type(self).__name__}.load_state_dict: a saved group has {len(g_saved['params'])} "
                                 f"params, the optimizer's has {len(g['params'])}")
            id_to_param.update(zip(g_saved["params"], g["params"]))
        saved_state = state_dict.get("state", {})
        for pid, st in saved_state.items():
            p = id_to_param.get(pid)
            if p is None:
                continue
            for key in ("exp_avg", "kahan_comp", "master_param"):
                if key in st and tuple(st[key].shape) != tuple(p.shape):
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state '{key}' of parameter {pid} "
                                     f"has shape {list(st[key].shape)}, the parameter has {list(p.shape)}")
        super().load_state_dict(state_dict)
        for pid, st in saved_state.items():
            p = id_to_param.get(pid)
            if p is None:
                continue
            mine = self.state[p]
            if "exp_avg" in st:
                mine["exp_avg"] = st["exp_avg"].to(device=p.device, dtype=self._momentum_dtype_for(p)).contiguous()
            if "master_param" in st:
                mine["master_param"] = st["master_param"].to(device=p.device, dtype=torch.float32).contiguous()
            if "kahan_comp" in st:
                mine["kahan_comp"] = st["kahan_comp"].to(device=p.device, dtype=p.dtype).contiguous()
            if "step" in st:
                mine["step"] = torch.as_tensor(st["step"]).to(device=p.device, dtype=torch.int64).reshape(())
            else:
                self._on_missing_step(pid)
                mine["step"] = torch.zeros((), dtype=torch.int64, device=p.device)

    def _on_missing_step(self, pid):
        pass
