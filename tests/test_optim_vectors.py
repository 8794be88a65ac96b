"""docs/semantics.md "Test vectors" and invariants, on every backend (reference and native CPU).

Expected values are the spec's (computed there in float64 from the formulas), never outputs of
this implementation."""
import math

import pytest
import torch

from tigercore.optim import Lion, PiecewiseLinearLR, Tiger, piecewise_linear

from _helpers import lion, tiger

F64 = torch.float64
NAN, INF = float("nan"), float("inf")


def t64(x):
    return torch.tensor(x, dtype=F64)


# ---- Lion ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-7)])
def test_lion_vector(backend, dtype, tol):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=dtype))
    opt = Lion([p], lr=0.01, betas=(0.9, 0.99), weight_decay=0.1, backend=backend)
    expected = [([0.3, -0.1, 0, 2], [0.989, -1.988, 0.4995, -0.01], [0.003, -0.001, 0, 0.02]),
                ([-0.5, -0.1, 0.1, -0.01], [0.998011, -1.976012, 0.4890005, -0.01999],
                 [-0.00203, -0.00199, 0.001, 0.0197])]
    for g, theta, m in expected:
        p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
        torch.testing.assert_close(p.detach().double(), t64(theta), atol=tol * 2, rtol=tol)
        torch.testing.assert_close(opt.state[p]["exp_avg"].double(), t64(m), atol=tol, rtol=tol * 10)
    assert int(opt.state[p]["step"]) == 2


def test_lion_zero_direction_only_decays(backend):
    """Element 3 of step 1 has c = 0: sign(0) = 0, only the decay moves it."""
    p, g, m = [t64([0.0, 3.0])], [t64([0.0, 0.0])], [t64([0.0, 0.0])]
    lion(backend, p, g, m, lr=0.01, wd=0.1)
    torch.testing.assert_close(p[0], t64([0.0, 3.0 - 0.01 * 0.1 * 3.0]), atol=0, rtol=1e-15)


def test_lion_lambda0_moves_exactly_eta(backend):
    torch.manual_seed(0)
    theta = torch.randn(1000, dtype=F64)
    g = torch.randn(1000, dtype=F64)
    g[::7] = 0.0
    m = torch.zeros_like(theta)
    p = theta.clone()
    lion(backend, [p], [g.clone()], [m], lr=1e-3)
    delta = (p - theta).abs()
    moved = g != 0
    assert torch.all(delta[~moved] == 0)
    ulp = torch.nextafter(theta.abs(), torch.tensor(INF, dtype=F64)) - theta.abs()
    assert torch.all((delta[moved] - 1e-3).abs() <= ulp[moved])


@pytest.mark.parametrize("algo", ["lion", "tiger"])
def test_gradient_scale_invariance_bitwise(backend, algo):
    """Scaling every gradient by 2^10 leaves the fp32 trajectory bitwise identical."""
    torch.manual_seed(1)
    base = torch.randn(4, 33)
    grads = [torch.randn(4, 33) for _ in range(6)]
    runs = []
    for scale in (1.0, 2.0 ** 10):
        p, m = base.clone(), torch.zeros_like(base)
        steps = None
        for g in grads:
            if algo == "lion":
                steps = lion(backend, [p], [g * scale], [m], lr=1e-3, wd=0.1, steps=steps)
            else:
                steps = tiger(backend, [p], [g * scale], [m], lr=1e-3, k=2, steps=steps)
        runs.append(p)
    assert torch.equal(runs[0], runs[1])


# ---- Tiger -----------------------------------------------------------------------------------
K0 = [[0.5, -0.5], [1.0, 0.0]]
G_K = [[0.2, 0.0], [-0.3, 0.1]]
THETA_K1 = [[0.4993845657, -0.4999969381], [1.0006062487, -0.0006123724]]
M_K1 = [[0.007, 0.0], [-0.0105, 0.0035]]


