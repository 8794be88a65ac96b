"""Bit-exact building blocks of the reference optimizers, in plain PyTorch (any device).

- ``fma``: a correctly rounded float32 fused multiply-add, emulated in float64 with round-to-odd
  (Boldo & Melquiond), so the reference computes the very same function as the native kernels'
  ``std::fma`` / ``__fmaf_rn`` (csrc/include/tigercore/optim_math.h).
- ``philox4x32_10`` and ``stochastic_round``: docs/semantics.md "Storage of bf16/fp16 parameters", mirroring
  csrc/include/tigercore/philox.h word for word.
"""
from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def fma(a: torch.Tensor, b: torch.Tensor | float, c: torch.Tensor) -> torch.Tensor:
    """fma(a, b, c) = a*b + c rounded once, in a's dtype (float32 or float64)."""
    if not isinstance(b, torch.Tensor):
        b = torch.tensor(b, dtype=a.dtype, device=a.device)
    if a.dtype == torch.float64:
        # [note: float64 reference] torch has no fused multiply-add; in float64 the reference is
        # a*b + c, within 1 ulp of the kernels' fma (the fp64 test vectors allow 1e-12).
        return torch.addcmul(c, a, b)
    p = a.double() * b.double()  # exact: 24 + 24 bits < 53
    c64 = c.double()
    s = p + c64
    # TwoSum error of p + c64; then round to odd: a nonzero error and an even s move s one ulp
    # toward the exact value. Rounding the round-to-odd float64 to float32 is then correct.
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)
    even = (s.view(torch.int64) & 1) == 0
    adjust = (err != 0) & even & torch.isfinite(s)
    if bool(adjust.any()):
        toward = torch.where(err > 0, torch.full_like(s, float("inf")), torch.full_like(s, float("-inf")))
        s = torch.where(adjust, torch.nextafter(s, toward), s)
    return s.float()


def sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = 0 and sign(NaN) = NaN ([note: sign keeps NaN]).

    torch.sign itself is not enough: in torch 2.14 it returns 0 for NaN on the CPU."""
    return torch.where(torch.isnan(x), x, torch.sign(x))


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of a * b for a 32-bit constant a and int64 tensor b < 2^32."""
    a_hi, a_lo = a >> 16, a & 0xFFFF
    p_lo = b * a_lo  # < 2^48
    p_hi = b * a_hi  # < 2^48; a*b = p_hi * 2^16 + p_lo
    mid = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    lo = mid & _M32
    hi = (p_hi >> 16) + (mid >> 32)
    return hi & _M32, lo


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on int64 tensors holding uint32 counters; keys are Python ints."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) & _M32 for c in (c0, c1, c2, c3))
    k0, k1 = k0 & _M32, k1 & _M32
    for _ in range(10):
        hi0, lo0 = _mulhilo32(0xD2511F53, c0)
        hi1, lo1 = _mulhilo32(0xCD9E8D57, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + 0x9E3779B9) & _M32
        k1 = (k1 + 0xBB67AE85) & _M32
    return c0, c1, c2, c3


def sr_random_words(seed: int, param_id: int, step: int, numel: int, device, offset: int = 0) -> torch.Tensor:
    """The uint32 random word (as int64) of every flat element index offset..offset+numel-1 (a
    shard of a distributed tensor passes the flat offset of its first element)."""
    i = torch.arange(offset, offset + numel, dtype=torch.int64, device=device)
    q = i >> 2
    t = int(step)
    words = philox4x32_10(q & _M32, q >> 32, torch.full_like(q, t & _M32), torch.full_like(q, (t >> 32) & _M32),
                          seed, param_id)
    stacked = torch.stack(words, dim=-1)
    return stacked.gather(-1, (i & 3).unsqueeze(-1)).squeeze(-1)


def stochastic_round(x: torch.Tensor, r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round float32 x to bf16/fp16 with random words r (int64 holding uint32), per §3.4."""
    x = x.float()
    if dtype == torch.bfloat16:
        bits = x.view(torch.int32).to(torch.int64) & _M32
        out = ((bits + (r >> 16)) & _M32) >> 16
        out = torch.where(torch.isnan(x), torch.full_like(out, 0x7FC0), out)
        return _u16_to(out, torch.bfloat16)
    if dtype == torch.float16:
        ax = x.abs()
        lo = ax.half()
        lo_bits = lo.view(torch.int16).to(torch.int64) & 0xFFFF
        step_down = torch.isinf(lo) | (lo.float() > ax)
        lo_bits = torch.where(step_down, lo_bits - 1, lo_bits)
        hi_bits = lo_bits + 1
        lo_f = _u16_to(lo_bits, torch.float16).float()
        hi_f = _u16_to(hi_bits, torch.float16).float()
        ulp = torch.where(hi_bits == 0x7C00, torch.full_like(ax, 32.0), hi_f - lo_f)
        threshold = (ax - lo_f) * (16777216.0 / ulp)
        up = (r >> 8).float() < threshold
        sign_bit = torch.where(torch.signbit(x), 0x8000, 0)
        out = sign_bit | torch.where(up, hi_bits, lo_bits)
        out = torch.where(torch.isnan(x), torch.full_like(out, 0x7E00), out)
        return _u16_to(out, torch.float16)
    raise ValueError(f"stochastic rounding targets bfloat16 or float16, not {dtype}")


def _u16_to(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    signed = torch.where(bits >= 0x8000, bits - 0x10000, bits)
    return signed.to(torch.int16).view(dtype)
