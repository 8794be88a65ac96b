"""The step ops' `elem_offsets` argument (docs/semantics.md, "The step ops"): a shard whose first
element sits at flat offset k of the logical tensor rounds stochastically with the words of
offsets k, k+1, ..., so stepping the shards of a tensor equals stepping the whole tensor; and
where a DTensor shard's elements are one run of flat offsets (tigercore/optim/_distributed.py).
Reference: the same op on the whole tensor (itself tested against the Philox known answers).
"""
from __future__ import annotations

import pytest
import torch

from _helpers import lion, tiger
from tigercore.optim._distributed import _elem_offset


def _case(seed=0, shape=(7, 5)):
    g = torch.Generator().manual_seed(seed)
    p = (1 + torch.rand(shape, generator=g)).to(torch.bfloat16)
    grad = torch.randn(shape, generator=g).to(torch.bfloat16)
    m = torch.randn(shape, generator=g) * 0.1
    return p, grad, m


@pytest.mark.parametrize("algo", ["lion", "tiger"])
@pytest.mark.parametrize("split", [0, 3, 7])
def test_shards_round_like_the_whole_tensor(backend, algo, split):
    """Rows [0, split) and [split, 7) stepped as two tensors with their flat offsets equal the
    whole tensor's step bit for bit under precision='stochastic' (without offsets they do not)."""
    p, g, m = _case()
    whole = [p.clone(), g.clone(), m.clone()]
    parts = [[t[:split].clone() for t in (p, g, m)], [t[split:].clone() for t in (p, g, m)]]
    kw = dict(lr=1e-2, precision="stochastic", seed=11)
    if algo == "lion":
        lion(backend, [whole[0]], [whole[1]], [whole[2]], steps=None, param_ids=[3], **kw)
        lion(backend, [parts[0][0], parts[1][0]], [parts[0][1], parts[1][1]], [parts[0][2], parts[1][2]],
             param_ids=[3, 3], elem_offsets=[0, split * 5], **kw)
    else:  # class V: a step size that does not depend on the tensor's values
        tiger(backend, [whole[0]], [whole[1]], [whole[2]], cls="V", param_ids=[3], **kw)
        tiger(backend, [parts[0][0], parts[1][0]], [parts[0][1], parts[1][1]], [parts[0][2], parts[1][2]],
              cls="V", param_ids=[3, 3], elem_offsets=[0, split * 5], **kw)
    assert torch.equal(torch.cat([parts[0][0], parts[1][0]]), whole[0])
    if 0 < split < 7:  # the offsets matter: the second shard at offset 0 rounds otherwise
        q = p[split:].clone()
        step = lion if algo == "lion" else tiger
        extra = {} if algo == "lion" else {"cls": "V"}
        step(backend, [q], [g[split:].clone()], [m[split:].clone()], param_ids=[3], **kw, **extra)
        assert not torch.equal(q, whole[0][split:])


@pytest.mark.parametrize("offsets, match", [([0], "one entry per param"), ([0, -1], ">= 0")])
def test_bad_offsets_are_refused(backend, offsets, match):
    p, g, m = _case()
    before = p.clone()
    with pytest.raises(RuntimeError, match=match):
        lion(backend, [p, p[:0]], [g, g[:0]], [m, m[:0]], lr=1e-2, precision="stochastic", elem_offsets=offsets)
    assert torch.equal(p, before)


def _rows(idx):
    return torch.tensor(idx, dtype=torch.int64)


@pytest.mark.parametrize("gshape, lshape, index, want", [
    ((7, 5), (4, 5), (None, None), 0),                  # rank 0 of Shard(0)
    ((7, 5), (3, 5), (_rows([4, 5, 6]), None), 20),     # rank 1 of Shard(0)
    ((7, 5), (0, 5), (_rows([]), None), 0),             # an empty shard
    ((2, 4), (2, 2), (None, _rows([2, 3])), None),      # Shard(1): rows interleave
    ((1, 4), (1, 2), (None, _rows([2, 3])), 2),         # Shard(1) of a single row: one run
    ((8, 3), (2, 3), (_rows([1, 3]), None), None),      # strided rows (_StridedShard)
    ((4, 2, 3), (1, 2, 3), (_rows([2]), None, None), 12),
])
def test_elem_offset_is_the_first_flat_offset_of_one_run(gshape, lshape, index, want):
    assert _elem_offset(gshape, lshape, list(index)) == want
