"""PiecewiseLinearLR: tiger.py's piecewise-linear multiplier as a torch LR scheduler
(docs/semantics.md, "Tiger", schedule). Knots count micro-steps (calls to optimizer.step()); step the scheduler once
after every optimizer.step(). PL(t) is evaluated in float64 from the integer t.
"""
from __future__ import annotations

from torch.optim.lr_scheduler import LRScheduler


def piecewise_linear(t: int, schedule: dict, from_zero: bool = True) -> float:
    """x_i + (x_{i+1} - x_i)(t - t_i)/(t_{i+1} - t_i) on [t_i, t_{i+1}); x_n for t >= t_n; with
    ``from_zero`` and no key 0, a knot (0, 0.0) is prepended (a linear warm-up)."""
    knots = sorted((int(k), float(v)) for k, v in schedule.items())
    if not knots:
        raise ValueError("piecewise_linear: the schedule needs at least one knot")
    if from_zero and knots[0][0] != 0:
        knots.insert(0, (0, 0.0))
    if t < knots[0][0]:
        return knots[0][1] if not from_zero else 0.0
    for (t0, x0), (t1, x1) in zip(knots, knots[1:]):
        if t0 <= t < t1:
            return x0 + (x1 - x0) * (t - t0) / (t1 - t0)
    return knots[-1][1]


class PiecewiseLinearLR(LRScheduler):
    """lr(t) = base_lr * piecewise_linear(t, schedule), t = number of scheduler.step() calls."""

    def __init__(self, optimizer, schedule: dict, from_zero: bool = True, last_epoch: int = -1):
        if any(int(k) < 0 for k in schedule):
            raise ValueError("PiecewiseLinearLR: knots must be non-negative micro-step counts")
        self.schedule = dict(schedule)
        self.from_zero = from_zero
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        mult = piecewise_linear(self.last_epoch, self.schedule, self.from_zero)
        return [base * mult for base in self.base_lrs]
