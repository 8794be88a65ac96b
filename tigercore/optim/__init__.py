"""Optimizers: Lion, Tiger, tiger_param_groups, PiecewiseLinearLR."""
from .lion import Lion
from .param_groups import classify_parameters, tiger_param_groups
from .schedule import PiecewiseLinearLR, piecewise_linear
from .tiger import Tiger

__all__ = ["Lion", "Tiger", "tiger_param_groups", "classify_parameters", "PiecewiseLinearLR",
           "piecewise_linear"]
