"""Loading the compiled extension and asking what it provides.

``load()`` imports tigercore._C (its import runs the C++ TORCH_LIBRARY_IMPL registrations). A
missing extension is normal (the reference kernels serve); an extension that exists but fails to
load is logged as a warning with the reason. ``has_native(op, device)`` asks the dispatcher
whether a native kernel is registered, so tests can refuse a silent fallback.
"""
from __future__ import annotations

import importlib
import json
import logging
import os

import torch

log = logging.getLogger("tigercore")
_state = {"module": None, "error": None}


def load():
    if _state["module"] is not None or _state["error"] is not None:
        return _state["module"]
    if os.environ.get("TIGERCORE_DISABLE_NATIVE", "") == "1":
        _state["error"] = "disabled by TIGERCORE_DISABLE_NATIVE=1"
        return None
    try:
        _state["module"] = importlib.import_module("tigercore._C")
    except ModuleNotFoundError as e:
        _state["error"] = f"not built ({e})"
        log.info("tigercore: native extension not built; using the reference kernels")
    except (ImportError, OSError) as e:  # built, but cannot be loaded: say why
        _state["error"] = f"failed to load: {e}"
        log.warning("tigercore: native extension failed to load (%s); using the reference kernels", e)
    return _state["module"]


def is_loaded() -> bool:
    return _state["module"] is not None


def load_error() -> str | None:
    return _state["error"]


_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def has_native(op: str, device: str | torch.device = "cpu") -> bool:
    """True iff a native (C++/CUDA) kernel for tigercore::<op> is registered for the device type."""
    dev = torch.device(device).type if not isinstance(device, torch.device) else device.type
    key = _DISPATCH_KEYS.get(dev)
    if key is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"tigercore::{op}", key)


def build_info() -> dict:
    """What was compiled (CPU instruction sets, CUDA archs) and what the machine offers."""
    info = {"native_loaded": is_loaded(), "native_error": load_error()}
    mod = _state["module"]
    if mod is not None:
        info.update(json.loads(mod.build_info()))
    return info
