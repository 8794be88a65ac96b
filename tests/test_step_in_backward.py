"""step_in_backward: each parameter steps inside backward and its gradient is freed; the parameters
and every state tensor equal the usual backward-then-step() loop bit for bit (Lion; Tiger with
accumulation, classes, the guard; bf16 precision modes; LR schedulers; parameters without a
gradient), and the gradient buffers are really released."""
import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from tigercore.optim import Lion, Tiger, step_in_backward, tiger_param_groups


class Net(torch.nn.Module):
    def __init__(self, dtype):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(16, 8)
        self.lin = torch.nn.Linear(32, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 1)
        self.unused = torch.nn.Linear(8, 8)  # gets a gradient only on some steps
        self.to(dtype)

    def forward(self, x, use_extra):
        h = self.norm(self.lin(self.emb(x).flatten(1)))
        if use_extra:
            h = h + self.unused(h)
        return self.head(h)


def _make(name, model, **kw):
    if name == "tiger":
        return Tiger(tiger_param_groups(model), lr=torch.tensor(2e-2), grad_accum_steps=3, **kw)
    return Lion(model.parameters(), lr=torch.tensor(1e-3), weight_decay=0.1, **kw)


def _run(name, in_backward, dtype=torch.float32, precision="master", steps=9, nan_at=None, bits=32, cautious=False):
    model = Net(dtype)
    opt = _make(name, model, precision=precision, momentum_bits=bits, cautious=cautious)
    sched = LambdaLR(opt, lambda s: 1.0 / (1 + 0.2 * s))
    handle = step_in_backward(model, opt) if in_backward else None
    gen = torch.Generator().manual_seed(1)
    for s in range(steps):
        x = torch.randint(0, 16, (8, 4), generator=gen)
        y = torch.randn(8, 1, generator=gen).to(dtype)
        loss = torch.nn.functional.mse_loss(model(x, use_extra=s % 3 == 0), y)
        if s == nan_at:
            loss = loss + model.lin.weight.sum() * float("nan")  # a NaN in one tensor's gradient
        loss.backward()
        if in_backward:
            assert all(p.grad is None for p in model.parameters())  # released inside backward
        else:
            opt.step()
            opt.zero_grad()
        sched.step()
    if handle is not None:
        handle.remove()
    state = [t.clone() for st in opt.state.values() for k, t in sorted(st.items()) if k != "param_stamp"]
    return [p.detach().clone() for p in model.parameters()] + state


@pytest.mark.parametrize("name", ["lion", "tiger"])
@pytest.mark.parametrize("dtype,precision", [(torch.float32, "master"), (torch.bfloat16, "master"),
                                             (torch.bfloat16, "stochastic"), (torch.bfloat16, "kahan")])
def test_in_backward_equals_backward_then_step(name, dtype, precision):
    usual = _run(name, False, dtype, precision)
    inside = _run(name, True, dtype, precision)
    assert len(usual) == len(inside)
    for a, b in zip(usual, inside):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["lion", "tiger"])
@pytest.mark.parametrize("dtype,precision", [(torch.float32, "master"), (torch.bfloat16, "stochastic")])
def test_in_backward_with_8bit_momentum_equals_usual(name, dtype, precision):
    nan_at = 4 if name == "tiger" else None  # Tiger's guard (Lion would carry the NaN: NaN != NaN)
    usual = _run(name, False, dtype, precision, bits=8, nan_at=nan_at)
    inside = _run(name, True, dtype, precision, bits=8, nan_at=nan_at)
    assert any(t.dtype == torch.uint8 for t in usual)
    for a, b in zip(usual, inside):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["lion", "tiger"])
def test_in_backward_with_cautious_masking_equals_usual(name):
    """Each tensor's kept count is its own, so stepping it inside backward changes nothing."""
    usual = _run(name, False, cautious=True)
    inside = _run(name, True, cautious=True)
    for a, b in zip(usual, inside):
        assert torch.equal(a, b)


def test_tiger_guard_inside_backward_equals_usual():
    usual = _run("tiger", False, nan_at=4)
    inside = _run("tiger", True, nan_at=4)
    for a, b in zip(usual, inside):
        assert torch.equal(a, b)


def test_step_is_a_no_op_while_hooks_are_registered_and_remove_restores_it():
    model = Net(torch.float32)
    opt = _make("lion", model)
    handle = step_in_backward(model, opt)
    model(torch.randint(0, 16, (2, 4)), use_extra=True).sum().backward()
    after_backward = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match="already stepped inside backward"):
        opt.step()
    assert all(torch.equal(a, p) for a, p in zip(after_backward, model.parameters()))
    with pytest.raises(RuntimeError, match="already steps inside backward"):
        step_in_backward(model, opt)
    handle.remove()
    model(torch.randint(0, 16, (2, 4)), use_extra=True).sum().backward()
    assert all(p.grad is not None for p in model.parameters())  # hooks gone: gradients stay
    opt.step()
    assert not all(torch.equal(a, p) for a, p in zip(after_backward, model.parameters()))


def test_state_dict_round_trip_with_step_in_backward():
    model = Net(torch.float32)
    opt = _make("tiger", model)
    with step_in_backward(model, opt):
        for _ in range(4):
            model(torch.randint(0, 16, (2, 4)), use_extra=False).sum().backward()
    sd = opt.state_dict()
    model2 = Net(torch.float32)
    model2.load_state_dict(model.state_dict())
    opt2 = _make("tiger", model2)
    opt2.load_state_dict(sd)
    x = torch.randint(0, 16, (2, 4))
    with step_in_backward(model, opt), step_in_backward(model2, opt2):
        model(x, use_extra=True).sum().backward()
        model2(x, use_extra=True).sum().backward()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_parameters_outside_the_optimizer_are_refused():
    model = Net(torch.float32)
    opt = Lion(model.lin.parameters())
    with pytest.raises(ValueError, match="not in the optimizer"):
        step_in_backward(model, opt)
