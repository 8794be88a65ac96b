"""tigercore.optim.recipe (AdamW -> Lion -> Tiger hyperparameters) against closed forms computed here
in float64, its input validation, and the rules of docs/recipe.md for LR schedulers under Tiger's
gradient accumulation, shown on real tensors against the update formula of docs/semantics.md ("Tiger")
(m = beta*m + (1-beta)*mean(g); theta -= lr*PL(nk-1)*RMS(theta)*(sign(m) + wd*theta)).
"""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

import tigercore.optim
from tigercore.optim import Lion, PiecewiseLinearLR, Tiger, piecewise_linear, tiger_param_groups
from tigercore.optim import recipe
from tigercore.optim.recipe import (adamw_to_lion, adamw_to_tiger, knots_in_micro_steps, lion_to_tiger,
                                    lion_to_tiger_groups, weight_rms)


# ---- formulas ----------------------------------------------------------------------------------
@pytest.mark.parametrize("lr,wd,factor", [(3e-3, 0.1, 3.0), (1e-3, 0.0, 10.0), (6e-4, 0.05, 7.3)])
def test_adamw_to_lion_exact(lr, wd, factor):
    out = adamw_to_lion(lr, wd, factor=factor)
    assert out["lr"] == float(Fraction(lr) / Fraction(factor))
    assert out["weight_decay"] == float(Fraction(wd) * Fraction(factor))
    assert out["lr"] * out["weight_decay"] == pytest.approx(lr * wd, rel=1e-15)  # effective decay kept


def test_default_factor_is_in_the_lion_authors_range():
    assert 3.0 <= recipe.DEFAULT_FACTOR <= 10.0
    assert adamw_to_lion(1e-3)["lr"] == pytest.approx(1e-3 / recipe.DEFAULT_FACTOR, rel=1e-15)


def test_weight_rms_closed_form():
    a = torch.full((2, 3), 0.5)
    b = torch.full((1, 2), -2.0)
    bias = torch.full((5,), 100.0)  # ndim 1: not class K in a plain list
    assert weight_rms([a, b, bias]) == pytest.approx(math.sqrt((6 * 0.25 + 2 * 4.0) / 8), rel=1e-15)
    assert weight_rms([a, b, bias], reduction="mean") == pytest.approx((6 * 0.5 + 2 * 2.0) / 8, rel=1e-15)
    assert weight_rms(a) == 0.5


def test_weight_rms_random_against_numpy_float64():
    g = torch.Generator().manual_seed(1)
    ws = [torch.randn(17, 5, generator=g) * s for s in (0.02, 0.3, 1.7)] + [torch.randn(3, 2, 4, generator=g)]
    arrs = [w.numpy().astype(np.float64).ravel() for w in ws]
    pooled = np.sqrt(np.mean(np.concatenate(arrs) ** 2))
    mean = sum(np.sqrt(np.mean(x ** 2)) * x.size for x in arrs) / sum(x.size for x in arrs)
    assert weight_rms(ws) == pytest.approx(pooled, rel=1e-13)
    assert weight_rms(ws, reduction="mean") == pytest.approx(mean, rel=1e-13)
    assert weight_rms(ws, reduction="mean") < weight_rms(ws)  # Jensen: mean of RMS <= pooled RMS


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 6)
        self.ln = nn.LayerNorm(6)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():  # |w| fixed (closed-form RMS), signs random (constant weights give zero grads)
            self.emb.weight.copy_(3.0 * (torch.rand(10, 4, generator=g) < 0.5).mul(2).sub(1))
            self.lin.weight.copy_(0.25 * (torch.rand(6, 4, generator=g) < 0.5).mul(2).sub(1))
            self.lin.bias.fill_(7.0)


def test_weight_rms_of_a_model_uses_tiger_classes():
    net = _Net()
    assert weight_rms(net) == 0.25  # class K only: lin.weight (not the embedding, bias or norm gain)
    both = math.sqrt((24 * 0.25 ** 2 + 40 * 9.0) / 64)
    assert weight_rms(net, classes=("K", "E")) == pytest.approx(both, rel=1e-15)


