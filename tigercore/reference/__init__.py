"""Pure-PyTorch references: the oracles every native kernel is tested against, and the ops'
default kernels when the extension is not built. ``tigercore.reference.optim`` (Lion/Tiger),
``tigercore.reference.numerics`` (fma, Philox, stochastic rounding), ``tigercore.reference.dpm``."""
