"""All or nothing, and clear refusals (docs/semantics.md "Validation"): a failing step modifies
nothing; GradScaler's attributes cannot outlive a failed step; load_state_dict checks everything
before replacing anything; hyperparameter ranges; parameters listed twice or sharing memory;
small traps (zero-width embeddings, fp16 momentum overflow, optimi's Lion state)."""
import math
import warnings

import pytest
import torch

from tigercore.optim import Lion, Tiger, tiger_param_groups

from _helpers import lion


def _snapshot(opt):
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = [(k, v.clone()) for st in opt.state.values() for k, v in sorted(st.items())]
    return params, state


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and \
        all(k1 == k2 and torch.equal(x, y) for (k1, x), (k2, y) in zip(a[1], b[1]))


# ---- all or nothing -------------------------------------------------------------------------
@pytest.mark.parametrize("opt_cls", [Lion, Tiger])
@pytest.mark.parametrize("bad", ["grad shape", "grad dtype", "sparse grad", "lr", "state"])
def test_a_failing_step_modifies_nothing(backend, opt_cls, bad):
    a, b = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5, 2))
    opt = opt_cls([{"params": [a]}, {"params": [b]}], lr=1e-2, backend=backend)
    a.grad, b.grad = torch.randn(4, 3), torch.randn(5, 2)
    opt.step()
    a.grad, b.grad = torch.randn(4, 3), torch.randn(5, 2)
    if bad == "grad shape":
        b.grad.data = torch.randn(10)  # torch refuses `b.grad = ...` of another shape; .data does not
    elif bad == "grad dtype":
        b.grad_dtype = None  # allows a gradient of another dtype
        b.grad = b.grad.double()
    elif bad == "sparse grad":
        b.grad = b.grad.to_sparse()
    elif bad == "lr":
        opt.param_groups[1]["lr"] = "0.01"
    else:
        opt.state[b]["exp_avg"] = torch.zeros(7)
    before = _snapshot(opt)
    with pytest.raises((RuntimeError, ValueError)):
        opt.step()
    assert _same(before, _snapshot(opt))  # group 0 did not step either


def test_gradscaler_attributes_do_not_outlive_a_failed_step():
    p = torch.nn.Parameter(torch.randn(6))
    opt = Lion([p], lr=0.1)
    opt.grad_scale = torch.tensor(2.0 ** 20)  # what GradScaler.step sets before calling step()
    opt.found_inf = torch.tensor(1.0)
    p.grad = torch.randn(6)
    p.grad.data = torch.randn(3)  # wrong shape: step() raises, and GradScaler never deletes its attributes
    with pytest.raises(RuntimeError):
        opt.step()
    assert not hasattr(opt, "grad_scale") and not hasattr(opt, "found_inf")
    p.grad = torch.ones(6)
    before = p.detach().clone()
    opt.step()  # a plain step afterwards is neither skipped (found_inf) nor unscaled by 2^20
    torch.testing.assert_close(p.detach(), before - 0.1, rtol=0, atol=1e-6)


def test_a_real_gradscaler_recovers_after_an_exception():
    model = torch.nn.Linear(4, 2)
    opt = Lion(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaler.scale(model(torch.randn(3, 4)).sum()).backward()
    model.weight.grad.data = torch.randn(5)  # a bad gradient
    with pytest.raises(RuntimeError):
        scaler.step(opt)
    assert not hasattr(opt, "grad_scale") and not hasattr(opt, "found_inf")
    scaler.update()
    opt.zero_grad()
    scaler.scale(model(torch.randn(3, 4)).sum()).backward()
    before = model.weight.detach().clone()
    scaler.step(opt)  # the next iteration steps normally
    scaler.update()
    assert not torch.equal(before, model.weight.detach())


# ---- load_state_dict -------------------------------------------------------------------------
def _trained(opt_cls, model):
    opt = opt_cls(tiger_param_groups(model) if opt_cls is Tiger else model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    return opt


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))


