"""Cautious masking (cautious=True; docs/semantics.md "Cautious masking"): the reference against an
independent float64 formula (keep = u*g > 0, s = n / max(K, n/1000), d = u*keep*s) for Lion and
Tiger, maximize and the all-disagree floor; the native CPU kernels equal to the reference bit for
bit through the optimizers (every param dtype and precision mode, Tiger K/E/V, accumulation,
guard, GradScaler, 8-bit momentum, 1 and 2 threads); the prototype the README's numbers were
measured with (bench/bench_gpt.py) agrees with the built optimizers; checks of the argument.
Compiled, in-backward and CUDA runs: tests/test_compile.py, test_step_in_backward.py,
test_cuda.py's neighbours below (skipped without a GPU) and csrc/tests/test_mta.cpp."""
import importlib.util
import os
import sys

import pytest
import torch

from conftest import requires_native
from tolerances import assert_bitwise_equal

from tigercore.optim import Lion, Tiger
from tigercore.reference import optim as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the reference against float64 ------------------------------------------------------------------
def _f64_lion(w, m, g, lr, b1, wd, maximize):
    gs = -g if maximize else g
    u = torch.sign(b1 * m + (1 - b1) * gs)
    keep = (u * gs) > 0
    n, k = w.numel(), int(keep.sum())
    s = n / max(k, 0.001 * n)
    return w - lr * (wd * w + u * keep * s), k


@pytest.mark.parametrize("maximize", [False, True])
def test_lion_reference_against_float64(maximize):
    g0 = torch.Generator().manual_seed(1)
    w, m, g = (torch.randn(5000, generator=g0, dtype=torch.float64) for _ in range(3))
    lr, b1, wd = 1e-2, 0.9, 0.1
    want, kept = _f64_lion(w, m, g, lr, b1, wd, maximize)
    assert 1000 < kept < 4000  # a real mask: neither nothing nor everything kept
    p, mom = w.float().clone(), m.float().clone()
    ref.lion_step_([p], [g.float()], [mom], [], [torch.zeros((), dtype=torch.int64)],
                   lr=torch.tensor(lr, dtype=torch.float64), beta1=b1, beta2=0.99, weight_decay=wd, param_ids=[0],
                   maximize=maximize, cautious=True)
    # float32 op-math: each element within a few float32 ulps of the float64 value
    torch.testing.assert_close(p.double(), want, rtol=4e-7, atol=4e-7 * lr * 5000 / kept)
    # the elements not kept move by the decay only
    gs = -g if maximize else g
    dropped = (torch.sign(b1 * m + (1 - b1) * gs) * gs) <= 0
    torch.testing.assert_close(p.double()[dropped], (w - lr * wd * w)[dropped], rtol=1e-6, atol=1e-9)


def test_all_disagree_moves_nothing_and_scale_floor():
    """K = 0: no element keeps its step (wd = 0: theta unchanged); the scale's floor is n/1000."""
    w = torch.randn(100)
    g = torch.ones(100)
    m = -10 * torch.ones(100)  # c = 0.9*(-10) + 0.1*1 < 0: u = -1, u*g < 0 everywhere
    p = w.clone()
    ref.lion_step_([p], [g], [m], [], [torch.zeros((), dtype=torch.int64)], lr=torch.tensor(1e-2, dtype=torch.float64),
                   beta1=0.9, beta2=0.99, weight_decay=0.0, param_ids=[0], cautious=True)
    assert torch.equal(p, w)
    assert ref.caution_scale(100, 0) == 1000.0 and ref.caution_scale(100, 50) == 2.0
    assert ref.caution_scale(10 ** 6, 10 ** 6) == 1.0


def test_tiger_reference_against_float64():
    g0 = torch.Generator().manual_seed(2)
    w, m, g = (torch.randn(64, 50, generator=g0, dtype=torch.float64) for _ in range(3))
    lr, beta, wd = 2e-2, 0.9, 0.01
    m_new = beta * m + (1 - beta) * g
    u = torch.sign(m_new)
    keep = u * g > 0
    n, k = w.numel(), int(keep.sum())
    eta = lr * float(w.pow(2).mean().sqrt())
    want = w - eta * (wd * w + u * keep * (n / max(k, 0.001 * n)))
    p, mom = w.float().clone(), m.float().clone()
    ref.tiger_step_([p], [g.float()], [mom], [], [torch.zeros((), dtype=torch.int64)],
                    lr=torch.tensor(lr, dtype=torch.float64), beta=beta, weight_decay=wd, grad_accum_steps=1,
                    tiger_class="K", shrink_ratio=0.99, shrink_center=0.0, nonfinite_guard=True, rms_floor=0.0,
                    param_ids=[0], cautious=True)
    torch.testing.assert_close(p.double(), want, rtol=4e-7, atol=1e-6 * eta)


