"""Lion (Chen et al. 2023, arXiv:2302.06675), a drop-in torch.optim optimizer.

    c = b1*m + (1-b1)*g;  theta -= lr*(sign(c) + wd*theta);  m = b2*m + (1-b2)*g
Decay is decoupled, multiplied by the scheduled lr and taken on the pre-update parameter
(optimizers.md §1.3). One fused op per group and device: tigercore::lion_step_.
Reference: tigercore/reference/optim.py::lion_step_.
"""
from __future__ import annotations

import math


from ._base import SignMomentumOptimizer, _as_float


class Lion(SignMomentumOptimizer):
    """Lion with fused native kernels (CPU, CUDA) and an exact pure-PyTorch reference.

    Args:
        params: parameters or parameter groups.
        lr: step size eta (a float or a 0-d tensor; torch LR schedulers work).
        betas: (beta1, beta2): direction interpolation and momentum EMA coefficients.
        weight_decay: lambda; the decay step is lr * lambda * theta.
        maximize: ascend instead of descend.
        precision: storage of bf16/fp16 params: "master" (default; fp32 master copy, exact with
            respect to fp32 training), "kahan" (bf16/fp16 compensation buffer), "stochastic"
            (Philox stochastic rounding), "none" (round to nearest; small steps are lost).
        momentum_dtype: None (fp32; fp64 for fp64 params), or torch.bfloat16/float16/float32.
        seed: 32-bit seed of the stochastic-rounding stream.
        backend: "auto" (native kernel when registered, else the reference), "native" (error if
            no native kernel), "reference" (pure PyTorch).
    """

    _op_name = "lion_step_"

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False,
                 precision="master", momentum_dtype=None, seed=0, backend="auto"):
        _validate(lr, betas, weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, precision=precision, momentum_dtype=momentum_dtype,
                         seed=seed, backend=backend)

    def add_param_group(self, param_group: dict) -> None:
        _validate(param_group.get("lr", self.defaults["lr"]), param_group.get("betas", self.defaults["betas"]),
                  param_group.get("weight_decay", self.defaults["weight_decay"]))
        super().add_param_group(param_group)

    def _call_op(self, op, group, sub, states, **common):
        beta1, beta2 = group["betas"]
        op(common.pop("params"), common.pop("grads"), common.pop("exp_avgs"), common.pop("aux"),
           common.pop("steps"), lr=_as_float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
           weight_decay=float(group["weight_decay"]), **common)


def _validate(lr, betas, weight_decay):
    lr = _as_float(lr)
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"Invalid learning rate: {lr}")
    if len(betas) != 2 or not all(0.0 <= float(b) <= 1.0 for b in betas):
        raise ValueError(f"Invalid betas: {betas} (each must lie in [0, 1])")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"Invalid weight_decay: {weight_decay}")
