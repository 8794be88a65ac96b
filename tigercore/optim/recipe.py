"""Hyperparameter translation AdamW -> Lion -> Tiger (the "training recipe").

  Lion  (from AdamW):  lr = lr_adamw / f,   weight_decay = wd_adamw * f     (f in 3..10, default 10)
  Tiger (from Lion):   lr = lr_lion / R,    weight_decay = wd_lion,         beta = mean(betas)
where R is the RMS of the initial class-K weights (pooled: sqrt(sum ||W||^2 / sum numel)). Each
function returns keyword arguments for the optimizer constructor; knots_in_micro_steps keeps a
PiecewiseLinearLR schedule written in updates under Tiger's accumulation. docs/recipe.md has the
rules' evidence (a measured lr sweep on the tiny GPT) and how schedulers meet accumulation.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import nn

from .param_groups import classify_parameters, tiger_param_groups

# [note: default factor] The automl Lion README puts Lion's lr 3-10x below AdamW's. On the byte-level
# GPT of tigercore.benchmarks.tiny_gpt (400 steps, bench/bench_gpt.py, docs/recipe.md) the best Lion
# lr (seed mean of 3) was the best AdamW lr / 8 (2.5e-4 vs 2e-3; seed 0 alone: 3.5e-4 vs 2.8e-3, also
# 8); AdamW/3 (6.7e-4) lies between Lion's swept 5e-4 and 1e-3 (seed-0 val 2.89, 2.83 against 2.62).
# The default takes the published upper end, 10, which is within 1.25x of the measured 8.
DEFAULT_FACTOR = 10.0
REDUCTIONS = ("pooled", "mean")


def _real(name: str, x) -> float:
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not x.is_complex():
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {x!r}")
    return float(x)


def _positive(name: str, x) -> float:
    v = _real(name, x)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {x!r}")
    return v


def _non_negative(name: str, x) -> float:
    v = _real(name, x)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {x!r}")
    return v


def adamw_to_lion(lr, weight_decay=0.0, *, factor=DEFAULT_FACTOR) -> dict:
    """Lion's ``lr`` and ``weight_decay`` from AdamW's: lr / factor and weight_decay * factor.

    Both optimizers decay by lr * weight_decay * theta per step (torch AdamW and tigercore Lion
    alike), so the product, the effective decay, is kept. Apply the same division to every value of
    an lr schedule; with torch schedulers that scale the base lr this is automatic. ``factor``: the
    automl README's range is 3..10; the default (10) is its upper end (the tiny-GPT sweep measured 8).
    Returns ``dict(lr=..., weight_decay=...)`` for ``Lion(params, **kwargs)``.
    """
    lr = _positive("adamw_to_lion: lr", lr)
    wd = _non_negative("adamw_to_lion: weight_decay", weight_decay)
    f = _positive("adamw_to_lion: factor", factor)
    return dict(lr=lr / f, weight_decay=wd * f)


def _select(weights, classes, overrides) -> list[torch.Tensor]:
    if isinstance(weights, nn.Module):
        # the tensors tiger_param_groups(model, overrides) hands to Tiger: trainable, of the classes
        cls = classify_parameters(weights, overrides)
        params = dict(weights.named_parameters())
        picked = [params[n] for n, (c, _) in cls.items() if c in classes and params[n].requires_grad]
        where = f"trainable class {'/'.join(classes)} parameters of the model"
    else:
        if isinstance(weights, torch.Tensor):
            weights = [weights]
        if not isinstance(weights, Iterable):
            raise TypeError("weight_rms: weights must be an nn.Module, a tensor or an iterable of tensors, "
                            f"got {type(weights).__name__}")
        picked = []
        for w in weights:
            if not isinstance(w, torch.Tensor):
                raise TypeError(f"weight_rms: expected tensors, got {type(w).__name__}")
            # plain tensors carry no module type: Tiger's own rule for lists, ndim >= 2 -> K
            if w.dim() >= 2:
                picked.append(w)
        where = "tensors with ndim >= 2 (class K for a plain list)"
    if not picked:
        raise ValueError(f"weight_rms: no weights to measure: found no {where}")
    for w in picked:
        if not w.is_floating_point():
            raise TypeError(f"weight_rms: weights must be floating point, got {w.dtype}")
    return picked


@torch.no_grad()
def weight_rms(weights, *, classes=("K",), reduction: str = "pooled", overrides=None) -> float:
    """RMS of the weights that set Tiger's step sizes, in float64.

    ``weights``: an ``nn.Module`` (its trainable parameters of the given Tiger ``classes``, classified
    as ``tiger_param_groups(model, overrides)`` does), or a tensor / iterable of tensors (those with
    ndim >= 2 count as class K, the rule Tiger applies to plain lists; ``classes`` and ``overrides``
    are then ignored).
    ``reduction``:
      "pooled" (default): sqrt(sum_i ||W_i||^2 / sum_i n_i), the RMS of all selected weights taken
          together. With lr = lion_lr / pooled, Tiger's whole K update has the L2 norm of Lion's
          (||dW_i|| = lr * ||W_i|| when the momentum has no zeros, vs lion_lr * sqrt(n_i)).
      "mean": sum_i n_i RMS(W_i) / sum_i n_i, which matches the mean |step| per element instead.
    Raises ValueError if nothing is selected, the weights are not finite, or the RMS is 0 (Tiger
    cannot move all-zero K weights; see its rms_floor option).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"weight_rms: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    classes = tuple(classes)
    if not classes or any(c not in ("K", "E", "V") for c in classes):
        raise ValueError(f"weight_rms: classes must be a non-empty subset of ('K', 'E', 'V'), got {classes!r}")
    picked = _select(weights, classes, overrides)
    sums = [float(w.detach().double().pow(2).sum()) for w in picked]
    counts = [w.numel() for w in picked]
    if not all(math.isfinite(s) for s in sums):
        raise ValueError("weight_rms: the weights hold NaN or Inf")
    total = sum(counts)
    if total == 0:
        raise ValueError("weight_rms: the selected weights are empty")
    if reduction == "pooled":
        rms = math.sqrt(math.fsum(sums) / total)
    else:
        rms = math.fsum(math.sqrt(s / n) * n for s, n in zip(sums, counts) if n) / total
    if rms == 0.0:
        raise ValueError("weight_rms: the selected weights are all zero, so Tiger's relative step lr*RMS "
                         "would be 0; initialise them or pass an RMS explicitly")
    return rms


