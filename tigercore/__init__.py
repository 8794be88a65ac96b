"""tigercore: fused, exact sign-momentum optimizers (Lion, Tiger) and Analytic-DPM variance
estimators for PyTorch, with pure-PyTorch references for every native kernel.

    import tigercore
    opt = tigercore.optim.Tiger(tigercore.optim.tiger_param_groups(model), lr=1e-3)
"""
from . import _ops  # noqa: F401  (defines the tigercore:: ops and their default kernels)
from . import _native

_native.load()

from . import optim, reference  # noqa: E402,F401
from ._native import build_info, has_native  # noqa: E402,F401

__version__ = "0.1.0"
__all__ = ["optim", "reference", "build_info", "has_native", "__version__"]
