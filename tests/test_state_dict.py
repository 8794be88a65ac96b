"""state_dict round trips (docs/semantics.md, "State and state_dict"): the next step is reproduced bitwise, each state
tensor keeps its own dtype, and a state that does not fit the parameters is refused."""
import copy
import io

import pytest
import torch

from tigercore.optim import Lion, Tiger, tiger_param_groups


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(10, 6), torch.nn.Linear(6, 6), torch.nn.LayerNorm(6)).to(dtype)


def _make(opt_name, model, backend, **kw):
    if opt_name == "tiger":
        return Tiger(tiger_param_groups(model), lr=1e-2, grad_accum_steps=2, backend=backend, **kw)
    return Lion(model.parameters(), lr=1e-3, weight_decay=0.1, backend=backend, **kw)


def _set_grads(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


@pytest.mark.parametrize("opt_name", ["lion", "tiger"])
@pytest.mark.parametrize("dtype,precision", [(torch.float32, "master"), (torch.bfloat16, "master"),
                                             (torch.bfloat16, "kahan"), (torch.float16, "stochastic")])
def test_round_trip_reproduces_next_step(backend, opt_name, dtype, precision):
    model = _net(dtype)
    opt = _make(opt_name, model, backend, precision=precision)
    for s in range(3):
        _set_grads(model, s)
        opt.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)

    model2 = _net(dtype)
    model2.load_state_dict(saved["model"])
    opt2 = _make(opt_name, model2, backend, precision=precision)
    opt2.load_state_dict(saved["opt"])
    for p, p2 in zip(model.parameters(), model2.parameters()):
        for key, val in opt.state[p].items():
            if key in ("param_stamp", "sumsq"):  # derived from the parameters, not saved
                continue
            assert opt2.state[p2][key].dtype == val.dtype, key
            assert torch.equal(opt2.state[p2][key], val), key
    for s in (3, 4):
        _set_grads(model, s)
        _set_grads(model2, s)
        opt.step()
        opt2.step()
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, p2)


def test_momentum_keeps_fp32_with_bf16_params():
    model = _net(torch.bfloat16)
    opt = Lion(model.parameters(), lr=1e-3)
    _set_grads(model, 0)
    opt.step()
    sd = opt.state_dict()
    opt2 = Lion(model.parameters(), lr=1e-3)
    opt2.load_state_dict(sd)
    for st in opt2.state.values():
        assert st["exp_avg"].dtype == torch.float32 and st["master_param"].dtype == torch.float32
        assert st["step"].dtype == torch.int64


def test_state_that_does_not_fit_is_refused():
    model = _net()
    opt = Lion(model.parameters(), lr=1e-3)
    _set_grads(model, 0)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][1]["exp_avg"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="exp_avg.*shape"):
        Lion(model.parameters(), lr=1e-3).load_state_dict(sd)
    sd2 = copy.deepcopy(opt.state_dict())
    sd2["param_groups"].append(copy.deepcopy(sd2["param_groups"][0]))
    with pytest.raises(ValueError, match="groups"):
        Lion(model.parameters(), lr=1e-3).load_state_dict(sd2)


def test_missing_step_warns_for_tiger():
    model = _net()
    opt = Tiger(model.parameters(), lr=1e-3)
    _set_grads(model, 0)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    for st in sd["state"].values():
        del st["step"]
    opt2 = Tiger(model.parameters(), lr=1e-3)
    with pytest.warns(UserWarning, match="restart"):
        opt2.load_state_dict(sd)
    assert all(int(st["step"]) == 0 for st in opt2.state.values())


def test_lion_pytorch_style_state_loads():
    """A state with only `exp_avg` (lion-pytorch, timm, optimi key) loads; step starts at 0."""
    model = _net()
    opt = Lion(model.parameters(), lr=1e-3)
    sd = {"state": {i: {"exp_avg": torch.full_like(p, 0.5)} for i, p in enumerate(model.parameters())},
          "param_groups": [{**opt.state_dict()["param_groups"][0]}]}
    opt.load_state_dict(sd)
    assert all(torch.all(st["exp_avg"] == 0.5) and int(st["step"]) == 0 for st in opt.state.values())
