# Renamed keywords of the tigercore.dpm API (docs/semantics-dpm.md §1, "Names"): N, the length of
# the forward process, is `num_timesteps` everywhere and K, the number of sampling steps, is
# `num_inference_steps` everywhere. The old keywords (`num_steps`, which meant N in some places and K
# in others, and `K`) keep working for now with a DeprecationWarning. Tests: tests/test_dpm_api.py.
from __future__ import annotations

import functools
import warnings
from typing import Callable


def renamed_kwargs(**old_to_new: str) -> Callable:
    """Decorator: accept each old keyword as its new name, with a DeprecationWarning."""
    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__qualname__}() got both {old!r} (deprecated) and {new!r}")
                    warnings.warn(f"{fn.__qualname__}(): the keyword {old!r} is deprecated, use {new!r}",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        wrapper.__renamed_kwargs__ = dict(old_to_new)
        return wrapper
    return deco


def deprecated_alias(old: str, new: str) -> property:
    """A read-only property ``old`` returning attribute ``new``, with a DeprecationWarning."""
    def get(self):
        warnings.warn(f"{type(self).__name__}.{old} is deprecated, use .{new}", DeprecationWarning, stacklevel=2)
        return getattr(self, new)
    return property(get, doc=f"Deprecated alias of ``{new}``.")