def test_tiger_vector_k(backend):
    p = torch.nn.Parameter(t64(K0))
    opt = Tiger([{"params": [p], "tiger_class": "K"}], lr=1e-3, beta=0.965, weight_decay=0.01, backend=backend)
    p.grad = t64(G_K)
    opt.step()
    torch.testing.assert_close(p.detach(), t64(THETA_K1), atol=1e-10, rtol=0)
    torch.testing.assert_close(opt.state[p]["exp_avg"], t64(M_K1), atol=1e-15, rtol=1e-12)


def test_tiger_vector_v_norm_gain(backend):
    p = torch.nn.Parameter(t64([1.0, 0.9]))
    opt = Tiger([{"params": [p], "tiger_class": "V", "shrink_center": 1.0}], lr=1e-3, backend=backend)
    p.grad = t64([0.5, -0.5])
    opt.step()
    torch.testing.assert_close(p.detach(), t64([0.9995, 0.9005]), atol=1e-12, rtol=0)


def test_tiger_vector_e_rows(backend):
    p = torch.nn.Parameter(t64([[0.1, -0.1], [3.0, 4.0]]))
    opt = Tiger([{"params": [p], "tiger_class": "E"}], lr=1e-3, backend=backend)
    p.grad = t64([[1.0, -1.0], [0.0, 0.0]])
    opt.step()
    torch.testing.assert_close(p.detach(), t64([[0.0998999, -0.0998999], [2.9998939340, 3.9998585786]]),
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("bad", [NAN, INF])
def test_tiger_guard_shrinks_k(backend, bad):
    p, m = [t64(K0)], [t64(M_K1)]
    steps = tiger(backend, p, [t64([[bad, 0.0], [0.0, 0.0]])], m, lr=1e-3)
    torch.testing.assert_close(p[0], t64([[0.495, -0.495], [0.99, 0.0]]), atol=1e-15, rtol=0)
    torch.testing.assert_close(m[0], t64(M_K1), atol=0, rtol=0)
    assert int(steps[0]) == 1


def test_tiger_guard_shrinks_norm_gain_to_one(backend):
    p = [t64([1.0, 0.9])]
    tiger(backend, p, [t64([NAN, 0.0])], [torch.zeros(2, dtype=F64)], lr=1e-3, cls="V", centre=1.0)
    torch.testing.assert_close(p[0], t64([1.0, 0.901]), atol=1e-15, rtol=0)


def test_tiger_guard_off_propagates_nan(backend):
    p, m = [t64(K0)], [torch.zeros(2, 2, dtype=F64)]
    tiger(backend, p, [t64([[NAN, 0.0], [0.0, 0.0]])], m, lr=1e-3, guard=False)
    assert math.isnan(p[0][0, 0]) and math.isnan(m[0][0, 0])
    torch.testing.assert_close(p[0][0, 1:], t64([-0.4999969381]), atol=1e-10, rtol=0)
    torch.testing.assert_close(p[0][1], t64([0.9999938763, 0.0]), atol=1e-10, rtol=0)


def test_tiger_guard_off_inf(backend):
    p, m = [t64(K0)], [torch.zeros(2, 2, dtype=F64)]
    tiger(backend, p, [t64([[INF, 0.0], [0.0, 0.0]])], m, lr=1e-3, guard=False)
    torch.testing.assert_close(p[0], t64([[0.4993845657, -0.4999969381], [0.9999938763, 0.0]]), atol=1e-10, rtol=0)
    assert m[0][0, 0] == INF


def test_tiger_zero_tensor_freezes_and_warns_once(backend):
    p = torch.nn.Parameter(torch.zeros(3, 3, dtype=F64))
    with pytest.warns(UserWarning, match="all zeros"):  # when the parameter is added
        opt = Tiger([p], lr=1e-3, backend=backend)
    p.grad = torch.ones(3, 3, dtype=F64)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert torch.all(p == 0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()  # no second warning
    assert torch.all(p == 0)


def test_tiger_rms_floor_moves_zero_tensor(backend):
    p = torch.nn.Parameter(torch.zeros(3, 3, dtype=F64))
    opt = Tiger([p], lr=1e-3, rms_floor=0.05, backend=backend)
    p.grad = -torch.ones(3, 3, dtype=F64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3, 3), 1e-3 * 0.05, dtype=F64), atol=1e-18, rtol=1e-12)


