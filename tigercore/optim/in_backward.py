"""step_in_backward: run the optimizer step of each parameter inside backward, as soon as its
gradient is complete, and free that gradient at once (gradient release, as in torchtune and
torchtitan). No full set of gradients is ever held: with Tiger and grad_accum_steps=k, each
micro-batch's gradient goes straight into the momentum (docs/semantics.md "Step inside backward").

    handle = step_in_backward(model, opt)      # opt: Lion or Tiger over model's parameters
    for batch in loader:
        loss_fn(model(batch)).backward()        # every parameter steps here
        sched.step()                             # LR schedulers work as usual
    handle.remove()                              # back to opt.step()

The parameters end bit for bit where the usual backward-then-step() loop puts them: each tensor's
step is the same fused op on the same tensors, only called one tensor at a time
(tests/test_step_in_backward.py).
"""
from __future__ import annotations

import torch

from ._base import SignMomentumOptimizer


class StepInBackward:
    """The registered hooks; ``remove()`` (or leaving a ``with`` block) unregisters them."""

    def __init__(self, optimizer: SignMomentumOptimizer, params):
        if not isinstance(optimizer, SignMomentumOptimizer):
            raise TypeError(f"step_in_backward needs a tigercore Lion or Tiger optimizer, got {type(optimizer).__name__}")
        if getattr(optimizer, "_in_backward", None) is not None:
            raise RuntimeError("step_in_backward: this optimizer already steps inside backward; remove() the first "
                               "handle before registering again")
        where = {}
        ordinal = 0
        for group in optimizer.param_groups:
            for p in group["params"]:
                where[id(p)] = (p, group, ordinal)
                ordinal += 1
        chosen = list(where.values()) if params is None else []
        if params is not None:
            for p in params:
                if id(p) not in where:
                    raise ValueError(f"step_in_backward: a parameter of shape {list(p.shape)} is not in the optimizer")
                chosen.append(where[id(p)])
        self.optimizer = optimizer
        self._all = list(where.values())
        self._stepped: set = set()
        self._callback_queued = False
        self._handles = [p.register_post_accumulate_grad_hook(self._hook_for(p, group, ordinal))
                         for p, group, ordinal in chosen if p.requires_grad]
        optimizer._in_backward = self

    def _hook_for(self, p, group, ordinal):
        def hook(param):
            if not self._callback_queued:
                torch.autograd.Variable._execution_engine.queue_callback(self._after_backward)
                self._callback_queued = True
            self.optimizer._step_one(param, group, ordinal)
            param.grad = None  # released: the step has consumed it
            self._stepped.add(id(param))
        return hook

    def _after_backward(self):
        """Parameters that got no gradient in this backward still advance their step counter,
        as step() advances every counter (docs/semantics.md, "Step counters")."""
        opt = self.optimizer
        opt._advance_skipped([p for p, _, _ in self._all if id(p) not in self._stepped])
        opt._opt_called = True  # LR schedulers check that the optimizer stepped before them
        self._stepped.clear()
        self._callback_queued = False

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        if getattr(self.optimizer, "_in_backward", None) is self:
            self.optimizer._in_backward = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def step_in_backward(model_or_params, optimizer: SignMomentumOptimizer) -> StepInBackward:
    """Register post-accumulate-grad hooks so that each parameter of ``model_or_params`` (an
    nn.Module or parameters, all in ``optimizer``) steps as soon as its gradient is complete, and
    its gradient is freed. Returns a handle with ``remove()``.

    Supported: Lion and Tiger (every precision mode, momentum dtype, backend), Tiger's
    grad_accum_steps (the micro-gradients go into the momentum, no gradient buffer), LR schedulers,
    state_dict. Not supported: GradScaler (its found_inf is known only after the whole backward,
    after parameters have moved; use bf16 autocast, which needs no scaler, and Tiger's per-tensor
    non-finite guard), several backward() calls per step (each would step), and gradient clipping
    by the global norm (the norm is known only after backward). While the hooks are registered,
    ``optimizer.step()`` does nothing (the steps already happened in backward)."""
    if isinstance(model_or_params, torch.nn.Module):
        params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        params = [model_or_params] if isinstance(model_or_params, torch.Tensor) else list(model_or_params)
    return StepInBackward(optimizer, params)


def warn_step_is_done_in_backward(optimizer):
    optimizer._warn_once("in-backward-step", f"{type(optimizer).__name__}.step() was called while step_in_backward "
                                             "is active: the parameters already stepped inside backward, so this call "
                                             "does nothing. Remove it, or call the handle's remove() first.")


__all__ = ["step_in_backward", "StepInBackward"]