def test_weight_rms_follows_overrides_and_skips_frozen_weights():
    """R is measured on the tensors tiger_param_groups(model, overrides) gives Tiger as class K."""
    net = _Net()
    with torch.no_grad():
        net.ln.weight.fill_(2.0)
    as_k = math.sqrt((24 * 0.25 ** 2 + 6 * 4.0) / 30)
    assert weight_rms(net, overrides={"ln.weight": "K"}) == pytest.approx(as_k, rel=1e-15)
    out = lion_to_tiger_groups(net, 1e-4, overrides={"ln.weight": "K"})
    k_group = next(g for g in out if g["tiger_class"] == "K")
    assert any(p is net.ln.weight for p in k_group["params"])
    assert k_group["lr"] == pytest.approx(1e-4 / as_k, rel=1e-15)
    net.lin.weight.requires_grad_(False)  # frozen: Tiger never sees it, so it sets no step size
    with pytest.raises(ValueError, match="no trainable class K parameters"):
        weight_rms(net)
    assert weight_rms(net, overrides={"ln.weight": "K"}) == 2.0


def test_lion_to_tiger_and_adamw_to_tiger():
    net = _Net()
    out = lion_to_tiger(1e-4, 0.3, weights=net, betas=(0.95, 0.98))
    assert out == {"lr": pytest.approx(1e-4 / 0.25, rel=1e-15), "weight_decay": 0.3,
                   "beta": pytest.approx(0.965, rel=1e-15)}
    assert lion_to_tiger(2e-4, weights=0.02)["lr"] == pytest.approx(1e-2, rel=1e-15)
    t = adamw_to_tiger(3e-3, 0.1, weights=net, factor=5.0)
    assert t["lr"] == pytest.approx(3e-3 / (5.0 * 0.25), rel=1e-15)
    assert t["weight_decay"] == pytest.approx(0.5, rel=1e-15)


def test_lion_to_tiger_groups_lrs_per_class():
    net = _Net()
    groups = lion_to_tiger_groups(net, 1e-4, 0.3, betas=(0.9, 0.99))
    by = {(g["tiger_class"], g["shrink_center"]): g for g in groups}
    assert set(by) == {("K", 0.0), ("E", 0.0), ("V", 1.0), ("V", 0.0)}
    for key in (("K", 0.0), ("E", 0.0)):
        assert by[key]["lr"] == pytest.approx(1e-4 / 0.25, rel=1e-15) and by[key]["weight_decay"] == 0.3
    for key in (("V", 1.0), ("V", 0.0)):
        assert by[key]["lr"] == pytest.approx(2e-4, rel=1e-15)
    assert all(g["beta"] == pytest.approx(0.945, rel=1e-15) for g in groups)
    tiger_rule = lion_to_tiger_groups(net, 1e-4, v_step="tiger")
    assert all(g["lr"] == pytest.approx(4e-4, rel=1e-15) for g in tiger_rule)


def test_lion_to_tiger_groups_move_k_and_v_by_lions_lr():
    """One real Tiger step (wd 0) from the translated groups: every K weight (RMS = R at init) and
    every bias / norm gain moves by exactly Lion's lr, as one Lion step would."""
    net = _Net().double()
    with torch.no_grad():
        net.ln.weight.fill_(1.0)
    eta = 1e-3
    opt = Tiger(lion_to_tiger_groups(net, eta, 0.0))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net.ln(net.lin(net.emb(torch.tensor([1, 2, 3])))).pow(3).sum().backward()
    opt.step()
    for n in ("lin.weight", "lin.bias", "ln.weight", "ln.bias"):
        p = dict(net.named_parameters())[n]
        moved = (p.detach() - before[n]).abs()
        live = p.grad != 0
        assert live.sum() >= p.numel() // 2, n  # the check below is not vacuous
        assert torch.allclose(moved[live], torch.full_like(moved[live], eta), rtol=1e-12, atol=0), n
        assert torch.equal(moved[~live], torch.zeros_like(moved[~live])), n


