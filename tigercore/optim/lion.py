"""Lion (Chen et al. 2023, arXiv:2302.06675), a drop-in torch.optim optimizer.

    c = b1*m + (1-b1)*g;  theta -= lr*(sign(c) + wd*theta);  m = b2*m + (1-b2)*g
Decay is decoupled, multiplied by the scheduled lr and taken on the pre-update parameter
(docs/semantics.md, "Lion"). One fused op per group and device: tigercore::lion_step_.
Reference: tigercore/reference/optim.py::lion_step_.
"""
from __future__ import annotations

from .. import _checks
from ._base import HALF, SignMomentumOptimizer

# optimi's Lion group keys that have a Lion equivalent here (see _convert_foreign_groups).
_OPTIMI_KEYS = ("beta1", "beta2")
# bitsandbytes' Lion8bit / Lion32bit group keys without a meaning here (its lr, betas and decoupled
# weight decay are Lion's); its 8-bit momentum converts in the base loader (_saved_momentum).
_BNB_GROUP_KEYS = ("eps", "optim_bits", "min_8bit_size", "percentile_clipping", "block_wise", "max_unorm",
                   "skip_zeros", "is_paged", "alpha", "t_alpha", "t_beta3")


class Lion(SignMomentumOptimizer):
    """Lion with fused native kernels (CPU, CUDA) and an exact pure-PyTorch reference.

    Args:
        params: parameters or parameter groups.
        lr: step size eta: a float, or a one-element floating tensor (torch LR schedulers update it
            in place, so a compiled step is not recompiled when it changes).
        betas: (beta1, beta2): direction interpolation and momentum EMA coefficients, in [0, 1].
        weight_decay: lambda >= 0; the decay step is lr * lambda * theta.
        maximize: ascend instead of descend.
        cautious: keep the sign step only where it agrees with the gradient and rescale the kept
            part by n / max(kept, n/1000) per tensor (timm's caution=True; docs/semantics.md,
            "Cautious masking"). One more read of the gradient and momentum per step.
        precision: storage of bf16/fp16 params: "master" (default; fp32 master copy, exact with
            respect to fp32 training), "kahan" (bf16/fp16 compensation buffer), "stochastic"
            (Philox stochastic rounding), "none" (round to nearest; small steps are lost).
        momentum_dtype: None (fp32; fp64 for fp64 params), or torch.bfloat16/float16/float32
            (fp16 momentum saturates at +-65504).
        momentum_bits: 32 (default: momentum_dtype's storage) or 8: the momentum is stored as uint8
            codes with a float32 absmax per block of 256 elements, ~1 B/param (state
            ``exp_avg_absmax``; docs/semantics.md, "8-bit momentum"). Exclusive with momentum_dtype.
        seed: 32-bit seed of the stochastic-rounding stream.
        backend: "auto" (native kernel when registered, else the reference), "native" (error if
            no native kernel), "reference" (pure PyTorch).
    """

    _op_name = "lion_step_"
    _kind_keys = ("betas",)

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False, cautious=False,
                 precision="master", momentum_dtype=None, momentum_bits=32, seed=0, backend="auto"):
        defaults = dict(lr=lr, betas=tuple(betas) if isinstance(betas, (tuple, list)) else betas,
                        weight_decay=weight_decay, maximize=maximize, cautious=cautious)
        super().__init__(params, defaults, precision=precision, momentum_dtype=momentum_dtype,
                         seed=seed, backend=backend, momentum_bits=momentum_bits)

    def _validate_group(self, group: dict) -> None:
        _checks.validate_lr(group["lr"])
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas!r} (a pair (beta1, beta2))")
        for b, name in zip(betas, ("betas[0]", "betas[1]")):
            _checks.validate_real(b, name, 0.0, 1.0)
        _checks.validate_real(group["weight_decay"], "weight_decay", 0.0)
        for key in ("maximize", "cautious"):
            if not isinstance(group.get(key, False), bool):
                raise ValueError(f"Invalid {key}: {group[key]!r} (a bool)")
        if float(betas[0]) == 1.0 and float(betas[1]) == 1.0:
            self._warn_once(("betas", id(group)), "Lion: betas = (1, 1) keeps the momentum at its initial value "
                                                  "and ignores every gradient: theta never moves except by decay.")

    def _init_state(self, p, group):
        state = super()._init_state(p, group)
        if p.dtype in HALF and self.precision == "none":
            self._warn_once("precision-none", (
                f"{type(self).__name__}: precision='none' with {p.dtype} parameters stores updates with "
                "round-to-nearest; steps smaller than half an ulp are lost (e.g. bf16 weights with "
                "|w| >= 1/32 never move at lr 1e-4). Use precision='master' (default), 'kahan' or 'stochastic'."))
        return state

    def _call_op(self, op, group, sub, states, **common):
        beta1, beta2 = group["betas"]
        op(common.pop("params"), common.pop("grads"), common.pop("exp_avgs"), common.pop("aux"),
           common.pop("steps"), common.pop("stamps"), common.pop("exp_avg_absmax", []), beta1=float(beta1),
           beta2=float(beta2), weight_decay=float(group["weight_decay"]), **common)

    def _convert_foreign_groups(self, saved_groups):
        """optimi's Lion saves beta1/beta2 (and kahan_comp=None, dropped by the loader): its lr, betas
        and weight decay are taken over; with its decouple_lr the decay becomes wd / max_lr
        (docs/semantics.md, "Weight decay"). bitsandbytes' Lion groups (lr, betas, weight_decay: the
        same decoupled decay) lose their bitsandbytes-only keys."""
        out = []
        for g in saved_groups:
            if "betas" in g and "eps" in g:
                g = {k: v for k, v in g.items() if k not in _BNB_GROUP_KEYS}
            if "betas" not in g and all(k in g for k in _OPTIMI_KEYS):
                wd = float(g.get("weight_decay", 0.0))
                if g.get("decouple_lr"):
                    wd = wd / float(g.get("max_lr") or g["lr"])
                g = {"params": g["params"], "lr": g["lr"], "betas": (float(g["beta1"]), float(g["beta2"])),
                     "weight_decay": wd, "maximize": bool(g.get("maximize", False))}
            out.append(g)
        return out
