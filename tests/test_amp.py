"""GradScaler protocol (docs/semantics.md, "GradScaler"): in-kernel unscale, found_inf skips the whole step
(parameters, momentum, aux buffers and the step count), fp16 parameters with torch.amp.GradScaler."""
import pytest
import torch

from tigercore.optim import Lion, Tiger

from _helpers import lion, tiger


@pytest.mark.parametrize("algo", ["lion", "tiger"])
@pytest.mark.parametrize("precision", ["master", "kahan", "stochastic"])
def test_found_inf_skips_everything(backend, algo, precision):
    torch.manual_seed(0)
    p = [torch.randn(40, 3).to(torch.bfloat16)]
    g = [torch.randn(40, 3).to(torch.bfloat16)]
    m = [torch.randn(40, 3)]
    aux = [p[0].float() + 1e-3] if precision == "master" else ([torch.full((40, 3), 1e-4).to(torch.bfloat16)]
                                                              if precision == "kahan" else [])
    before = [t.clone() for t in p + g + m + aux]
    fn = lion if algo == "lion" else tiger
    steps = fn(backend, p, g, m, lr=1e-3, aux=aux, precision=precision,
               grad_scale=torch.tensor(1024.0), found_inf=torch.tensor(1.0))
    for a, b in zip(p + g + m + aux, before):
        assert torch.equal(a, b)
    assert int(steps[0]) == 0


@pytest.mark.parametrize("algo", ["lion", "tiger"])
def test_in_kernel_unscale_equals_manual_unscale(backend, algo):
    torch.manual_seed(1)
    base = torch.randn(100, 7).half()
    g_true = torch.randn(100, 7).half()
    scale = 2.0 ** 12
    fn = lion if algo == "lion" else tiger
    p1, m1, g1 = [base.clone()], [torch.zeros(100, 7)], [(g_true.float() * scale).half()]
    p2, m2 = [base.clone()], [torch.zeros(100, 7)]
    fn(backend, p1, g1, m1, lr=1e-3, precision="master", aux=[base.float()],
       grad_scale=torch.tensor(scale), found_inf=torch.tensor(0.0))
    fn(backend, p2, [g_true.clone()], m2, lr=1e-3, precision="master", aux=[base.float()])
    assert torch.equal(p1[0], p2[0]) and torch.equal(m1[0], m2[0])
    assert torch.equal(g1[0], g_true)  # the unscaled gradient is stored back


def _model(dtype):
    torch.manual_seed(2)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 1)).to(dtype)


@pytest.mark.parametrize("opt_cls", [Lion, Tiger])
def test_gradscaler_with_fp16_params(backend, opt_cls):
    model = _model(torch.float16)
    opt = opt_cls(model.parameters(), lr=1e-3, backend=backend)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    x, y = torch.randn(64, 8).half(), torch.randn(64, 1).half()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), y.float())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    first = next(iter(opt.state.values()))
    assert int(first["step"]) == 30
    assert losses[-1] < losses[0]


def test_gradscaler_overflow_skips_step(backend):
    model = _model(torch.float16)
    opt = Lion(model.parameters(), lr=1e-3, backend=backend)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    x, y = torch.randn(16, 8).half(), torch.randn(16, 1).half()
    loss = torch.nn.functional.mse_loss(model(x).float(), y.float())
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x).float(), y.float())
    scaler.scale(loss).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
    assert all(int(st["step"]) == 1 for st in opt.state.values())
    assert scaler.get_scale() == 2.0 ** 7