def test_translated_tiger_step_has_lions_update_norm():
    """The pooled-RMS rule: on fresh K weights, one Tiger step at lion_lr / R moves the K weights by
    the same total L2 norm as one Lion step at lion_lr (both: sign of the first gradient)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64, bias=False), nn.Linear(64, 16, bias=False))
    with torch.no_grad():
        model[1].weight.mul_(7.0)  # two very different RMS values
    grads = [torch.randn_like(p) for p in model.parameters()]
    eta = 1e-3
    moved = {}
    for name in ("lion", "tiger"):
        m = [p.detach().clone().requires_grad_() for p in model.parameters()]
        opt = (Lion(m, lr=eta) if name == "lion"
               else Tiger(m, **lion_to_tiger(eta, 0.0, weights=list(model.parameters()))))
        for p, g in zip(m, grads):
            p.grad = g.clone()
        opt.step()
        moved[name] = math.sqrt(sum(float((p.detach().double() - q.detach().double()).pow(2).sum())
                                    for p, q in zip(m, model.parameters())))
    n = sum(p.numel() for p in model.parameters())
    assert moved["lion"] == pytest.approx(eta * math.sqrt(n), rel=1e-4)
    assert moved["tiger"] == pytest.approx(moved["lion"], rel=1e-4)


# ---- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_bad_lr(lr):
    for fn in (lambda: adamw_to_lion(lr), lambda: lion_to_tiger(lr, weights=0.02),
               lambda: adamw_to_tiger(lr, weights=0.02)):
        with pytest.raises(ValueError, match="lr must be finite and > 0"):
            fn()


def test_bad_scalars():
    with pytest.raises(TypeError, match="real number"):
        adamw_to_lion("3e-3")
    with pytest.raises(TypeError, match="real number"):
        adamw_to_lion(None)
    with pytest.raises(ValueError, match="weight_decay must be finite and >= 0"):
        adamw_to_lion(1e-3, -0.1)
    with pytest.raises(ValueError, match="weight_decay must be finite and >= 0"):
        lion_to_tiger(1e-3, float("nan"), weights=0.02)
    for f in (0.0, -3.0, float("inf")):
        with pytest.raises(ValueError, match="factor must be finite and > 0"):
            adamw_to_lion(1e-3, factor=f)
    for r in (0.0, -0.02, float("nan")):
        with pytest.raises(ValueError, match="weights \\(an RMS\\) must be finite and > 0"):
            lion_to_tiger(1e-3, weights=r)
    for betas in ((0.9,), (0.9, 1.0), (0.9, -0.1), ("a", 0.9)):
        with pytest.raises(ValueError, match="betas must be two numbers in \\[0, 1\\)"):
            lion_to_tiger(1e-3, weights=0.02, betas=betas)


def test_bad_group_arguments():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        lion_to_tiger_groups([torch.ones(2, 2)], 1e-3)
    with pytest.raises(ValueError, match="v_step must be one of"):
        lion_to_tiger_groups(_Net(), 1e-3, v_step="adam")


def test_bad_weights():
    with pytest.raises(ValueError, match="no weights to measure"):
        weight_rms([])
    with pytest.raises(ValueError, match="ndim >= 2"):
        weight_rms([torch.ones(5)])
    with pytest.raises(ValueError, match="no trainable class K parameters"):
        weight_rms(nn.LayerNorm(4))
    with pytest.raises(ValueError, match="all zero"):
        weight_rms([torch.zeros(3, 3)])
    with pytest.raises(ValueError, match="NaN or Inf"):
        weight_rms([torch.tensor([[1.0, float("nan")]])])
    with pytest.raises(TypeError, match="floating point"):
        weight_rms([torch.ones(2, 2, dtype=torch.int64)])
    with pytest.raises(TypeError, match="expected tensors"):
        weight_rms([[1.0, 2.0]])
    with pytest.raises(TypeError, match="nn.Module, a tensor or an iterable"):
        weight_rms(3)
    with pytest.raises(ValueError, match="reduction must be one of"):
        weight_rms([torch.ones(2, 2)], reduction="max")
    with pytest.raises(ValueError, match="classes must be a non-empty subset"):
        weight_rms(_Net(), classes=("Q",))
    lin = nn.Linear(3, 3)
    nn.init.zeros_(lin.weight)
    with pytest.raises(ValueError, match="all zero"):
        lion_to_tiger(1e-3, weights=lin)


# ---- LR schedulers meet Tiger's gradient accumulation (float64: exact formulas) ----------------------
BETA, LR, WD = 0.965, 0.05, 0.1


def _tiger(k, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.randn(4, 5, generator=g, dtype=torch.float64))
    opt = Tiger([{"params": [w], "tiger_class": "K"}], lr=LR, beta=BETA, weight_decay=WD, grad_accum_steps=k)
    grads = [torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(4 * k)]
    return w, opt, grads


def _formula_update(theta, m, eta):
    """docs/semantics.md ("Tiger") class K, in float64 numpy: theta - eta*RMS(theta)*(sign(m) + wd*theta)."""
    th = theta.detach().numpy().astype(np.float64)
    rms = np.sqrt(np.mean(th ** 2))
    return th - eta * rms * (np.sign(m) + WD * th)


def _micro_step(w, opt, g):
    w.grad = g.clone()
    opt.step()
    w.grad = None


def test_warmup_from_zero_first_update_does_not_move_theta_k1():
    w, opt, grads = _tiger(k=1)
    sched = PiecewiseLinearLR(opt, {10: 1.0})
    w0 = w.detach().clone()
    assert opt.param_groups[0]["lr"] == 0.0  # PL(0) = 0
    _micro_step(w, opt, grads[0])
    sched.step()
    assert torch.equal(w.detach(), w0)  # theta (and its decay) untouched ...
    m = (1 - BETA) * grads[0].numpy()
    np.testing.assert_allclose(opt.state[w]["exp_avg"].numpy(), m, rtol=1e-15, atol=0)  # ... m is not
    _micro_step(w, opt, grads[1])  # second update: PL(1) = 0.1
    m = BETA * m + (1 - BETA) * grads[1].numpy()
    np.testing.assert_allclose(w.detach().numpy(), _formula_update(w0, m, LR * 0.1), rtol=0, atol=1e-15)


def test_accumulation_uses_the_lr_of_the_last_micro_step():
    """k = 4, scheduler stepped per micro-step (knots in micro-steps, as tiger.py): the window's lrs are
    lr*[0, 0.1, 0.2, 0.3]; theta stays bit-identical for three micro-steps and then takes ONE step at
    lr*PL(3) = 0.3*lr on m = (1-beta)*mean(g). So with k > 1 the first update does move theta."""
    k = 4
    w, opt, grads = _tiger(k)
    sched = PiecewiseLinearLR(opt, {10: 1.0})
    w0 = w.detach().clone()
    seen = []
    for j in range(k):
        seen.append(opt.param_groups[0]["lr"])
        _micro_step(w, opt, grads[j])
        sched.step()
        if j < k - 1:
            assert torch.equal(w.detach(), w0), f"theta moved on non-final micro-step {j}"
    assert seen == pytest.approx([0.0, 0.1 * LR, 0.2 * LR, 0.3 * LR], rel=1e-15)
    m = (1 - BETA) * np.mean([g.numpy() for g in grads[:k]], axis=0)
    np.testing.assert_allclose(opt.state[w]["exp_avg"].numpy(), m, rtol=1e-14, atol=0)
    np.testing.assert_allclose(w.detach().numpy(), _formula_update(w0, m, 0.3 * LR), rtol=0, atol=1e-15)


def test_scheduler_stepped_per_window_first_window_does_not_move_theta():
    """k = 4, scheduler stepped once per window (knots in updates): the whole first window runs at
    PL(0) = 0, so theta is unchanged after it; the second window steps at PL(1)."""
    k = 4
    w, opt, grads = _tiger(k)
    sched = PiecewiseLinearLR(opt, {3: 1.0})
    w0 = w.detach().clone()
    for j in range(k):
        _micro_step(w, opt, grads[j])
    sched.step()
    assert torch.equal(w.detach(), w0)
    m = (1 - BETA) * np.mean([g.numpy() for g in grads[:k]], axis=0)
    np.testing.assert_allclose(opt.state[w]["exp_avg"].numpy(), m, rtol=1e-14, atol=0)
    for j in range(k, 2 * k):
        _micro_step(w, opt, grads[j])
    m = BETA * m + (1 - BETA) * np.mean([g.numpy() for g in grads[k:2 * k]], axis=0)
    np.testing.assert_allclose(w.detach().numpy(), _formula_update(w0, m, LR / 3), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lr_on_non_final_micro_steps_is_ignored(dtype):
    """Two runs, k = 3, 4 windows: one at a constant lr, one with the lr set to nonsense (0 or 777) on
    every non-final micro-step: theta and m are bitwise equal. Changing the final micro-step's lr does
    change theta (the control)."""
    k, windows = 3, 4

    def run(lr_at):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Embedding(7, 6), nn.Linear(6, 5), nn.LayerNorm(5)).to(dtype)
        opt = Tiger(tiger_param_groups(model), lr=LR, weight_decay=WD, grad_accum_steps=k)
        x = torch.arange(7)
        for t in range(k * windows):
            for grp in opt.param_groups:  # K, E and V groups alike
                grp["lr"] = lr_at(t)
            model(x[torch.randperm(7)[:4]]).square().sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        params = list(model.parameters())
        return [p.detach().clone() for p in params], [opt.state[p]["exp_avg"].clone() for p in params]

    ref = run(lambda t: LR)
    odd = run(lambda t: LR if t % k == k - 1 else (0.0 if t % 2 else 777.0))
    for a, b in zip(ref[0] + ref[1], odd[0] + odd[1]):
        assert torch.equal(a, b)
    control = run(lambda t: LR if t % k != k - 1 or t < k else 2 * LR)
    assert not all(torch.equal(a, b) for a, b in zip(ref[0], control[0]))


# ---- a schedule written in updates, kept under accumulation -----------------------------------------
@pytest.mark.parametrize("knots,from_zero", [({10: 1.0, 40: 0.1}, True), ({0: 0.3, 7: 1.0, 29: 0.0}, True),
                                             ({5: 0.5, 20: 1.0}, False), ({1: 1.0}, True)])
@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_knots_in_micro_steps_give_each_update_its_multiplier(knots, from_zero, k):
    """The final micro-step of window n gets the multiplier of update n at k = 1, to a few ulp
    (piecewise_linear rounds (x1 - x0) * (t - t0) before dividing by t1 - t0), and 0 where it is 0."""
    mapped = knots_in_micro_steps(knots, k, from_zero=from_zero)
    for n in range(60):
        a, b = piecewise_linear(n * k + k - 1, mapped, from_zero), piecewise_linear(n, knots, from_zero)
        assert math.isclose(a, b, rel_tol=1e-15, abs_tol=0.0), (n, a, b)
    if from_zero and 0 not in knots:
        assert piecewise_linear(k - 1, mapped, from_zero) == 0.0


def test_tiger_accumulating_with_mapped_knots_is_large_batch_tiger_on_the_schedule():
    """Both facts on Tiger with grad_accum_steps = 4 and PiecewiseLinearLR stepped per micro-step:
    (1) with knots_in_micro_steps the first window leaves theta bit-identical (its last micro-step
    runs at PL = 0) and (2) every update uses the lr of its window's last micro-step, the multiplier
    k = 1 gives that update: theta equals Tiger k = 1 on the window-mean gradients with the update
    knots, to float64 rounding; an unmapped schedule (knots counted in micro-steps) does not."""
    k, windows, knots = 4, 6, {3: 1.0, 6: 0.2}
    w, opt, grads = _tiger(k)
    grads = grads + [torch.randn_like(grads[0]) for _ in range(k * windows - len(grads))]
    w0 = w.detach().clone()
    sched = PiecewiseLinearLR(opt, knots_in_micro_steps(knots, k))
    used = []
    for t in range(k * windows):
        if t % k == k - 1:
            used.append(opt.param_groups[0]["lr"])
        _micro_step(w, opt, grads[t])
        sched.step()
        if t < k:
            assert torch.equal(w.detach(), w0), f"theta moved during the first window (micro-step {t})"
    assert used == pytest.approx([LR * piecewise_linear(n, knots) for n in range(windows)], rel=1e-15, abs=0)

    def large_batch(sched_knots, per_window):
        v = nn.Parameter(w0.clone())
        o = Tiger([{"params": [v], "tiger_class": "K"}], lr=LR, beta=BETA, weight_decay=WD)
        s = PiecewiseLinearLR(o, sched_knots)
        for n in range(windows):
            mean_g = torch.stack(grads[n * k:(n + 1) * k]).mean(0)
            if per_window is not None:
                o.param_groups[0]["lr"] = LR * per_window(n)
            _micro_step(v, o, mean_g)
            s.step()
        return v.detach()
    ref = large_batch(knots, None)
    torch.testing.assert_close(w.detach(), ref, rtol=1e-13, atol=1e-15)
    # control: knots counted in micro-steps, the final micro-step of window n runs at PL(4n + 3)
    unmapped = large_batch(knots, lambda n: piecewise_linear(n * k + k - 1, knots))
    assert not torch.allclose(unmapped, ref, rtol=1e-6, atol=0)


def test_bad_knots():
    with pytest.raises(ValueError, match="grad_accum_steps must be an integer >= 1"):
        knots_in_micro_steps({3: 1.0}, 0)
    with pytest.raises(ValueError, match="grad_accum_steps must be an integer >= 1"):
        knots_in_micro_steps({3: 1.0}, 2.0)
    with pytest.raises(ValueError, match="non-empty dict"):
        knots_in_micro_steps({}, 2)
    with pytest.raises(ValueError, match="non-negative integer update counts"):
        knots_in_micro_steps({-1: 1.0}, 2)
    with pytest.raises(ValueError, match="non-negative integer update counts"):
        knots_in_micro_steps({1.5: 1.0}, 2)
    with pytest.raises(TypeError, match="multiplier must be a real number"):
        knots_in_micro_steps({1: "x"}, 2)


def test_recipe_is_exported_from_tigercore_optim():
    for name in ("adamw_to_lion", "lion_to_tiger", "lion_to_tiger_groups", "adamw_to_tiger", "weight_rms",
                 "knots_in_micro_steps"):
        assert getattr(tigercore.optim, name) is getattr(recipe, name)
        assert name in tigercore.optim.__all__
