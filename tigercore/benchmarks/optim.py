"""Optimizer-step benchmarks: tigercore's fused Lion/Tiger against the pure-PyTorch reference, a
torch._foreach Lion, a torch.compile'd Lion, torch's fused AdamW and every installed peer Lion.

Each candidate steps the same parameters and gradients. Effective bandwidth counts the bytes a
step must move: every parameter, momentum and buffer read and written once, every gradient read
once (for Tiger the same as Lion: its RMS is carried, see csrc/cpu/optim_ops.cpp).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import torch

from .. import optim as tc_optim
from .ceilings import Axpy
from .timing import interleaved_step_ms, measure, transient_bytes


# ---- baselines --------------------------------------------------------------------------------
class ForeachLion(torch.optim.Optimizer):
    """Lion with torch._foreach ops (allocates the interpolated direction); momentum in the params'
    dtype (the foreach ops take one dtype per call)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            ms = [self.state[p].setdefault("exp_avg", torch.zeros_like(p)) for p in ps]
            b1, b2 = group["betas"]
            c = torch._foreach_lerp(ms, gs, 1 - b1)
            torch._foreach_sign_(c)
            torch._foreach_mul_(ps, 1 - group["lr"] * group["weight_decay"])
            torch._foreach_add_(ps, c, alpha=-group["lr"])
            torch._foreach_lerp_(ms, gs, 1 - b2)


def _lion_tensor_step(p, g, m, lr: float, b1: float, b2: float, wd: float):
    # written out of place and copied back, the form inductor fuses into one loop per tensor; the
    # arithmetic is in m's dtype (fp32 momentum for bf16/fp16 params: upcast, then rounded back)
    g = g.to(m.dtype)
    c = m * b1 + g * (1 - b1)
    p.copy_(p.to(m.dtype) * (1 - lr * wd) - lr * torch.sign(c))
    m.copy_(m * b2 + g * (1 - b2))


