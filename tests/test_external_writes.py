"""Writes to parameters between steps ([note: external writes], docs/semantics.md "External
writes"): master copies are re-seeded where they no longer round to the parameter, Kahan
compensations are zeroed, Tiger's carried sums are recomputed, writes that bypass the version
counter are declared with mark_params_written(), and steps work under torch.inference_mode."""
import pytest
import torch

from tigercore.optim import Lion, Tiger
from tigercore.reference import optim as ref

BF16 = torch.bfloat16


def _grads(params, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


def _bf16_params():
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter((0.5 * torch.randn(40, 30, generator=gen)).to(BF16)),
            torch.nn.Parameter(torch.randn(70, generator=gen).to(BF16))]


def _lion(params, backend, **kw):
    return Lion(params, lr=1e-3, weight_decay=0.1, backend=backend, **kw)


@pytest.mark.parametrize("write", ["clamp_", "copy_", "load_state_dict"])
def test_master_is_reseeded_where_it_no_longer_rounds_to_the_parameter(backend, write):
    params = _bf16_params()
    opt = _lion(params, backend)
    for s in range(3):
        _grads(params, s)
        opt.step()
    masters_before = [opt.state[p]["master_param"].clone() for p in params]
    with torch.no_grad():
        if write == "clamp_":
            params[0].clamp_(-0.1, 0.1)  # some elements change, the rest keep their value
        elif write == "copy_":
            params[1].copy_(torch.linspace(-1, 1, 70).to(BF16))
    if write == "load_state_dict":
        module = torch.nn.ParameterList(params)
        sd = {k: v.clone() for k, v in module.state_dict().items()}
        sd["0"][:5] = 0.25  # a checkpoint that differs in five rows
        module.load_state_dict(sd)
    # Oracle: the elementwise rule, then one reference step on the re-seeded masters.
    want_p = [p.detach().clone() for p in params]
    want_m = []
    for p, m in zip(want_p, masters_before):
        stale = m.to(BF16).view(torch.int16) != p.view(torch.int16)
        want_m.append(torch.where(stale, p.float(), m))
    assert any(not torch.equal(a, b) for a, b in zip(want_m, masters_before))  # the write really happened
    _grads(params, 99)
    moms = [opt.state[p]["exp_avg"].clone() for p in params]
    steps = [opt.state[p]["step"].clone() for p in params]
    ref.lion_step_(want_p, [p.grad.clone() for p in params], moms, want_m, steps, lr=torch.tensor(1e-3, dtype=torch.float64),
                   beta1=0.9, beta2=0.99, weight_decay=0.1, param_ids=[0, 1], precision="master")
    opt.step()
    for p, w, m in zip(params, want_p, want_m):
        assert torch.equal(p.detach(), w)
        assert torch.equal(opt.state[p]["master_param"], m)


def test_swap_out_and_back_and_reloading_in_either_order_lose_nothing(backend):
    """An EMA swap restores the same bf16 values and a checkpoint of this very run rounds its
    masters to the parameters: the masters keep their extra precision, so training continues
    bit for bit as without the interruption."""
    runs = []
    for interrupt in (None, "swap", "opt-then-model"):
        params = _bf16_params()
        opt = _lion(params, backend)
        for s in range(6):
            if s == 3 and interrupt == "swap":
                saved = [p.detach().clone() for p in params]
                with torch.no_grad():
                    for p in params:
                        p.copy_(torch.zeros_like(p))  # evaluate with other weights ...
                    for p, v in zip(params, saved):
                        p.copy_(v)  # ... and put the trained ones back
            if s == 3 and interrupt == "opt-then-model":
                ckpt = {"opt": opt.state_dict(), "model": [p.detach().clone() for p in params]}
                params = _bf16_params()
                opt = _lion(params, backend)
                opt.load_state_dict(ckpt["opt"])  # the optimizer first ...
                with torch.no_grad():
                    for p, v in zip(params, ckpt["model"]):
                        p.copy_(v)  # ... then the model: a write the next step must not misread
            _grads(params, s)
            opt.step()
        runs.append([p.detach().clone() for p in params] + [opt.state[p]["master_param"].clone() for p in params])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_kahan_compensation_is_zeroed_by_an_external_write(backend):
    params = _bf16_params()
    opt = Lion(params, lr=torch.tensor(1e-3), precision="kahan", backend=backend)
    for s in range(4):
        _grads(params, s)
        opt.step()
    assert any(bool(opt.state[p]["kahan_comp"].any()) for p in params)
    with torch.no_grad():
        params[0].add_(0.5)
    opt.param_groups[0]["lr"].fill_(0.0)  # a zero step: theta' = theta + comp, stored with comp' = rest
    _grads(params, 10)
    before = params[0].detach().clone()
    opt.step()
    assert torch.equal(params[0].detach(), before)  # nothing of the old compensation was added
    assert not bool(opt.state[params[0]]["kahan_comp"].any())
    assert bool(opt.state[params[1]]["kahan_comp"].any())  # the untouched parameter kept its own


@pytest.mark.parametrize("how", ["in-place", ".data", "numpy"])
def test_tiger_carried_sums_follow_writes(backend, how):
    """A rescaled weight changes Tiger's step size at once; writes the version counter cannot
    see are declared with mark_params_written()."""
    results = []
    for carried in (True, False):
        p = torch.nn.Parameter(torch.randn(40, 30, generator=torch.Generator().manual_seed(4)))
        opt = Tiger([p], lr=1e-2, backend=backend)
        _grads([p], 0)
        opt.step()
        if how == "in-place":
            with torch.no_grad():
                p.mul_(3.0)
        elif how == ".data":
            p.data.mul_(3.0)
            opt.mark_params_written([p])
        else:
            p.detach().numpy()[...] *= 3.0
            opt.mark_params_written()
        if not carried:
            opt.state[p]["sumsq"].fill_(-1.0)  # the oracle: a fresh sum
        for s in (1, 2):
            _grads([p], s)
            opt.step()
        results.append(p.detach().clone())
    assert torch.equal(results[0], results[1])


def test_mark_params_written_reseeds_master_after_a_data_write(backend):
    params = _bf16_params()
    opt = _lion(params, backend)
    _grads(params, 0)
    opt.step()
    params[1].data.copy_(torch.full((70,), 0.75, dtype=BF16))  # invisible to the version counter
    opt.mark_params_written(params[1])
    lr0 = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr"] = 0.0
    opt.param_groups[0]["weight_decay"] = 0.0
    _grads(params, 1)
    opt.step()
    assert torch.equal(opt.state[params[1]]["master_param"], torch.full((70,), 0.75))
    opt.param_groups[0]["lr"] = lr0


@pytest.mark.parametrize("opt_cls", [Lion, Tiger])
def test_steps_under_inference_mode_keep_the_optimizer_working(backend, opt_cls):
    runs = []
    for inference in (False, True):
        p = torch.nn.Parameter(torch.randn(20, 10, generator=torch.Generator().manual_seed(1)))
        opt = opt_cls([p], lr=1e-2, backend=backend)
        for s in range(4):
            _grads([p], s)
            if inference and s % 2 == 0:
                with torch.inference_mode():
                    opt.step()
            else:
                opt.step()
        runs.append((p.detach().clone(), opt.state[p]["exp_avg"].clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_optimizer_created_inside_inference_mode_trains_outside(backend):
    p = torch.nn.Parameter(torch.randn(8, 4))
    with torch.inference_mode():
        opt = Tiger([p], lr=1e-2, backend=backend)
    _grads([p], 0)
    opt.step()
    assert not opt.state[p]["exp_avg"].is_inference()