def test_tiger_k_relative_step_is_alpha(backend):
    torch.manual_seed(2)
    theta = torch.randn(17, 29, dtype=F64)
    p = [theta.clone()]
    tiger(backend, p, [torch.randn(17, 29, dtype=F64)], [torch.zeros_like(theta)], lr=2e-3, wd=0.0)
    ratio = (p[0] - theta).norm() / theta.norm()
    assert abs(ratio.item() - 2e-3) < 1e-14


def test_tiger_e_relative_step_per_row(backend):
    torch.manual_seed(3)
    theta = torch.randn(11, 8, dtype=F64) * torch.logspace(-2, 1, 11, dtype=F64)[:, None]
    p = [theta.clone()]
    tiger(backend, p, [torch.randn(11, 8, dtype=F64)], [torch.zeros_like(theta)], lr=1e-3, wd=0.0, cls="E")
    ratios = (p[0] - theta).norm(dim=1) / theta.norm(dim=1)
    torch.testing.assert_close(ratios, torch.full((11,), 1e-3, dtype=F64), atol=0, rtol=1e-11)


def test_tiger_without_class_scaling_is_lion(backend):
    """V class (eta = 0.5 lr, no decay) with lr = 2*eta equals Lion(b1 = b2 = beta), bitwise."""
    torch.manual_seed(4)
    base = torch.randn(257)
    p_t, m_t, p_l, m_l = base.clone(), torch.zeros(257), base.clone(), torch.zeros(257)
    st_t = st_l = None
    for _ in range(5):
        g = torch.randn(257)
        st_t = tiger(backend, [p_t], [g.clone()], [m_t], lr=2e-3, beta=0.95, cls="V", steps=st_t)
        st_l = lion(backend, [p_l], [g.clone()], [m_l], lr=1e-3, betas=(0.95, 0.95), steps=st_l)
    assert torch.equal(p_t, p_l) and torch.equal(m_t, m_l)


# ---- schedule --------------------------------------------------------------------------------
def test_piecewise_linear_vectors():
    s = {1000: 1, 2000: 0.1}
    for t, want in [(0, 0), (500, 0.5), (999, 0.999), (1000, 1), (1500, 0.55), (2000, 0.1), (5000, 0.1)]:
        assert piecewise_linear(t, s) == pytest.approx(want, abs=1e-15)
    readme = {40000: 1, 160000: 0.5, 640000: 0.1, 1280000: 0.01}
    for t, want in [(20000, 0.5), (40000, 1), (100000, 0.75), (160000, 0.5), (400000, 0.3),
                    (1280000, 0.01), (5000000, 0.01)]:
        assert piecewise_linear(t, readme) == pytest.approx(want, abs=1e-15)


def test_piecewise_linear_lr_scheduler():
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = Tiger([p], lr=2e-3)
    sched = PiecewiseLinearLR(opt, {4: 1.0, 8: 0.5})
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradient: nothing moves, the scheduler's order check is satisfied
        sched.step()
    want = [2e-3 * piecewise_linear(t, {4: 1.0, 8: 0.5}) for t in range(10)]
    assert lrs == pytest.approx(want, abs=1e-18)
    assert lrs[0] == 0.0 and lrs[4] == pytest.approx(2e-3)


