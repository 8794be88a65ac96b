"""Shared fixtures: devices, dtypes, and `requires_native`, which refuses a silent fallback.

If the extension is built (tigercore._C loads), a native test whose kernel is not registered
FAILS instead of skipping: a broken registration must never pass as "reference vs reference".
"""
from __future__ import annotations

import os

import pytest
import torch

import tigercore
from tigercore import _native

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
PARAM_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def native_expected() -> bool:
    return _native.is_loaded()


# CI sets TIGERCORE_REQUIRE_NATIVE=1: a build whose extension does not load must fail, not skip.
REQUIRE_NATIVE = os.environ.get("TIGERCORE_REQUIRE_NATIVE") == "1"


def requires_native(op: str, device: str = "cpu"):
    """Skip when no extension is built (or no device); fail when it is built but the kernel is
    not registered."""
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("no CUDA device")
    if not native_expected():
        if REQUIRE_NATIVE:
            pytest.fail(f"TIGERCORE_REQUIRE_NATIVE=1 but the extension did not load: {_native.load_error()}")
        pytest.skip(f"native extension not built: {_native.load_error()}")
    if not tigercore.has_native(op, device):
        pytest.fail(f"tigercore::{op} has no native {device} kernel although the extension is loaded")


@pytest.fixture(params=["reference", "native"])
def backend(request):
    if request.param == "native":
        requires_native("lion_step_")
        requires_native("tiger_step_")
    return request.param