def lion_to_tiger(lr, weight_decay=0.0, *, weights, betas=None, classes=("K",), reduction="pooled",
                  overrides=None) -> dict:
    """Tiger's relative ``lr`` (and ``weight_decay``, ``beta``) from Lion's.

    A class-K tensor under Tiger moves lr * RMS(theta) per element and step where Lion moves lr_lion,
    so lr = lr_lion / R with R = ``weights`` if it is a number, else ``weight_rms(weights, classes=,
    reduction=, overrides=)`` of the initial weights (call it before training). The decay per step is
    lr * RMS * weight_decay * theta = lr_lion * weight_decay * theta, so weight_decay carries over
    unchanged. With ``betas`` = Lion's (beta1, beta2), beta = their mean (Tiger's author's rule).
    Classes V (biases, norm gains) step 0.5 * lr in absolute units under Tiger, i.e.
    0.5 * lr_lion / R: for R ~ 0.02 that is ~25x Lion's step on those tensors.
    Returns ``dict(lr=..., weight_decay=...[, beta=...])`` for ``Tiger(groups, **kwargs)``.
    """
    lr = _positive("lion_to_tiger: lr", lr)
    wd = _non_negative("lion_to_tiger: weight_decay", weight_decay)
    if isinstance(weights, numbers.Real) and not isinstance(weights, bool):
        rms = _positive("lion_to_tiger: weights (an RMS)", weights)
    else:
        rms = weight_rms(weights, classes=classes, reduction=reduction, overrides=overrides)
    out = dict(lr=lr / rms, weight_decay=wd)
    if betas is not None:
        if len(betas) != 2 or not all(isinstance(b, numbers.Real) and 0.0 <= float(b) < 1.0 for b in betas):
            raise ValueError(f"lion_to_tiger: betas must be two numbers in [0, 1), got {betas!r}")
        out["beta"] = (float(betas[0]) + float(betas[1])) / 2.0
    return out


