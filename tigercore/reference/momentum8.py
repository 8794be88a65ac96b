"""8-bit blockwise momentum storage, in plain PyTorch: the definition that the native kernels
(csrc/include/tigercore/momentum8.h) compute bit for bit. Semantics: docs/semantics.md, "8-bit
momentum".

A momentum tensor of n elements is stored as n uint8 codes (sign-magnitude: bit 7 the sign, bits
0-6 the magnitude index k, 0x80 = NaN) and one float32 absmax per block of BLOCK consecutive
elements (flat row-major order; the last block may be shorter).
"""
from __future__ import annotations

import torch

BLOCK = 256      # elements per quantisation block
NAN_CODE = 0x80  # "minus zero": the code of a NaN momentum element
LEVELS = 127     # magnitude k stands for k / LEVELS of the block's absmax
FLT_MAX = torch.finfo(torch.float32).max
_RNE = 8388608.0  # 2^23: (y + 2^23) - 2^23 rounds 0 <= y < 2^22 to an integer, ties to even
BNB_BLOCK = 256   # bitsandbytes' block size of its blockwise 8-bit optimizer states


def num_blocks(n: int, block: int = BLOCK) -> int:
    return (n + block - 1) // block


def _blocks_view(x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """x (flat) padded to whole blocks, as (blocks, BLOCK)."""
    pad = (-x.numel()) % BLOCK
    if pad:
        x = torch.cat([x, x.new_full((pad,), fill)])
    return x.view(-1, BLOCK)


def magnitudes(device=None) -> torch.Tensor:
    """The 128 magnitudes of the code map in float32: k * RN(1/127) (k = 127 gives exactly 1)."""
    c = torch.tensor(1.0 / LEVELS, dtype=torch.float32, device=device)
    return torch.arange(LEVELS + 1, dtype=torch.float32, device=device) * c


def saturate(x: torch.Tensor) -> torch.Tensor:
    """float32; +-Inf (and anything beyond) -> +-FLT_MAX; NaN stays NaN."""
    return x.float().clamp(-FLT_MAX, FLT_MAX)


def block_absmax(x: torch.Tensor) -> torch.Tensor:
    """Per block the largest |x| over its non-NaN elements (0 when there is none); x saturated."""
    a = torch.where(torch.isnan(x), torch.zeros_like(x), x.abs())
    return _blocks_view(a).amax(dim=1)


def encode(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8 of m's shape, absmax float32 per block) of a momentum tensor (float32 values;
    float64 values are rounded to float32 first)."""
    x = saturate(m.reshape(-1).to(torch.float32))
    absmax = block_absmax(x)
    # q = |x| / absmax <= 1 (correctly rounded, so never above 1), y = q * 127, k = RNE(y); a block
    # whose absmax is 0 holds only zeros (and NaNs): its k are 0. NaN elements get NAN_CODE below.
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    q = _blocks_view(torch.where(torch.isnan(x), torch.zeros_like(x), x.abs())) / safe[:, None]
    y = q * torch.tensor(float(LEVELS), dtype=torch.float32)
    k = ((y + _RNE) - _RNE).clamp(max=LEVELS).reshape(-1)[: x.numel()].to(torch.int32)
    neg = (x < 0) & (k > 0)
    codes = torch.where(torch.isnan(x), torch.full_like(k, NAN_CODE), k | (neg.to(torch.int32) << 7))
    return codes.to(torch.uint8).view(m.shape), absmax


def decode(codes: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """float32 momentum of codes' shape: sign * magnitudes[k] * absmax of the element's block."""
    c = codes.reshape(-1).to(torch.int32)
    mag = magnitudes(codes.device)[c & 0x7F]
    scale = absmax.repeat_interleave(BLOCK)[: c.numel()] if c.numel() else absmax[:0]
    v = mag * scale
    v = torch.where((c & 0x80) != 0, -v, v)
    v = torch.where(c == NAN_CODE, torch.full_like(v, float("nan")), v)
    return v.view(codes.shape)


def bnb_dequantize(codes: torch.Tensor, qmap: torch.Tensor, absmax: torch.Tensor, block: int = BNB_BLOCK):
    """A bitsandbytes blockwise 8-bit state (codes into the 256-value qmap, one absmax per block of
    `block`) as float32: qmap[code] * absmax[block of the element] (bitsandbytes' own dequantize)."""
    flat = codes.reshape(-1).long()
    scale = absmax.float().reshape(-1).repeat_interleave(block)[: flat.numel()]
    return (qmap.float().reshape(-1)[flat] * scale).view(codes.shape)


__all__ = ["BLOCK", "LEVELS", "NAN_CODE", "num_blocks", "encode", "decode", "magnitudes", "saturate", "block_absmax",
           "bnb_dequantize"]
