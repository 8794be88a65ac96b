"""torch.library.opcheck for each op on each device (schema, fake tensor, autograd registration,
AOT dispatch): every precision mode, the GradScaler tensors, Tiger's caller-given step sizes and
guard flags, tiger_stats and sync_external_writes_."""
import pytest
import torch

from conftest import DEVICES


def _args(device, precision, dtype, stamps=True):
    torch.manual_seed(0)
    shapes = [(4, 3), (7,)]
    params = [torch.randn(s, device=device).to(dtype) for s in shapes]
    grads = [torch.randn(s, device=device).to(dtype) for s in shapes]
    moms = [torch.zeros(s, device=device) for s in shapes]
    aux = ([p.float() for p in params] if precision == "master"
           else [torch.zeros_like(p) for p in params] if precision == "kahan" else [])
    steps = [torch.zeros((), dtype=torch.int64, device=device) for _ in shapes]
    marks = [torch.full((2,), -1, dtype=torch.int64) for _ in shapes] if stamps else []
    return (params, grads, moms, aux, steps, marks)


def _lr(device):
    return torch.tensor(1e-3, dtype=torch.float64, device=device)


COMMON = dict(maximize=False, seed=3, param_ids=[0, 1])
TIGER = dict(beta=0.965, weight_decay=0.01, grad_accum_steps=2, shrink_ratio=0.99, shrink_center=0.0,
             nonfinite_guard=True, rms_floor=0.0, precision="master", **COMMON)


def _rows(cls):
    return [4, 1] if cls == "E" else [1, 1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision,dtype", [("none", torch.float32), ("master", torch.bfloat16),
                                             ("kahan", torch.float16), ("stochastic", torch.bfloat16)])
@pytest.mark.parametrize("lr_device", ["cpu", "param"])
def test_opcheck_lion(device, precision, dtype, lr_device):
    kwargs = dict(lr=_lr("cpu" if lr_device == "cpu" else device), beta1=0.9, beta2=0.99, weight_decay=0.1,
                  precision=precision, **COMMON)
    torch.library.opcheck(torch.ops.tigercore.lion_step_.default, _args(device, precision, dtype) + ([],), kwargs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", ["K", "E", "V"])
def test_opcheck_tiger(device, cls):
    args = _args(device, "master", torch.bfloat16)
    sumsq = [torch.full((r,), -1.0, dtype=torch.float64, device=device) for r in _rows(cls)] if cls != "V" else []
    torch.library.opcheck(torch.ops.tigercore.tiger_step_.default, args + (sumsq, []),
                          dict(lr=_lr(device), tiger_class=cls, **TIGER))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", ["K", "E"])
def test_opcheck_tiger_given_step_sizes_and_flags(device, cls):
    args = _args(device, "master", torch.bfloat16)
    eta = torch.full((sum(_rows(cls)),), 1e-3, dtype=torch.float64, device=device)
    flags = torch.tensor([False, True], device=device)
    torch.library.opcheck(torch.ops.tigercore.tiger_step_.default, args + ([], []),
                          dict(lr=_lr(device), tiger_class=cls, eta=eta, nonfinite=flags, **TIGER))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", ["K", "E"])
def test_opcheck_tiger_stats_and_sync(device, cls):
    params, grads, _, aux, _, stamps = _args(device, "master", torch.bfloat16)
    sumsq = [torch.full((r,), -1.0, dtype=torch.float64, device=device) for r in _rows(cls)]
    torch.library.opcheck(torch.ops.tigercore.tiger_stats.default, (params, grads, aux, sumsq),
                          dict(tiger_class=cls, precision="master", grad_scale=torch.tensor(2.0, device=device)))
    torch.library.opcheck(torch.ops.tigercore.sync_external_writes_.default, (params, aux, stamps, sumsq),
                          dict(precision="master"))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_with_gradscaler_tensors(device):
    kwargs = dict(lr=_lr(device), beta1=0.9, beta2=0.99, weight_decay=0.0, precision="none", **COMMON,
                  grad_scale=torch.tensor(8.0, device=device), found_inf=torch.tensor(0.0, device=device))
    torch.library.opcheck(torch.ops.tigercore.lion_step_.default, _args(device, "none", torch.float32) + ([],), kwargs)
