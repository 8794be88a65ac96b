"""Property-based: native == reference, bitwise, over dtypes x precision modes x shapes x
hyperparameters x GradScaler x special values (hypothesis draws them; the examples are
deterministic per run through hypothesis' database-free derandomised mode)."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import lion, tiger
from conftest import requires_native
from tolerances import assert_bitwise_equal

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MOMENTA = [torch.float32, torch.bfloat16, torch.float16]


@st.composite
def cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    mode = draw(st.sampled_from(["none", "kahan", "stochastic", "master"])) if dtype != torch.float32 else "none"
    shapes = draw(st.lists(st.one_of(st.tuples(st.integers(0, 300)),
                                     st.tuples(st.integers(1, 9), st.integers(1, 40))), min_size=1, max_size=4))
    return dict(
        dtype=dtype, mode=mode, shapes=shapes, mom=draw(st.sampled_from(MOMENTA)),
        algo=draw(st.sampled_from(["lion", "K", "E", "V"])),
        lr=draw(st.sampled_from([0.0, 1e-5, 3e-4, 1e-2, 0.3])),
        b1=draw(st.sampled_from([0.0, 0.5, 0.9, 0.965, 1.0])),
        b2=draw(st.sampled_from([0.0, 0.99, 0.999])),
        wd=draw(st.sampled_from([0.0, 0.01, 0.1, 1.0])),
        k=draw(st.integers(1, 4)), step0=draw(st.integers(0, 7)),
        guard=draw(st.booleans()), maximize=draw(st.booleans()),
        scale=draw(st.sampled_from([None, 1.0, 2.0 ** 10, 3.0])),
        special=draw(st.sampled_from([None, 0.0, float("nan"), float("inf")])),
        seed=draw(st.integers(0, 2 ** 32 - 1)), data_seed=draw(st.integers(0, 2 ** 31)))


def _tensors(c):
    gen = torch.Generator().manual_seed(c["data_seed"])
    ps, gs, ms, aux = [], [], [], []
    for shape in c["shapes"]:
        p = torch.randn(shape, generator=gen).to(c["dtype"])
        g = torch.randn(shape, generator=gen)
        if c["special"] is not None and g.numel():
            g.view(-1)[torch.randint(g.numel(), (1,), generator=gen)] = c["special"]
        if c["scale"] is not None:
            g = g * c["scale"]
        ps.append(p)
        gs.append(g.to(c["dtype"]))
        ms.append((torch.randn(shape, generator=gen) * 0.1).to(c["mom"]))
        if c["mode"] == "kahan":
            aux.append((torch.randn(shape, generator=gen) * 1e-3).to(c["dtype"]))
        elif c["mode"] == "master":
            aux.append(p.float() + torch.randn(shape, generator=gen) * 1e-3)
    return ps, gs, ms, aux


def _run(backend, c, tensors):
    ps, gs, ms, aux = tensors
    steps = [torch.full((), c["step0"], dtype=torch.int64) for _ in ps]
    common = dict(aux=aux, precision=c["mode"], seed=c["seed"], maximize=c["maximize"], steps=steps,
                  grad_scale=None if c["scale"] is None else torch.tensor(c["scale"]),
                  found_inf=None if c["scale"] is None else torch.tensor(0.0))
    if c["algo"] == "lion":
        lion(backend, ps, gs, ms, lr=c["lr"], betas=(c["b1"], c["b2"]), wd=c["wd"], **common)
    else:
        tiger(backend, ps, gs, ms, lr=c["lr"], beta=c["b1"], wd=c["wd"], k=c["k"], cls=c["algo"],
              guard=c["guard"], **common)
    return steps


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(cases())
def test_native_equals_reference_property(c):
    requires_native("lion_step_")
    base = _tensors(c)
    nat = [[t.clone() for t in lst] for lst in base]
    ref = [[t.clone() for t in lst] for lst in base]
    s_nat = _run("native", c, nat)
    s_ref = _run("reference", c, ref)
    for name, a_list, b_list in zip(("param", "grad", "exp_avg", "aux"), nat, ref):
        for a, b in zip(a_list, b_list):
            assert_bitwise_equal(a, b, f"{name} {c}")
    assert [int(s) for s in s_nat] == [int(s) for s in s_ref]
