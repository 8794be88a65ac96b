"""Random multi-tensor step cases, run on two backends and compared (used by the fuzz, ISA and
thread-count tests)."""
from __future__ import annotations

import torch

from _helpers import lion, tiger

SHAPES = [(0,), (1,), (7,), (4097,), (33, 65), "misaligned"]


def make_tensors(shapes, dtype, mom_dtype, precision, seed, m_scale=0.1):
    gen = torch.Generator().manual_seed(seed)
    params, grads, moms, aux = [], [], [], []
    for shape in shapes:
        if shape == "misaligned":  # a view starting one element into its storage
            base = torch.randn(1001, generator=gen, dtype=torch.float64)
            p = base.to(dtype)[1:]
        else:
            p = torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
        m = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * m_scale).to(mom_dtype)
        params.append(p)
        grads.append(g)
        moms.append(m)
        if precision == "kahan":
            aux.append(((torch.rand(p.shape, generator=gen, dtype=torch.float64) - 0.5) * 1e-3).to(dtype))
        elif precision == "master":
            aux.append(p.float() + (torch.randn(p.shape, generator=gen) * 1e-3))
    return params, grads, moms, aux


def _clone_keep_offset(t: torch.Tensor) -> torch.Tensor:
    """A copy that keeps t's storage offset, so misaligned views stay misaligned."""
    off = t.storage_offset()
    base = torch.empty(off + t.numel(), dtype=t.dtype)
    out = base[off:].view(t.shape)
    out.copy_(t)
    return out


def clone_all(*lists):
    return [[_clone_keep_offset(t) for t in lst] for lst in lists]


def run_case(backend, algo, params, grads, moms, aux, precision, n_steps=2, seed=7, step0=0, **kw):
    steps = [torch.full((), step0, dtype=torch.int64) for _ in params]
    for _ in range(n_steps):
        if algo == "lion":
            lion(backend, params, grads, moms, lr=1e-3, wd=0.1, aux=aux, precision=precision, seed=seed,
                 steps=steps, **kw)
        else:
            tiger(backend, params, grads, moms, lr=2e-3, cls=algo[-1], aux=aux, precision=precision,
                  seed=seed, steps=steps, **kw)
    return steps


def digest(tensors) -> list:
    """sha256 of each tensor's bytes."""
    import hashlib
    return [hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
            for t in tensors]