@pytest.mark.parametrize("src,dst", [(Lion, Tiger), (Tiger, Lion)])
def test_loading_the_other_optimizers_state_is_refused(src, dst):
    sd = _trained(src, _net()).state_dict()
    model = _net()
    opt = dst(tiger_param_groups(model) if dst is Tiger else model.parameters(), lr=1e-3)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=f"saved by {src.__name__}"):
        opt.load_state_dict(sd)
    assert _same(before, _snapshot(opt))


@pytest.mark.parametrize("corrupt,pattern", [
    ("step shape", "'step'"), ("step negative", "'step'"), ("step fraction", "'step'"),
    ("momentum shape", "exp_avg"), ("group hyperparameter", "invalid"), ("aliasing", "shares memory")])
def test_load_state_dict_checks_everything_before_replacing_anything(corrupt, pattern):
    model = _net()
    opt = _trained(Lion, model)
    sd = opt.state_dict()
    sd = {"state": {k: dict(v) for k, v in sd["state"].items()}, "param_groups": [dict(g) for g in sd["param_groups"]]}
    last = max(sd["state"])
    if corrupt == "step shape":
        sd["state"][last]["step"] = torch.zeros(3)
    elif corrupt == "step negative":
        sd["state"][last]["step"] = torch.tensor(-1)
    elif corrupt == "step fraction":
        sd["state"][last]["step"] = torch.tensor(1.5)
    elif corrupt == "momentum shape":
        sd["state"][last]["exp_avg"] = torch.zeros(9)
    elif corrupt == "group hyperparameter":
        sd["param_groups"][0]["betas"] = (1.5, 0.9)
    else:
        sd["state"][0]["exp_avg"] = list(model.parameters())[0]  # the parameter itself
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=pattern):
        opt.load_state_dict(sd)
    assert _same(before, _snapshot(opt))


def test_optimi_lion_state_loads():
    """optimi saves beta1/beta2 and kahan_comp=None; lr, betas, weight decay (decouple_lr: wd/max_lr)
    and the momentum are taken over."""
    model = _net()
    params = list(model.parameters())
    moms = [torch.randn_like(p) for p in params]
    optimi_sd = {
        "state": {i: {"exp_avg": m.clone(), "kahan_comp": None} for i, m in enumerate(moms)},
        "param_groups": [{"params": list(range(len(params))), "lr": 3e-4, "beta1": 0.95, "beta2": 0.98,
                          "weight_decay": 0.1, "decouple_lr": True, "max_lr": 1e-3, "kahan_sum": False,
                          "foreach": None, "gradient_release": False}]}
    opt = Lion(params, lr=1e-4)
    opt.load_state_dict(optimi_sd)
    g = opt.param_groups[0]
    assert g["betas"] == (0.95, 0.98) and g["lr"] == 3e-4 and math.isclose(g["weight_decay"], 100.0)
    for p, m in zip(params, moms):
        assert torch.equal(opt.state[p]["exp_avg"], m)
        assert int(opt.state[p]["step"]) == 0
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()


# ---- hyperparameter ranges -------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,pattern", [
    ({"shrink_ratio": 0.0}, "shrink_ratio"), ({"shrink_ratio": 1.5}, "shrink_ratio"),
    ({"shrink_ratio": float("nan")}, "shrink_ratio"), ({"grad_accum_steps": 2.5}, "grad_accum_steps"),
    ({"grad_accum_steps": 0}, "grad_accum_steps"), ({"grad_accum_steps": 2**31}, "grad_accum_steps"),
    ({"grad_accum_steps": True}, "grad_accum_steps"), ({"lr": "1e-3"}, "learning rate"),
    ({"lr": torch.tensor([1e-3, 2e-3])}, "learning rate"), ({"lr": torch.tensor(1)}, "learning rate"),
    ({"lr": float("inf")}, "learning rate"), ({"beta": 1.2}, "beta"), ({"rms_floor": -1.0}, "rms_floor"),
    ({"weight_decay": float("nan")}, "weight_decay")])
