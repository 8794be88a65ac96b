"""Optimizers: Lion, Tiger, tiger_param_groups, PiecewiseLinearLR, step_in_backward, and the
hyperparameter recipe AdamW -> Lion -> Tiger (adamw_to_lion, lion_to_tiger, ...; docs/recipe.md)."""
from .lion import Lion
from .param_groups import classify_parameters, tiger_param_groups
from .schedule import PiecewiseLinearLR, piecewise_linear
from .tiger import Tiger
from .in_backward import StepInBackward, step_in_backward
from .recipe import (adamw_to_lion, adamw_to_tiger, knots_in_micro_steps, lion_to_tiger, lion_to_tiger_groups,
                     weight_rms)

__all__ = ["Lion", "Tiger", "tiger_param_groups", "classify_parameters", "PiecewiseLinearLR",
           "piecewise_linear", "step_in_backward", "StepInBackward",
           "adamw_to_lion", "lion_to_tiger", "lion_to_tiger_groups", "adamw_to_tiger", "weight_rms",
           "knots_in_micro_steps"]