class CompiledLion(torch.optim.Optimizer):
    """The plain-torch Lion step, torch.compile'd (fullgraph) over the whole parameter list, with
    momentum in float32 (or the params' dtype if wider) — the benchmark's "fp32 momentum"
    configuration, the same state tigercore keeps — or in ``momentum_dtype`` if given."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, momentum_dtype=None):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self._momentum_dtype = momentum_dtype
        self._compiled = torch.compile(self._step_all, fullgraph=True, dynamic=False)

    def _momentum(self, p):
        dt = self._momentum_dtype or (p.dtype if p.dtype == torch.float64 else torch.float32)
        return self.state[p].setdefault("exp_avg", torch.zeros_like(p, dtype=dt))

    @staticmethod
    def _step_all(ps, gs, ms, lr: float, b1: float, b2: float, wd: float):
        for p, g, m in zip(ps, gs, ms):
            _lion_tensor_step(p, g, m, lr, b1, b2, wd)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            ms = [self._momentum(p) for p in ps]
            b1, b2 = group["betas"]
            self._compiled(ps, [p.grad for p in ps], ms, group["lr"], b1, b2, group["weight_decay"])


def _peer(module: str, attr: str, **fixed):
    if importlib.util.find_spec(module.split(".")[0]) is None:
        return None
    def make(params, **kw):
        mod = importlib.import_module(module)
        obj = mod
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj(params, **{**kw, **fixed})
    return make


def peers() -> dict:
    """Installed peer Lion implementations (constructor taking params, lr, betas, weight_decay)."""
    found = {
        "lion-pytorch": _peer("lion_pytorch", "Lion", use_triton=False),
        "optimi": _peer("optimi", "Lion"),
        "pytorch_optimizer": _peer("pytorch_optimizer", "Lion"),
        "timm": _peer("timm.optim", "Lion"),
        "bitsandbytes": _peer("bitsandbytes.optim", "Lion32bit"),
        "deepspeed-cpu": _peer("deepspeed.ops.lion", "DeepSpeedCPULion"),
    }
    return {k: v for k, v in found.items() if v is not None}


# ---- candidates -------------------------------------------------------------------------------
@dataclass
class Candidate:
    name: str
    make: object           # callable(params) -> optimizer
    family: str = "lion"   # lion | tiger | adamw
    baseline: bool = False
    kwargs: dict = field(default_factory=dict)


def candidates(precision: str = "master", include_reference: bool = False, include_compiled: bool = True,
               include_peers: bool = True, low_precision: bool = False) -> list[Candidate]:
    lr, betas, wd = 1e-4, (0.9, 0.99), 0.1
    c = [Candidate("tigercore Lion", lambda ps: tc_optim.Lion(ps, lr=lr, betas=betas, weight_decay=wd,
                                                                precision=precision)),
         Candidate("tigercore Tiger", lambda ps: tc_optim.Tiger(ps, lr=1e-3, precision=precision), "tiger"),
         Candidate("tigercore Tiger (no guard)", lambda ps: tc_optim.Tiger(ps, lr=1e-3, precision=precision,
                                                                             nonfinite_guard=False), "tiger")]
    if low_precision and precision != "none":
        # bf16/fp16 params: the same work as the compiled Lion (fp32 momentum, no master copy and no
        # rounding fix, 14 B a parameter for bf16), for a like-for-like ratio
        c.insert(1, Candidate("tigercore Lion (precision=none)", lambda ps: tc_optim.Lion(
            ps, lr=lr, betas=betas, weight_decay=wd, precision="none")))
    if include_reference:
        c.append(Candidate("reference Lion", lambda ps: tc_optim.Lion(ps, lr=lr, betas=betas, weight_decay=wd,
                                                                      precision=precision, backend="reference"),
                           baseline=True))
    c.append(Candidate("torch._foreach Lion", lambda ps: ForeachLion(ps, lr=lr, betas=betas, weight_decay=wd),
                       baseline=True))
    if include_compiled:
        c.append(Candidate("torch.compile Lion", lambda ps: CompiledLion(ps, lr=lr, betas=betas, weight_decay=wd),
                           baseline=True))
    c.append(Candidate("torch AdamW (fused)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=wd, fused=True),
                       "adamw", baseline=True))
    if include_peers:
        for name, make in peers().items():
            c.append(Candidate(f"{name} Lion", (lambda mk: lambda ps: mk(ps, lr=lr, betas=betas, weight_decay=wd))(make),
                               baseline=True))
    return c


def bytes_moved(params) -> int:
    """Bytes a step must move: params and same-sized state read + written, grads read."""
    total = 0
    for p, st in params:
        total += p.numel() * (2 * p.element_size() + p.grad.element_size())
        for v in st.values():
            if isinstance(v, torch.Tensor) and v.numel() == p.numel() and v.data_ptr() != p.data_ptr():
                total += 2 * v.numel() * v.element_size()
    return total


def make_params(shapes, dtype, device="cpu", seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    params = []
    for _, shape in shapes:
        p = torch.nn.Parameter((torch.randn(shape, generator=gen) * 0.02).to(device=device, dtype=dtype))
        p.grad = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
        params.append(p)
    return params


def run_candidate(cand: Candidate, params, device="cpu", repeats=5) -> dict:
    try:
        opt = cand.make(params)
        opt.step()  # state allocation (and compilation) outside the timing
        timing = measure(opt.step, device, repeats=repeats, warmup=1)
        extra = transient_bytes(opt.step, device)
        moved = bytes_moved([(p, opt.state[p]) for p in params])
        del opt
        return {"name": cand.name, "family": cand.family, "baseline": cand.baseline,
                "ms": timing["median_s"] * 1e3, "gbps": moved / timing["median_s"] / 1e9,
                "bytes_moved": moved, "transient_bytes": extra}
    except Exception as e:  # a peer that does not support this dtype/device: report, continue
        return {"name": cand.name, "family": cand.family, "baseline": cand.baseline, "error": f"{type(e).__name__}: {e}"[:200]}


def lion_vs_axpy(params, precision: str = "master", rounds: int = 7, numel: int = 1 << 26) -> dict:
    """tigercore Lion's GB/s over the in-place axpy's, the two timed round by round (one step of
    each per round, medians), so that this shared machine's minute-to-minute bandwidth swings hit
    both alike. CPU only; the ratio the issue-3 target (>= 0.9) is about."""
    opt = tc_optim.Lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1, precision=precision)
    opt.step()
    axpy = Axpy(numel)
    ms = interleaved_step_ms({"lion": opt, "axpy": axpy}, rounds)
    lion_gbps = bytes_moved([(p, opt.state[p]) for p in params]) / ms["lion"] / 1e6
    axpy_gbps = axpy.nbytes / ms["axpy"] / 1e6
    return {"lion_gbps": lion_gbps, "axpy_gbps": axpy_gbps, "ratio": lion_gbps / axpy_gbps, "rounds": rounds}