# ---- native == reference ------------------------------------------------------------------------------
SHAPES = [(0,), (1,), (257,), (1000,), (3, 700), (70000,)]
MODES = [(torch.float32, "none"), (torch.float64, "none")] + [
    (d, m) for d in (torch.bfloat16, torch.float16) for m in ("none", "kahan", "stochastic", "master")]


def _run(cls, backend, dtype, precision, steps=4, bits=32, threads=1, scaler=None, hook=None, device="cpu", **kw):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter((torch.randn(s, generator=g) * 0.5).to(dtype).to(device)) for s in SHAPES]
    if cls is Tiger:
        groups = [dict(params=[p for p in params if p.dim() == 2], tiger_class="E"),
                  dict(params=[p for p in params if p.numel() == 257], tiger_class="V", shrink_center=1.0),
                  dict(params=[p for p in params if p.dim() == 1 and p.numel() != 257], tiger_class="K")]
        opt = Tiger(groups, cautious=True, backend=backend, precision=precision, momentum_bits=bits, seed=3, **kw)
    else:
        opt = Lion(params, cautious=True, backend=backend, precision=precision, momentum_bits=bits, seed=3, **kw)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for t in range(steps):
            for p in params:
                p.grad = (torch.randn(p.shape, generator=g) * (scaler or 1.0)).to(dtype).to(device)
            if hook is not None:
                hook(t, params)
            if scaler is not None:  # GradScaler's inputs, as the optimizer receives them
                opt.grad_scale = torch.tensor(float(scaler), device=device)
                opt.found_inf = torch.tensor(0.0, device=device)
            opt.step()
    finally:
        torch.set_num_threads(old)
    return params, opt


def _same(a, b, what):
    (pa, oa), (pb, ob) = a, b
    for i, (x, y) in enumerate(zip(pa, pb)):
        assert_bitwise_equal(x.detach().cpu(), y.detach().cpu(), f"{what} param[{i}]")
        for key, t in oa.state[x].items():
            if isinstance(t, torch.Tensor) and key not in ("param_stamp", "sumsq"):
                assert_bitwise_equal(t.cpu(), ob.state[y][key].cpu(), f"{what} {key}[{i}]")


@pytest.mark.parametrize("dtype,precision", MODES, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("cls", [Lion, Tiger], ids=["lion", "tiger"])
def test_native_equals_reference(cls, dtype, precision):
    requires_native(cls._op_name)
    kw = dict(lr=1e-2, weight_decay=0.1) if cls is Lion else dict(lr=2e-2, grad_accum_steps=2)
    nat, ref_run = _run(cls, "native", dtype, precision, **kw), _run(cls, "reference", dtype, precision, **kw)
    if cls is Tiger and dtype == torch.float64:  # Tiger's float64 sums of squares depend on the order
        for x, y in zip(nat[0], ref_run[0]):
            torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-14, atol=1e-15)
        return
    _same(nat, ref_run, f"{cls.__name__} {dtype} {precision}")


@pytest.mark.parametrize("cls", [Lion, Tiger], ids=["lion", "tiger"])
@pytest.mark.parametrize("case", ["8bit", "maximize", "threads2", "nan_guard", "gradscaler"])
def test_native_equals_reference_cases(cls, case):
    requires_native(cls._op_name)
    kw = dict(lr=1e-2) if cls is Lion else dict(lr=2e-2)
    extra = {"8bit": dict(bits=8), "maximize": dict(maximize=True), "threads2": dict(threads=2),
             "gradscaler": dict(scaler=1000.0),
             "nan_guard": dict(hook=lambda t, ps: ps[3].grad.view(-1)[7].fill_(float("nan")) if t == 1 else None)}[case]
    nat = _run(cls, "native", torch.bfloat16, "stochastic", **kw, **extra)
    ref_run = _run(cls, "reference", torch.bfloat16, "stochastic", **kw, **extra)
    _same(nat, ref_run, f"{cls.__name__} {case}")


