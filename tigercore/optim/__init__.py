"""Optimizers: Lion, Tiger, tiger_param_groups, PiecewiseLinearLR, step_in_backward."""
from .lion import Lion
from .param_groups import classify_parameters, tiger_param_groups
from .schedule import PiecewiseLinearLR, piecewise_linear
from .tiger import Tiger
from .in_backward import StepInBackward, step_in_backward

__all__ = ["Lion", "Tiger", "tiger_param_groups", "classify_parameters", "PiecewiseLinearLR",
           "piecewise_linear", "step_in_backward", "StepInBackward"]