# ---- accumulation ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-15), (torch.float32, 1e-6)])
def test_tiger_accumulation_equals_large_batch(backend, dtype, tol):
    torch.manual_seed(5)
    k, schedule, base_lr = 4, {8: 1.0, 40: 0.1}, 1e-2
    theta0 = torch.randn(3, 3, dtype=dtype)
    micro = [torch.randn(3, 3, dtype=dtype) for _ in range(5 * k)]

    p = torch.nn.Parameter(theta0.clone())
    opt = Tiger([p], lr=base_lr, grad_accum_steps=k, backend=backend)
    sched = PiecewiseLinearLR(opt, schedule)
    p_big = torch.nn.Parameter(theta0.clone())
    opt_big = Tiger([p_big], lr=base_lr, grad_accum_steps=1, backend=backend)
    for n in range(5):
        before = p.detach().clone()
        for j in range(k):
            p.grad = micro[n * k + j].clone()
            opt.step()
            sched.step()
            if j < k - 1:
                assert torch.equal(p.detach(), before), "theta moved inside an accumulation group"
        opt_big.param_groups[0]["lr"] = base_lr * piecewise_linear(n * k + k - 1, schedule)
        p_big.grad = torch.stack(micro[n * k:(n + 1) * k]).double().mean(0).to(dtype)
        opt_big.step()
        if dtype == torch.float64:
            assert (p.detach() - p_big.detach()).abs().max() <= tol
        else:
            torch.testing.assert_close(p.detach(), p_big.detach(), rtol=tol, atol=1e-7)


def test_tiger_accumulation_nan_microstep(backend):
    """A NaN at micro-step j adds the other k-1 gradients over k, skips the beta-decay if j = 0,
    and shrinks theta at j (docs/semantics.md, "Tiger", guard)."""
    torch.manual_seed(6)
    k, beta, lr, s = 4, 0.965, 1e-2, 0.99
    theta0 = torch.randn(3, 3, dtype=F64)
    m0 = torch.randn(3, 3, dtype=F64) * 0.1
    grads = [torch.randn(3, 3, dtype=F64) for _ in range(k)]
    for j in range(k):
        p, m = [theta0.clone()], [m0.clone()]
        steps = None
        for i in range(k):
            g = grads[i].clone()
            if i == j:
                g[1, 1] = NAN
            steps = tiger(backend, p, [g], m, lr=lr, beta=beta, k=k, shrink=s, steps=steps)
        good = [grads[i] for i in range(k) if i != j]
        m_want = (m0 if j == 0 else beta * m0) + sum(good) * (1 - beta) / k
        torch.testing.assert_close(m[0], m_want, atol=1e-15, rtol=1e-13)
        theta_shrunk = theta0 * s  # the shrink happens before the update (micro-step j < k-1)
        if j == k - 1:  # the update micro-step itself is the NaN one: only the shrink
            torch.testing.assert_close(p[0], theta_shrunk, atol=1e-15, rtol=0)
        else:
            eta = lr * theta_shrunk.square().mean().sqrt()
            want = theta_shrunk - eta * (torch.sign(m_want) + 0.01 * theta_shrunk)
            torch.testing.assert_close(p[0], want, atol=1e-14, rtol=0)


def test_tiger_beta_tilde_approximation_is_not_equal(backend):
    """[K8634]'s approximate variant (beta~ = 1-(1-beta)/k each micro-step) differs."""
    torch.manual_seed(7)
    k, beta = 4, 0.965
    theta0, m0 = torch.randn(3, 3, dtype=F64), torch.randn(3, 3, dtype=F64) * 0.1
    grads = [torch.randn(3, 3, dtype=F64) for _ in range(k)]
    m_exact, m_approx = [m0.clone()], [m0.clone()]
    st = None
    for g in grads:
        st = tiger(backend, [theta0.clone()], [g.clone()], m_exact, lr=0.0, beta=beta, k=k, steps=st)
    for g in grads:
        tiger(backend, [theta0.clone()], [g.clone()], m_approx, lr=0.0, beta=1 - (1 - beta) / k, k=1)
    assert (m_exact[0] - m_approx[0]).abs().max() > 1e-4
