"""Bad input gets a clear error before anything is modified; non-contiguous tensors are handled."""
import pytest
import torch

from tigercore.optim import Lion, Tiger

from _helpers import lion, tiger


def _snapshot(*lists):
    return [t.clone() for lst in lists for t in lst]


def _unchanged(before, *lists):
    return all(torch.equal(a, b) for a, b in zip(before, [t for lst in lists for t in lst]))


BAD_CASES = {
    "length": (lambda p, g, m: (p, g[:1], m), "same length"),
    "shape": (lambda p, g, m: (p, [g[0], torch.zeros(5)], m), "shape"),
    "grad dtype": (lambda p, g, m: (p, [g[0], g[1].double()], m), "dtype"),
    "momentum dtype": (lambda p, g, m: (p, g, [m[0], m[1].to(torch.int32)]), "exp_avgs"),
    "int params": (lambda p, g, m: ([p[0], p[1].to(torch.int64)], [g[0], g[1].to(torch.int64)], m), "dtype"),
    "sparse": (lambda p, g, m: (p, [g[0], g[1].to_sparse()], m), "sparse"),
    "complex": (lambda p, g, m: (p, [g[0], g[1].to(torch.complex64)], m), "complex|dtype"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
@pytest.mark.parametrize("algo", ["lion", "tiger"])
def test_bad_input_is_refused_before_any_change(backend, algo, case):
    make, pattern = BAD_CASES[case]
    p = [torch.randn(4, 3), torch.randn(6)]
    g = [torch.randn(4, 3), torch.randn(6)]
    m = [torch.zeros(4, 3), torch.zeros(6)]
    bp, bg, bm = make(p, g, m)
    before = _snapshot(p, m)
    fn = lion if algo == "lion" else tiger
    with pytest.raises(RuntimeError, match=pattern):
        fn(backend, bp, bg, bm, lr=1e-3)
    assert _unchanged(before, p, m)


def test_bad_precision_and_class(backend):
    p, g, m = [torch.randn(3)], [torch.randn(3)], [torch.zeros(3)]
    with pytest.raises(RuntimeError, match="precision must be one of"):
        lion(backend, p, g, m, lr=1e-3, precision="fp8")
    with pytest.raises(RuntimeError, match="tiger_class"):
        tiger(backend, p, g, m, lr=1e-3, cls="X")


def test_missing_aux_for_master(backend):
    p, g, m = [torch.randn(3).bfloat16()], [torch.randn(3).bfloat16()], [torch.zeros(3)]
    with pytest.raises(RuntimeError, match="aux"):
        lion(backend, p, g, m, lr=1e-3, precision="master")


def test_optimizer_hyperparameter_errors():
    p = [torch.nn.Parameter(torch.randn(2, 2))]
    for kwargs, pat in [({"lr": -1.0}, "learning rate"), ({"betas": (1.5, 0.9)}, "betas"),
                        ({"weight_decay": -0.1}, "weight_decay"), ({"precision": "fp8"}, "precision"),
                        ({"backend": "gpu"}, "backend")]:
        with pytest.raises(ValueError, match=pat):
            Lion(p, **kwargs)
    for kwargs, pat in [({"beta": 2.0}, "beta"), ({"grad_accum_steps": 0}, "grad_accum_steps"),
                        ({"rms_floor": -1.0}, "rms_floor")]:
        with pytest.raises(ValueError, match=pat):
            Tiger(p, **kwargs)
    with pytest.raises(ValueError, match="tiger_class"):
        Tiger([{"params": p, "tiger_class": "Q"}])


def test_optimizer_rejects_sparse_and_complex_grads():
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = Lion([p])
    p.grad = torch.randn(4, 3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    q = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="complex64 is not supported"):  # refused when added
        Lion([q])


def test_non_contiguous_parameters_are_handled(backend):
    """A transposed (non-contiguous) parameter is updated exactly like its contiguous copy."""
    torch.manual_seed(0)
    base = torch.randn(5, 7)
    p_nc = torch.nn.Parameter(base.t())  # non-contiguous view
    p_c = torch.nn.Parameter(base.t().contiguous())
    assert not p_nc.is_contiguous()
    o1, o2 = Tiger([p_nc], lr=1e-2, backend=backend), Tiger([p_c], lr=1e-2, backend=backend)
    for _ in range(3):
        g = torch.randn(7, 5)
        p_nc.grad, p_c.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    assert torch.equal(p_nc.detach(), p_c.detach())


def test_native_op_rejects_non_contiguous():
    from conftest import requires_native
    requires_native("lion_step_")
    p = torch.randn(5, 7).t()
    with pytest.raises(RuntimeError, match="contiguous"):
        lion("native", [p], [torch.randn(5, 7).t()], [torch.zeros(5, 7).t()], lr=1e-3)