V_STEPS = ("lion", "tiger")


def lion_to_tiger_groups(model: nn.Module, lr, weight_decay=0.0, *, betas=None, v_step: str = "lion",
                         classes=("K",), reduction="pooled", overrides=None) -> list[dict]:
    """``tiger_param_groups(model)`` with Lion's hyperparameters translated per class.

    Classes K and E get ``lion_to_tiger(lr, weight_decay, weights=model, ...)`` (lr / R). Class V
    (biases, norm gains) steps 0.5 * group lr in absolute units under Tiger, so its lr depends on
    ``v_step``:
      "lion" (default): lr_V = 2 * lr, so V moves by Lion's own lr per step, like K at init. On the
          tiny GPT this beat Tiger's rule by 0.05-0.15 val loss (docs/recipe.md);
      "tiger": lr_V = lr / R, Tiger's rule (V steps 0.5 * lr / R: ~30x Lion's for R ~ 0.016).
    With ``betas``, every group also gets beta = mean(betas). Use as ``Tiger(groups)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lion_to_tiger_groups: model must be an nn.Module, got {type(model).__name__}")
    if v_step not in V_STEPS:
        raise ValueError(f"lion_to_tiger_groups: v_step must be one of {V_STEPS}, got {v_step!r}")
    hp = lion_to_tiger(lr, weight_decay, weights=model, betas=betas, classes=classes, reduction=reduction,
                       overrides=overrides)
    groups = tiger_param_groups(model, overrides=overrides, **hp)
    if v_step == "lion":
        for g in groups:
            if g["tiger_class"] == "V":
                g["lr"] = 2.0 * float(lr)
    return groups


def adamw_to_tiger(lr, weight_decay=0.0, *, weights, factor=DEFAULT_FACTOR, classes=("K",),
                   reduction="pooled") -> dict:
    """``lion_to_tiger(**adamw_to_lion(lr, weight_decay, factor=factor), weights=weights, ...)``:
    lr = lr_adamw / (factor * R), weight_decay = wd_adamw * factor."""
    lion = adamw_to_lion(lr, weight_decay, factor=factor)
    return lion_to_tiger(lion["lr"], lion["weight_decay"], weights=weights, classes=classes, reduction=reduction)


def knots_in_micro_steps(knots: dict, grad_accum_steps: int, from_zero: bool = True) -> dict:
    """PiecewiseLinearLR knots written in updates -> knots in micro-steps for Tiger with k > 1.

    PiecewiseLinearLR is stepped once per ``step()`` call, and Tiger reads the lr only on a window's
    last micro-step, so update n (0-based) uses PL(n*k + k - 1). Mapping each knot u -> u*k + k - 1
    (and, with ``from_zero`` and no knot at 0, adding (k - 1, 0.0)) gives update n exactly the
    multiplier that ``PiecewiseLinearLR(opt, knots)`` gives it with k = 1 (to a few ulp of float64
    rounding; exactly 0 where that is 0), so the first update still runs at 0 and does not move
    theta. Use with the same ``from_zero``.
    """
    k = grad_accum_steps
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"knots_in_micro_steps: grad_accum_steps must be an integer >= 1, got {k!r}")
    if not isinstance(knots, dict) or not knots:
        raise ValueError(f"knots_in_micro_steps: knots must be a non-empty dict {{update: multiplier}}, got {knots!r}")
    out = {}
    for u, x in knots.items():
        if isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 0:
            raise ValueError(f"knots_in_micro_steps: knots must be non-negative integer update counts, got {u!r}")
        out[int(u) * int(k) + int(k) - 1] = _real("knots_in_micro_steps: a multiplier", x)
    if from_zero and 0 not in {int(u) for u in knots}:
        out[int(k) - 1] = 0.0
    return dict(sorted(out.items()))


__all__ = ["DEFAULT_FACTOR", "knots_in_micro_steps", "adamw_to_lion", "lion_to_tiger", "lion_to_tiger_groups",
           "adamw_to_tiger", "weight_rms"]