def test_tiger_hyperparameter_ranges(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Tiger([torch.nn.Parameter(torch.randn(2, 2))], **kwargs)


def test_shrink_centre_must_be_finite():
    with pytest.raises(ValueError, match="shrink_center"):
        Tiger([{"params": [torch.nn.Parameter(torch.randn(2))], "shrink_center": float("inf")}])


@pytest.mark.parametrize("kwargs,pattern", [({"lr": "x"}, "learning rate"), ({"betas": (0.9,)}, "betas"),
                                            ({"betas": (0.9, -0.1)}, "betas"), ({"weight_decay": -1}, "weight_decay")])
def test_lion_hyperparameter_ranges(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Lion([torch.nn.Parameter(torch.randn(2, 2))], **kwargs)


def test_beta_one_warns_theta_never_moves():
    with pytest.warns(UserWarning, match="never moves"):
        Lion([torch.nn.Parameter(torch.randn(2))], betas=(1.0, 1.0))
    with pytest.warns(UserWarning, match="never moves"):
        Tiger([torch.nn.Parameter(torch.randn(2))], beta=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Lion([torch.nn.Parameter(torch.randn(2))], betas=(1.0, 0.99))  # still learns, with a lag


def test_grad_scale_must_be_positive_in_the_op(backend):
    p, g, m = [torch.randn(3)], [torch.randn(3)], [torch.zeros(3)]
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(RuntimeError, match="grad_scale"):
            lion(backend, p, g, m, lr=1e-3, grad_scale=torch.tensor(bad))


def test_a_scheduled_tensor_lr_is_checked_each_step():
    p = torch.nn.Parameter(torch.randn(3))
    opt = Lion([p], lr=torch.tensor(1e-3))
    opt.param_groups[0]["lr"].fill_(-1.0)
    p.grad = torch.randn(3)
    before = p.detach().clone()
    with pytest.raises(ValueError, match="learning rate"):
        opt.step()
    assert torch.equal(p.detach(), before)


# ---- aliasing --------------------------------------------------------------------------------
def test_a_parameter_listed_twice_is_refused():
    p = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="listed twice"):
        Lion([p, p])
    with pytest.raises(ValueError, match="listed twice"):
        Tiger([{"params": [p]}, {"params": [p]}])
    opt = Lion([p])
    with pytest.raises(ValueError, match="listed twice"):
        opt.add_param_group({"params": [p]})


def test_parameters_sharing_memory_are_refused():
    base = torch.randn(10)
    a = torch.nn.Parameter(base[:6])
    b = torch.nn.Parameter(base[4:])  # overlaps a in elements 4, 5
    with pytest.raises(ValueError, match="share memory"):
        Lion([a, b])
    c = torch.nn.Parameter(base[6:])  # adjacent, not overlapping: fine
    Lion([a, c])


# ---- small traps -------------------------------------------------------------------------------
def test_tiger_zero_width_embedding(backend):
    model = torch.nn.Sequential(torch.nn.Embedding(10, 0), torch.nn.Linear(3, 3))
    opt = Tiger(tiger_param_groups(model), lr=1e-2, backend=backend)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    opt.step()
    assert model[0].weight.shape == (10, 0)


@pytest.mark.parametrize("opt_cls", [Lion, Tiger])
def test_fp16_momentum_saturates_instead_of_sticking_at_inf(backend, opt_cls):
    p = torch.nn.Parameter(torch.zeros(4) + 0.5)
    opt = opt_cls([p], lr=1e-3, momentum_dtype=torch.float16, backend=backend,
                  **({"nonfinite_guard": False} if opt_cls is Tiger else {}))
    p.grad = torch.tensor([1e9, -1e9, 1.0, 0.0])  # a finite spike far beyond fp16's range
    opt.step()
    m = opt.state[p]["exp_avg"]
    assert m[0].item() == 65504.0 and m[1].item() == -65504.0  # saturated, not +-inf
    for _ in range(200):  # the momentum recovers: a steady opposite gradient turns its sign
        p.grad = torch.tensor([-1e5, 1e5, 1.0, 0.0])
        opt.step()
    assert m[0].item() < 0 < m[1].item()
