"""warn_user: a warning attributed to the user's line, not to tigercore's or torch's internals.

``warnings.warn(stacklevel=k)`` needs k to match the call depth, which differs between a direct
call, a call through torch.optim's step wrappers or an LR scheduler; this walks the stack to the
first frame outside tigercore and torch instead (Python 3.12's ``skip_file_prefixes``, by hand).
"""
from __future__ import annotations

import os
import sys
import warnings

import torch

_SKIP = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
              for m in (sys.modules["tigercore"], torch))


def warn_user(message: str, category=UserWarning) -> None:
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_SKIP):
        frame = frame.f_back
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
        return
    module = frame.f_globals.get("__name__", "<unknown>")
    registry = frame.f_globals.setdefault("__warningregistry__", {})
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno, module=module,
                           registry=registry, module_globals=frame.f_globals)
