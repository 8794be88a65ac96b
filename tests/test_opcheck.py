"""torch.library.opcheck for each op on each device (schema, fake tensor, autograd registration,
AOT dispatch), with every precision mode and with the GradScaler tensors."""
import pytest
import torch

from conftest import DEVICES


def _args(device, precision, dtype):
    torch.manual_seed(0)
    shapes = [(4, 3), (7,)]
    params = [torch.randn(s, device=device).to(dtype) for s in shapes]
    grads = [torch.randn(s, device=device).to(dtype) for s in shapes]
    moms = [torch.zeros(s, device=device) for s in shapes]
    aux = ([p.float() for p in params] if precision == "master"
           else [torch.zeros_like(p) for p in params] if precision == "kahan" else [])
    steps = [torch.zeros((), dtype=torch.int64, device=device) for _ in shapes]
    return (params, grads, moms, aux, steps)


COMMON = dict(maximize=False, seed=3, param_ids=[0, 1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision,dtype", [("none", torch.float32), ("master", torch.bfloat16),
                                             ("kahan", torch.float16), ("stochastic", torch.bfloat16)])
def test_opcheck_lion(device, precision, dtype):
    kwargs = dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1, precision=precision, **COMMON)
    torch.library.opcheck(torch.ops.tigercore.lion_step_.default, _args(device, precision, dtype), kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", ["K", "E", "V"])
def test_opcheck_tiger(device, cls):
    kwargs = dict(lr=1e-3, beta=0.965, weight_decay=0.01, grad_accum_steps=2, tiger_class=cls,
                  shrink_ratio=0.99, shrink_center=0.0, nonfinite_guard=True, rms_floor=0.0,
                  precision="master", **COMMON)
    args = _args(device, "master", torch.bfloat16)
    rows = [4, 1] if cls == "E" else [1, 1]
    cache = [torch.full((r + 2,), -1.0, dtype=torch.float64) for r in rows] if device == "cpu" else []
    torch.library.opcheck(torch.ops.tigercore.tiger_step_.default, args + (cache,), kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_with_gradscaler_tensors(device):
    kwargs = dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.0, precision="none", **COMMON,
                  grad_scale=torch.tensor(8.0, device=device), found_inf=torch.tensor(0.0, device=device))
    torch.library.opcheck(torch.ops.tigercore.lion_step_.default, _args(device, "none", torch.float32), kwargs)
