"""Machinery shared by Lion and Tiger: state layout, precision modes, external writes, the
GradScaler protocol, all-or-nothing validation, backend routing, and a state_dict loader that
checks everything before replacing anything. Semantics: docs/semantics.md.

State per parameter, created when the parameter is added (so a compiled step never creates it):
``exp_avg`` (momentum), ``step`` (0-d int64 micro-step count on the parameter's device),
``master_param`` (fp32, precision="master") or ``kahan_comp`` (precision="kahan") for bf16/fp16
parameters, ``exp_avg_absmax`` with 8-bit momentum (``exp_avg`` then holds uint8 codes; [note: 8-bit
momentum], docs/semantics.md "8-bit momentum"), and, not saved in state_dict, ``param_stamp``
(int64 [2]: the parameter's version counter and storage address after this optimizer last wrote
it; [note: external writes]).
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch

from .. import _checks, _native
from ..reference import momentum8 as _m8
from ..reference import optim as _ref
from . import _distributed as _dist
from ._warn import warn_user

PRECISIONS = _checks.PRECISIONS
BACKENDS = ("auto", "native", "reference")
HALF = _checks.HALF_DTYPES
MOMENTUM_DTYPES = (None, torch.float32, torch.float64, torch.float16, torch.bfloat16)
MOMENTUM_BITS = (32, 8)
# Keys of a bitsandbytes 8-bit optimizer's per-parameter state (see _saved_momentum).
_BNB_KEYS = ("state1", "qmap1", "absmax1", "state2", "qmap2", "absmax2", "unorm_vec", "__bnb_optimizer_quant_state__")
DERIVED_STATE = ("param_stamp", "sumsq")  # rebuilt from the parameters, never saved


def _storage_span(t: torch.Tensor):
    """[first byte, last byte + 1) of the memory a strided tensor can touch; None if empty."""
    t = _dist.local(t)  # a DTensor's local shard
    if t.numel() == 0:
        return None
    lo = hi = t.storage_offset()
    for size, stride in zip(t.shape, t.stride()):
        if stride >= 0:
            hi += (size - 1) * stride
        else:
            lo += (size - 1) * stride
    base = t.untyped_storage().data_ptr()
    es = t.element_size()
    return base + lo * es, base + (hi + 1) * es


def overlapping_pair(tensors):
    """Indices (i, j) of two tensors whose memory overlaps, or None."""
    spans = sorted((s[0], s[1], i) for i, t in enumerate(tensors) if (s := _storage_span(t)) is not None)
    for (a0, a1, i), (b0, b1, j) in zip(spans, spans[1:]):
        if b0 < a1:
            return i, j
    return None


class SignMomentumOptimizer(torch.optim.Optimizer):
    """Base class; subclasses define ``_op_name``, ``_kind_keys``, ``_validate_group`` and ``_call_op``."""

    _op_name = ""
    _kind_keys: tuple = ()
    # GradScaler: hand us grad_scale / found_inf as tensors instead of unscaling on the host.
    _step_supports_amp_scaling = True

    def __init__(self, params, defaults, *, precision, momentum_dtype, seed, backend, momentum_bits=32):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if momentum_dtype not in MOMENTUM_DTYPES:
            raise ValueError(f"momentum_dtype must be None, torch.float32, torch.float16, torch.bfloat16 "
                             f"or torch.float64, got {momentum_dtype!r}")
        if isinstance(momentum_bits, bool) or momentum_bits not in MOMENTUM_BITS:
            raise ValueError(f"momentum_bits must be 32 (the momentum_dtype's storage) or 8 (uint8 codes with a "
                             f"float32 absmax per block of {_m8.BLOCK}), got {momentum_bits!r}")
        if momentum_bits == 8 and momentum_dtype is not None:
            raise ValueError(f"momentum_dtype={momentum_dtype} and momentum_bits=8 are exclusive: 8-bit momentum is "
                             "its own storage (uint8 codes with a float32 absmax per block); pass one of them")
        if not (_checks.is_real_number(seed) and int(seed) == seed and 0 <= int(seed) < 2**32):
            raise ValueError(f"seed must be a 32-bit unsigned integer, got {seed!r}")
        self.precision = precision
        self.momentum_dtype = momentum_dtype
        self.momentum_bits = int(momentum_bits)
        self.seed = int(seed)
        self.backend = backend
        self._warned: set = set()
        self._in_backward = None  # the StepInBackward handle while parameters step inside backward
        self._validate_group(dict(defaults))
        super().__init__(params, defaults)

    # ---- groups ---------------------------------------------------------------------------
    def _validate_group(self, group: dict) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict) -> None:
        """Validates the group, refuses parameters listed twice or overlapping in memory, and
        creates the state of its parameters."""
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        name = type(self).__name__
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids) or seen & set(ids):
            raise ValueError(f"{name}: a parameter is listed twice (within or across parameter groups); "
                             "list each parameter once")
        for p in params:
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{name} can only optimize Tensors, got {type(p).__name__}")
            if p.dtype not in _checks.PARAM_DTYPES:
                raise ValueError(f"{name}: parameter dtype {p.dtype} is not supported (float32, float64, "
                                 "float16, bfloat16)")
        existing = [p for g in self.param_groups for p in g["params"]]
        pair = overlapping_pair(existing + params)
        if pair is not None:
            raise ValueError(f"{name}: two parameters share memory (shapes {list((existing + params)[pair[0]].shape)} "
                             f"and {list((existing + params)[pair[1]].shape)}); an update of one would change the "
                             "other. Pass the shared tensor once (tied weights are one Parameter).")
        self._validate_group({**self.defaults, **param_group})
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self._init_state(p, group)

    # ---- state ----------------------------------------------------------------------------
    def _momentum_dtype_for(self, p: torch.Tensor) -> torch.dtype:
        if self.momentum_bits == 8:
            return torch.uint8  # codes; their block absmax is the state "exp_avg_absmax"
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

    def _extra_state(self, p: torch.Tensor, group: dict) -> dict:
        """Derived per-parameter state of a subclass (Tiger: the carried sums of squares)."""
        return {}

    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        # Outside inference mode: state made inside it could never be updated outside it again.
        with torch.no_grad(), torch.inference_mode(False):
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=torch.int64, device=p.device)
            if self.momentum_bits == 8 and _dist.is_dtensor(p):
                raise NotImplementedError(f"{type(self).__name__}: momentum_bits=8 is not supported for DTensor "
                                          "parameters (FSDP2/tensor parallel: a shard would split quantisation "
                                          "blocks); use momentum_bits=32 there")
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(p, dtype=self._momentum_dtype_for(p),
                                                    memory_format=torch.contiguous_format)
            if self.momentum_bits == 8 and "exp_avg_absmax" not in state:  # code 0 with absmax 0: m = 0
                state["exp_avg_absmax"] = torch.zeros(_m8.num_blocks(p.numel()), dtype=torch.float32, device=p.device)
            key = self._aux_key(p)
            if key == "kahan_comp" and key not in state:
                state[key] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            elif key == "master_param" and key not in state:
                state[key] = p.detach().float().clone(memory_format=torch.contiguous_format)
            if "param_stamp" not in state:
                lp = _dist.local(p)  # [note: local tensors]
                state["param_stamp"] = torch.tensor([lp._version, lp.data_ptr()], dtype=torch.int64)
            for k, v in self._extra_state(p, group).items():
                if k not in state or state[k].shape != v.shape:
                    state[k] = v
        return state

    def mark_params_written(self, params=None) -> None:
        """Declare writes to parameters that their version counter does not see (through ``.data``,
        numpy, or a raw pointer): the next step treats them as written externally ([note: external
        writes]). Writes through in-place torch ops, ``copy_`` and ``load_state_dict`` are noticed
        without this call. ``params``: the parameters written (default: all)."""
        wanted = None if params is None else {id(p) for p in ([params] if isinstance(params, torch.Tensor) else params)}
        for group in self.param_groups:
            for p in group["params"]:
                if wanted is None or id(p) in wanted:
                    st = self.state.get(p)
                    if st and "param_stamp" in st:
                        st["param_stamp"].fill_(-1)

    def _warn_once(self, key, message: str, category=UserWarning):
        if key not in self._warned:
            self._warned.add(key)
            warn_user(message, category)

    # ---- validation (all of it before any kernel runs) -------------------------------------
    def _check_grad(self, p: torch.Tensor):
        g = p.grad
        name = type(self).__name__
        if type(g) not in _dist.PLAIN_TYPES:
            _dist.check_plain_grad(self, p, g)
        if g.is_sparse or g.layout != torch.strided:
            raise RuntimeError(f"{name} does not support sparse gradients")
        if g.is_complex() or p.is_complex():
            raise RuntimeError(f"{name} does not support complex parameters")
        if p.dtype not in _checks.PARAM_DTYPES:
            raise RuntimeError(f"{name}: parameter dtype {p.dtype} is not supported "
                               f"(float32, float64, float16, bfloat16)")
        if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
            raise RuntimeError(f"{name}: gradient of shape {list(g.shape)} / {g.dtype} / {g.device} does not "
                               f"match its parameter of shape {list(p.shape)} / {p.dtype} / {p.device}")

    def _check_state(self, p: torch.Tensor, state: dict):
        name = type(self).__name__
        m = state["exp_avg"]
        if m.shape != p.shape or m.device != p.device or m.dtype != self._momentum_dtype_for(p):
            raise RuntimeError(f"{name}: state 'exp_avg' ({list(m.shape)}, {m.dtype}, {m.device}) does not fit its "
                               f"parameter ({list(p.shape)}, {p.dtype}, {p.device})")
        if self.momentum_bits == 8:
            a = state.get("exp_avg_absmax")
            blocks = _m8.num_blocks(p.numel())
            if a is None or a.dtype != torch.float32 or a.shape != (blocks,) or a.device != p.device:
                raise RuntimeError(f"{name}: state 'exp_avg_absmax' must be a float32 tensor of {blocks} block absmax "
                                   f"value(s) on {p.device} (8-bit momentum of a parameter of {p.numel()} elements)")
        key = self._aux_key(p)
        if key is not None:
            want = torch.float32 if key == "master_param" else p.dtype
            a = state.get(key)
            if a is None or a.shape != p.shape or a.dtype != want or a.device != p.device:
                raise RuntimeError(f"{name}: state '{key}' must be a {want} tensor of shape {list(p.shape)} "
                                   f"on {p.device}")

    def _lr_tensor(self, group: dict, device: torch.device) -> torch.Tensor:
        """The group's lr as the op's float64 tensor: a float becomes a CPU tensor; a tensor stays
        where it is when that is the CPU or the parameters' device ([note: tensor lr])."""
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            target = lr.device if lr.device.type == "cpu" or lr.device == device else device
            return lr.detach().reshape(()).to(device=target, dtype=torch.float64)
        return torch.tensor(float(lr), dtype=torch.float64)

    def _gradscaler_tensors(self, device):
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        if grad_scale is not None:
            grad_scale = grad_scale.to(device=device, dtype=torch.float32)
        if found_inf is not None:
            found_inf = found_inf.to(device=device, dtype=torch.float32)
        return grad_scale, found_inf

    def _forget_gradscaler(self):
        """GradScaler sets grad_scale / found_inf before step() and deletes them after it returns;
        when step() raises it never deletes them, and the next step would use them."""
        for attr in ("grad_scale", "found_inf"):
            if attr in self.__dict__:
                delattr(self, attr)

    def _step_tensors(self, p, state) -> list:
        """The tensors a step of p reads and writes."""
        aux_key = self._aux_key(p)
        return [p, p.grad, state["exp_avg"]] + ([state[aux_key]] if aux_key else []) + \
            ([state["exp_avg_absmax"]] if self.momentum_bits == 8 else [])

    def _use_reference(self, tensors) -> bool:
        if self.backend == "reference":
            return True
        # [note: non-contiguous tensors] the native kernels take contiguous storage; anything
        # else (rare for parameters) is updated correctly by the reference kernel instead.
        return not all(t.is_contiguous() for t in tensors)

    def _op(self, use_reference: bool, device: torch.device, name: str | None = None):
        name = name or self._op_name
        if use_reference:
            return getattr(_ref, name)
        if self.backend == "native" and not _native.has_native(name, device):
            raise RuntimeError(
                f"{type(self).__name__}(backend='native'): no native tigercore::{name} kernel is "
                f"registered for {device.type} (extension: {_native.load_error() or 'loaded'}). "
                "Build the extension or use backend='auto'.")
        return getattr(torch.ops.tigercore, name)

    def _batch_key(self, p, group):
        return None

    def _plan_step(self):
        """Validates every group, gradient and state; returns the batches to run and the
        parameters without a gradient. Nothing is modified."""
        batches, without_grad = [], []
        ordinal = 0
        for group in self.param_groups:
            self._validate_group(group)
            by_key = defaultdict(list)
            for p in group["params"]:
                pid, ordinal = ordinal, ordinal + 1
                state = self.state[p]
                if p.grad is None:
                    without_grad.append(p)
                    continue
                self._check_grad(p)
                self._check_state(p, state)
                mesh = None if type(p) in _dist.PLAIN_TYPES else _dist.mesh_of(p)  # DTensor parameters
                if mesh is not None:
                    _dist.check(self, p, state, group)
                key = (p.device, self._batch_key(p, group), self._use_reference(self._step_tensors(p, state)), mesh)
                by_key[key].append((p, pid))
            for (device, sub, use_ref, _), items in by_key.items():
                batches.append((group, device, sub, use_ref, [p for p, _ in items], [i for _, i in items]))
        return batches, without_grad

    def _advance_skipped(self, params_without_grad):
        """Advance the step of parameters without a gradient (the phase stays aligned)."""
        for p in params_without_grad:
            st = self.state[p]
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
        if self._in_backward is not None:
            from .in_backward import warn_step_is_done_in_backward
            warn_step_is_done_in_backward(self)
            return loss
        try:
            batches, without_grad = self._plan_step()
            sharded = [b for b in batches if _dist.is_dtensor(b[4][0])]
            for group, device, sub, use_ref, params, ids in batches:
                if not sharded or not _dist.is_dtensor(params[0]):
                    self._run_batch(group, params, ids, device, sub, use_ref)
            if sharded:  # DTensor parameters: tigercore/optim/_distributed.py
                _dist.run_batches(self, sharded)
            self._advance_skipped(without_grad)
        except BaseException:
            self._forget_gradscaler()
            raise
        return loss

    @torch.no_grad()
    def _step_one(self, p: torch.Tensor, group: dict, ordinal: int):
        """The step of one parameter (step_in_backward): the same checks and the same op as
        step(), on a batch of one tensor."""
        self._validate_group(group)
        if p.grad is None:
            return
        state = self.state[p]
        self._check_grad(p)
        self._check_state(p, state)
        if type(p) not in _dist.PLAIN_TYPES and _dist.mesh_of(p) is not None:  # a DTensor parameter
            _dist.check(self, p, state, group)
            return _dist.run_batches(self, [(group, p.device, self._batch_key(p, group), False, [p], [ordinal])])
        self._run_batch(group, [p], [ordinal], p.device, self._batch_key(p, group),
                        self._use_reference(self._step_tensors(p, state)))

    def _run_batch(self, group, params, ids, device, sub, use_ref):
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
                      exp_avgs=[st["exp_avg"] for st in states],
                      exp_avg_absmax=[st["exp_avg_absmax"] for st in states] if self.momentum_bits == 8 else [],
                      aux=aux,
                      steps=[st["step"] for st in states], stamps=[st["param_stamp"] for st in states],
                      lr=self._lr_tensor(group, device), param_ids=ids,
                      maximize=bool(group.get("maximize", False)), precision=self.precision,
                      seed=self.seed, grad_scale=grad_scale, found_inf=found_inf,
                      compiled=torch.compiler.is_compiling(), cautious=bool(group.get("cautious", False)))

    def _call_op(self, op, group, sub, states, **common):
        raise NotImplementedError

    # ---- state_dict -----------------------------------------------------------------------
    def state_dict(self):
        sd = super().state_dict()
        sd["state"] = {k: {kk: vv for kk, vv in v.items() if kk not in DERIVED_STATE} for k, v in sd["state"].items()}
        return sd

    def _convert_foreign_groups(self, saved_groups: list) -> list:
        """A subclass may translate another library's group keys; the default refuses other kinds."""
        return saved_groups

    def _check_kind(self, saved_groups):
        name = type(self).__name__
        for g in saved_groups:
            missing = [k for k in self._kind_keys if k not in g]
            if missing:
                other = "Tiger" if "grad_accum_steps" in g or "tiger_class" in g else \
                    "Lion" if "betas" in g or "beta1" in g else "another optimizer"
                raise ValueError(f"{name}.load_state_dict: the state dict was saved by {other} (its groups lack "
                                 f"{missing}); a {other} state cannot be loaded into {name}")

    def load_state_dict(self, state_dict: dict) -> None:
        """Checks everything before replacing anything: the optimizer kind, group and parameter
        counts, every state tensor's shape and dtype, that no state tensor shares memory with a
        parameter, and 'step' (one integer). Then it keeps each state tensor's own dtype (torch's
        loader would round fp32 momentum and master weights of bf16 parameters to bf16)."""
        name = type(self).__name__
        saved_groups = self._convert_foreign_groups(list(state_dict.get("param_groups", [])))
        self._check_kind(saved_groups)
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state dict has {len(saved_groups)} "
                             f"parameter groups, the optimizer has {len(self.param_groups)}")
        id_to_param = {}
        for g_saved, g in zip(saved_groups, self.param_groups):
            if len(g_saved["params"]) != len(g["params"]):
                raise ValueError(f"{name}.load_state_dict: a saved group has {len(g_saved['params'])} "
                                 f"params, the optimizer's has {len(g['params'])}")
            id_to_param.update(zip(g_saved["params"], g["params"]))
            merged = {k: v for k, v in g_saved.items() if k != "params"}
            try:
                self._validate_group({**self.defaults, **merged})
            except ValueError as e:
                raise ValueError(f"{name}.load_state_dict: a saved group's hyperparameters are invalid: {e}") from None
        saved_state, momenta = {}, {}
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, st in state_dict.get("state", {}).items():
            p = id_to_param.get(pid)
            if p is None:
                continue
            st = {k: v for k, v in st.items() if v is not None and k not in DERIVED_STATE}
            momenta[pid] = self._saved_momentum(pid, p, st)
            for key in ("kahan_comp", "master_param"):
                if key not in st:
                    continue
                t = st[key]
                if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"{name}.load_state_dict: state '{key}' of parameter {pid} must be a floating "
                                     f"tensor of shape {list(p.shape)}, got "
                                     f"{list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            for key in ("exp_avg", "exp_avg_absmax", "kahan_comp", "master_param"):
                t = st.get(key)
                if isinstance(t, torch.Tensor) and overlapping_pair(params + [t]) is not None and t.device == p.device:
                    raise ValueError(f"{name}.load_state_dict: state '{key}' of parameter {pid} shares memory "
                                     "with a parameter; pass a copy (e.g. the result of torch.load)")
            if "step" in st:
                s = st["step"]
                ok = (isinstance(s, torch.Tensor) and s.numel() == 1 and not s.is_complex()) or _checks.is_real_number(s)
                value = float(s) if ok else math.nan
                if not (ok and math.isfinite(value) and value == int(value) and value >= 0):
                    raise ValueError(f"{name}.load_state_dict: 'step' of parameter {pid} must be one non-negative "
                                     f"integer, got {s!r}")
            # The momentum is set below from momenta (torch's loader would round it to the param dtype).
            saved_state[pid] = {k: v for k, v in st.items() if k not in _BNB_KEYS + ("exp_avg", "exp_avg_absmax")}
        converted = {"state": saved_state, "param_groups": saved_groups}
        super().load_state_dict(converted)
        for g in self.param_groups:  # torch's loader keeps unknown keys; defaults fill missing ones
            for k, v in self.defaults.items():
                g.setdefault(k, v)
        for pid, st in saved_state.items():
            p = id_to_param[pid]
            mine = self.state[p]
            mine.pop("exp_avg_absmax", None)
            if momenta[pid] is not None:
                mine.update(self._momentum_state(p, momenta[pid]))
            for key, dtype in (("master_param", torch.float32), ("kahan_comp", p.dtype)):
                if key in st and self._aux_key(p) == key:
                    mine[key] = _dist.like_param(st[key], p).to(device=p.device, dtype=dtype, copy=True).contiguous()
                elif key in mine and self._aux_key(p) != key:
                    del mine[key]
            if "step" in st:
                mine["step"] = torch.tensor(int(float(st["step"])), dtype=torch.int64, device=p.device)
            else:
                self._on_missing_step(pid)
                mine["step"] = torch.zeros((), dtype=torch.int64, device=p.device)
        for g in self.param_groups:
            for p in g["params"]:
                st = self.state[p]
                for k in DERIVED_STATE:
                    st.pop(k, None)
                self._init_state(p, g)  # state the checkpoint lacks; stamps of the current parameters

    def _on_missing_step(self, pid):
        pass

    # ---- momentum in a saved state: ours (32-bit or 8-bit) or bitsandbytes' ------------------
    def _saved_momentum(self, pid, p, st):
        """The saved momentum of parameter pid, checked: ("codes", codes, absmax) for an 8-bit one,
        ("float", m) otherwise, None when there is none. bitsandbytes' 8-bit state (state1 codes,
        qmap1, absmax1 per block of 256, possibly nested under __bnb_optimizer_quant_state__) is
        dequantised with its own map."""
        where = f"{type(self).__name__}.load_state_dict: parameter {pid}"
        bnb = st.get("__bnb_optimizer_quant_state__", st)
        if isinstance(bnb, dict) and "state1" in bnb:
            if "state2" in bnb and bnb["state2"] is not None:
                raise ValueError(f"{where}: the bitsandbytes state has two moments (state2); only Lion's one "
                                 "momentum (Lion8bit / Lion32bit) converts")
            s1 = bnb["state1"]
            if not isinstance(s1, torch.Tensor) or s1.numel() != p.numel():
                raise ValueError(f"{where}: bitsandbytes 'state1' must be a tensor of {p.numel()} elements")
            if s1.dtype == torch.uint8:
                qmap, absmax = bnb.get("qmap1"), bnb.get("absmax1")
                blocks = _m8.num_blocks(p.numel(), _m8.BNB_BLOCK)
                if not (isinstance(qmap, torch.Tensor) and qmap.numel() == 256 and isinstance(absmax, torch.Tensor)
                        and absmax.numel() == blocks):
                    raise ValueError(f"{where}: a bitsandbytes 8-bit state needs 'qmap1' (256 code values) and "
                                     f"'absmax1' ({blocks} values, one per block of {_m8.BNB_BLOCK}); got "
                                     f"{None if qmap is None else qmap.numel()} and "
                                     f"{None if absmax is None else absmax.numel()} (blockwise=False states do not convert)")
                return "float", _m8.bnb_dequantize(s1, qmap, absmax).view(p.shape)
            if not s1.is_floating_point():
                raise ValueError(f"{where}: bitsandbytes 'state1' must be uint8 codes or floating, got {s1.dtype}")
            return "float", s1.reshape(p.shape)
        m = st.get("exp_avg")
        if m is None:
            return None
        if not isinstance(m, torch.Tensor) or tuple(m.shape) != tuple(p.shape):
            raise ValueError(f"{where}: state 'exp_avg' must be a tensor of shape {list(p.shape)}, got "
                             f"{list(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__}")
        if m.dtype == torch.uint8:
            a = st.get("exp_avg_absmax")
            blocks = _m8.num_blocks(p.numel())
            if not (isinstance(a, torch.Tensor) and a.dtype == torch.float32 and a.numel() == blocks):
                got = "missing" if a is None else (f"{a.dtype}, {a.numel()} element(s)" if isinstance(a, torch.Tensor)
                                                   else type(a).__name__)
                raise ValueError(f"{where}: state 'exp_avg' holds 8-bit momentum codes (uint8), which need "
                                 f"'exp_avg_absmax': a float32 tensor of {blocks} block absmax value(s) (one per "
                                 f"block of {_m8.BLOCK}); got {got}")
            a_local = _dist.local(a)
            if not bool(torch.isfinite(a_local).all()) or bool((a_local < 0).any()):
                raise ValueError(f"{where}: state 'exp_avg_absmax' must hold finite values >= 0 (block absmax of the "
                                 f"8-bit momentum), got min {float(a_local.min())}, max {float(a_local.max())}")
            return "codes", m, a
        if not m.is_floating_point():
            raise ValueError(f"{where}: state 'exp_avg' must be a floating tensor or uint8 8-bit codes, got {m.dtype}")
        return "float", m

    def _momentum_state(self, p, saved) -> dict:
        """State entries for this optimizer's momentum storage from a _saved_momentum result: 8-bit
        codes are kept; a float momentum is quantised for momentum_bits=8; codes are dequantised
        for 32-bit storage (docs/semantics.md, "8-bit momentum")."""
        if self.momentum_bits == 8:
            if saved[0] == "codes":
                return {"exp_avg": saved[1].to(device=p.device, copy=True).contiguous(),
                        "exp_avg_absmax": saved[2].to(device=p.device, copy=True).contiguous()}
            codes, absmax = _m8.encode(_dist.like_param(saved[1], p).to(device=p.device, dtype=torch.float32).reshape(-1))
            return {"exp_avg": codes.view(p.shape), "exp_avg_absmax": absmax}
        m = saved[1] if saved[0] == "float" else _m8.decode(saved[1].reshape(-1), saved[2].reshape(-1)).view(p.shape)
        # like_param: in the parameter's (DTensor) layout
        return {"exp_avg": _dist.like_param(m, p).to(device=p.device, dtype=self._momentum_dtype_for(p),
                                                      copy=True).contiguous()}


__all__ = ["SignMomentumOptimizer", "overlapping_pair"]
