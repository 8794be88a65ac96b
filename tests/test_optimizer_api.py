"""torch.optim.Optimizer behaviour: groups, add_param_group, closure, zero_grad, maximize,
LR schedulers (float and tensor lr), parameters without gradients, backend selection."""
import pytest
import torch

import tigercore
from tigercore.optim import Lion, Tiger


def test_is_torch_optimizer_and_supports_amp_flag():
    p = [torch.nn.Parameter(torch.randn(2))]
    for opt in (Lion(p), Tiger(p)):
        assert isinstance(opt, torch.optim.Optimizer)
        assert opt._step_supports_amp_scaling is True


def test_defaults_match_spec():
    p = [torch.nn.Parameter(torch.randn(2))]
    d = Lion(p).defaults
    assert (d["lr"], d["betas"], d["weight_decay"]) == (1e-4, (0.9, 0.99), 0.0)
    d = Tiger(p).defaults
    assert (d["lr"], d["beta"], d["weight_decay"], d["grad_accum_steps"], d["shrink_ratio"], d["nonfinite_guard"]) == \
        (1e-3, 0.965, 0.01, 1, 0.99, True)


def test_param_groups_and_add_param_group(backend):
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = Lion([a], lr=0.1, backend=backend)
    opt.add_param_group({"params": [b], "lr": 0.01})
    a.grad, b.grad = torch.ones(3), torch.ones(3)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((3,), 0.9))
    torch.testing.assert_close(b.detach(), torch.full((3,), 0.99))
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "lr": -1})


def test_closure_zero_grad_maximize(backend):
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = Lion([p], lr=0.1, maximize=True, backend=backend)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 2.0
    torch.testing.assert_close(p.detach(), torch.tensor([1.1, -1.1]))  # ascent
    opt.zero_grad()
    assert p.grad is None


def test_grad_none_is_skipped(backend):
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = Lion([a, b], lr=0.1, weight_decay=0.5, backend=backend)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3))  # no decay either
    assert torch.equal(opt.state[b]["exp_avg"], torch.zeros(3))  # state exists from the start, untouched
    assert int(opt.state[b]["step"]) == 1  # one counter for all (the stochastic-rounding key stays aligned)


def test_tiger_phase_advances_for_grad_none(backend):
    a, b = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2, 2))
    opt = Tiger([a, b], lr=0.1, grad_accum_steps=2, backend=backend)
    a.grad = torch.ones(2, 2)
    opt.step()  # micro-step 0: b has no grad but its counter advances
    assert int(opt.state[b]["step"]) == 1
    b.grad = torch.ones(2, 2)
    a.grad = torch.ones(2, 2)
    opt.step()  # micro-step 1: an update step for both
    assert not torch.equal(b.detach(), torch.ones(2, 2))


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_lr_scheduler(backend, tensor_lr):
    p = torch.nn.Parameter(torch.zeros(4))
    lr = torch.tensor(0.1) if tensor_lr else 0.1
    opt = Lion([p], lr=lr, backend=backend)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    moves = []
    for _ in range(3):
        before = p.detach().clone()
        p.grad = -torch.ones(4)
        opt.step()
        sched.step()
        moves.append((p.detach() - before)[0].item())
    assert moves == pytest.approx([0.1, 0.05, 0.025], rel=1e-6)


def test_backend_reference_matches_auto():
    torch.manual_seed(0)
    w = torch.randn(50, 20)
    ps = [torch.nn.Parameter(w.clone()) for _ in range(2)]
    opts = [Tiger([ps[0]], lr=1e-2, backend="reference"), Tiger([ps[1]], lr=1e-2, backend="auto")]
    for _ in range(3):
        g = torch.randn(50, 20)
        for p, o in zip(ps, opts):
            p.grad = g.clone()
            o.step()
    assert torch.equal(ps[0], ps[1])


def test_backend_native_without_kernel_raises(monkeypatch):
    monkeypatch.setattr(tigercore._native, "has_native", lambda op, dev: False)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="backend='native'"):
        Lion([p], backend="native").step()