def test_cautious_changes_the_step_and_only_where_the_signs_disagree():
    """Against the same run without masking: from zero momentum u = sign(g) agrees everywhere, all
    are kept and s = 1, so the step is the plain one bit for bit; after a gradient reversal the
    momentum still points the old way, no element agrees, and with wd = 0 nothing moves."""
    p0 = torch.randn(1000)
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    g = torch.randn(1000)
    a.grad, b.grad = g.clone(), g.clone()
    Lion([a], lr=1e-2, cautious=True).step()
    Lion([b], lr=1e-2).step()
    assert torch.equal(a, b)  # m = 0: c = (1-b1) g, u g > 0 wherever g != 0
    opt_a, opt_b = Lion([a], lr=1e-2, betas=(0.99, 0.9), cautious=True), Lion([b], lr=1e-2, betas=(0.99, 0.9))
    for opt in (opt_a, opt_b):
        opt.step()  # the momentum now holds (1 - 0.9) g
    before = a.detach().clone()
    a.grad, b.grad = -g, -g  # a reversed gradient: c = 0.99 m - 0.01 g = 0.089 g keeps m's sign, u g < 0
    opt_a.step()
    opt_b.step()
    assert torch.equal(a.detach(), before) and not torch.equal(b.detach(), before)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,precision,bits", [(torch.float32, "none", 32), (torch.bfloat16, "stochastic", 8),
                                                  (torch.float16, "master", 32)], ids=str)
@pytest.mark.parametrize("cls", [Lion, Tiger], ids=["lion", "tiger"])
def test_cuda_equals_cpu_native(cls, dtype, precision, bits):
    """The CUDA count stage (caution.cu) and update against the CPU kernels: Lion bit for bit; Tiger
    within an ulp (its K/E step sizes come from CUDA's own sums of squares). Skipped without a GPU."""
    requires_native(cls._op_name, "cuda")
    kw = dict(lr=1e-2, weight_decay=0.1) if cls is Lion else dict(lr=2e-2, grad_accum_steps=2)
    gpu = _run(cls, "native", dtype, precision, bits=bits, scaler=1024.0, device="cuda", **kw)
    cpu = _run(cls, "native", dtype, precision, bits=bits, scaler=1024.0, **kw)
    if cls is Lion:
        return _same(gpu, cpu, f"cuda lion {dtype}")
    for x, y in zip(gpu[0], cpu[0]):
        torch.testing.assert_close(x.detach().cpu().float(), y.detach().float(), rtol=0,
                                   atol=2 * float(torch.finfo(dtype).eps))


# ---- the prototype behind the README's numbers ---------------------------------------------------------
def test_prototype_of_bench_gpt_agrees():
    """bench/bench_gpt.py's PureLion/PureTiger (timm's caution, plain PyTorch) and the built
    optimizers follow the same trajectory on a small MLP for 10 steps (different roundings only)."""
    spec = importlib.util.spec_from_file_location("bench_gpt", os.path.join(ROOT, "bench", "bench_gpt.py"))
    bg = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpt"] = bg
    spec.loader.exec_module(bg)

    def train(make):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
        opt = make(model)
        x, y = torch.randn(64, 16), torch.randn(64, 4)
        for _ in range(10):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def groups(model):
        return [dict(params=[p for p in model.parameters() if p.dim() >= 2], tiger_class="K"),
                dict(params=[p for p in model.parameters() if p.dim() < 2], tiger_class="V")]

    a = train(lambda m: bg.PureLion(m.parameters(), lr=1e-3, weight_decay=0.1, cautious=True))
    b = train(lambda m: Lion(m.parameters(), lr=1e-3, weight_decay=0.1, cautious=True, precision="none"))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    a = train(lambda m: bg.PureTiger(groups(m), lr=1e-2, cautious=True))
    b = train(lambda m: Tiger(groups(m), lr=1e-2, cautious=True, nonfinite_guard=False))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---- the argument and checkpoints -----------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Lion, Tiger])
def test_argument_checked_and_saved(cls):
    p = torch.nn.Parameter(torch.randn(10))
    with pytest.raises(ValueError, match="cautious"):
        cls([p], cautious=1).step()
    opt = cls([p], cautious=True)
    p.grad = torch.randn(10)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["cautious"] is True
    old = {**sd, "param_groups": [{k: v for k, v in g.items() if k != "cautious"} for g in sd["param_groups"]]}
    fresh = cls([p])
    fresh.load_state_dict(old)  # a checkpoint from before the option: plain steps
    assert fresh.param_groups[0].get("cautious", False) is False
