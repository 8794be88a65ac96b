"""CUDA kernels: CUDA vs CPU-native vs reference for every dtype, momentum dtype, precision mode and
Tiger class on awkward shapes (0, 1, 7, 4097, multi-chunk, long rows, misaligned views, 320 tensors
in one call, mixed dtypes), GradScaler on the device without host synchronisation, the guard,
torch.compile and CUDA-graph capture. Skipped without a GPU: these run the day a GPU exists. Until
then every CI run compiles the kernels, inspects them (bench/cuda_inspect.py) and runs their block
code on the CPU against the CPU kernels (csrc/tests/test_mta.cpp)."""
import pytest
import torch

from _cases import SHAPES, clone_all, make_tensors
from _helpers import lion, tiger
from conftest import requires_native
from tolerances import TOL, assert_bitwise_equal

pytestmark = pytest.mark.cuda
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from tigercore.optim import Lion, Tiger, tiger_param_groups  # noqa: E402

COMBOS = [(torch.float32, torch.float32, "none"), (torch.float64, torch.float64, "none"),
          (torch.float32, torch.bfloat16, "none")] + [
    (d, m, mode) for d in (torch.float16, torch.bfloat16) for m in (torch.float32, d)
    for mode in ("none", "kahan", "stochastic", "master")]
ALGOS = ["lion", "tigerK", "tigerE", "tigerV"]
# Chunks are 65536 elements (csrc/include/tigercore/mta_plan.h): (70000,) and (3, 70001) span
# several chunks, rows of 70001 are cut into pieces, rows of 7 are not a multiple of a vector.
SHAPES_CUDA = SHAPES + [(70000,), (3, 70001), (90, 768), (100, 7), (2, 3, 5)]
VARIANTS = {  # keyword arguments of one call, per algorithm family
    "plain": dict(),
    "scaled_pow2_maximize": dict(grad_scale=1024.0, maximize=True),
    "scaled_1000": dict(grad_scale=1000.0),
}


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A copy on `device` that keeps t's storage offset, so misaligned views stay misaligned."""
    off = t.storage_offset()
    out = torch.empty(off + t.numel(), dtype=t.dtype, device=device)[off:].view(t.shape)
    out.copy_(t)
    return out


def moved(lists, device):
    return [[to_device(t, device) for t in lst] for lst in lists]


def run(backend, algo, tensors, mode, n_steps=3, step0=0, grad_scale=None, found_inf=None, **kw):
    """n_steps calls of one op on `tensors` (params, grads, moms, aux), on their device."""
    params, grads, moms, aux = tensors
    dev = params[0].device
    steps = [torch.full((), step0, dtype=torch.int64, device=dev) for _ in params]
    scale = None if grad_scale is None else torch.tensor(grad_scale, dtype=torch.float32, device=dev)
    inf = None if found_inf is None else torch.tensor(found_inf, dtype=torch.float32, device=dev)
    for _ in range(n_steps):
        if algo == "lion":
            lion(backend, params, grads, moms, lr=1e-3, wd=0.1, aux=aux, precision=mode, seed=7, steps=steps,
                 grad_scale=scale, found_inf=inf, **kw)
        else:
            tiger(backend, params, grads, moms, lr=2e-3, cls=algo[-1], aux=aux, precision=mode, seed=7, steps=steps,
                  grad_scale=scale, found_inf=inf, **kw)
    return steps


def assert_same(cpu_lists, other_lists, what, fp64_close=False):
    """Bitwise; with fp64_close, float64 tensors to the float64 tolerance: Tiger K/E's fp64 sums of
    squares are added in another order on the GPU, and [note: float64 reference]
    (tests/test_optim_fuzz.py) over several steps."""
    for a_list, b_list in zip(cpu_lists, other_lists):
        for a, b in zip(a_list, b_list):
            if fp64_close and a.dtype == torch.float64:
                torch.testing.assert_close(a, b.cpu(), **TOL[torch.float64], equal_nan=True, msg=what)
            else:
                assert_bitwise_equal(a, b.cpu(), what)


def three_way(algo, combo, shapes, seed, n_steps=3, **kw):
    """The same steps on CUDA (native), the CPU (native) and the CPU reference."""
    dtype, mom, mode = combo
    base = make_tensors(shapes, dtype, mom, mode, seed=seed)
    cpu, ref = clone_all(*base), clone_all(*base)
    gpu = moved(clone_all(*base), "cuda")
    steps_gpu = run("native", algo, gpu, mode, n_steps, **kw)
    steps_cpu = run("native", algo, cpu, mode, n_steps, **kw)
    run("reference", algo, ref, mode, n_steps, **kw)
    what = f"{algo} {combo} {kw}"
    assert_same(cpu, gpu, "CUDA vs CPU native: " + what, fp64_close=algo in ("tigerK", "tigerE"))
    assert_same(cpu, ref, "CPU native vs reference: " + what, fp64_close=True)
    assert [int(s) for s in steps_gpu] == [int(s) for s in steps_cpu]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("combo", COMBOS, ids=str)
@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_matches_cpu_native_and_reference(algo, combo, variant):
    requires_native("lion_step_" if algo == "lion" else "tiger_step_", "cuda")
    three_way(algo, combo, SHAPES_CUDA, seed=5, **VARIANTS[variant])


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_many_tensors_in_one_call(algo):
    """320 tensors (several launches of at most 40 tensors), a quarter of them misaligned views."""
    requires_native("lion_step_" if algo == "lion" else "tiger_step_", "cuda")
    shapes = [("misaligned" if i % 4 == 0 else (1 + (i * 37) % 300,)) for i in range(320)]
    for combo in [(torch.float32, torch.float32, "none"), (torch.bfloat16, torch.float32, "master"),
                  (torch.float16, torch.float16, "stochastic")]:
        three_way(algo, combo, shapes, seed=11, n_steps=2)


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_mixed_dtypes_in_one_call(algo):
    """fp32, bf16 and fp16 parameters in one call: one launch group per kernel instantiation."""
    requires_native("lion_step_" if algo == "lion" else "tiger_step_", "cuda")
    parts = [make_tensors([(4097,), "misaligned", (33, 65)], d, torch.float32, "kahan", seed=i)
             for i, d in enumerate((torch.float32, torch.bfloat16, torch.float16))]
    params, grads, moms = ([t for part in parts for t in part[k]] for k in range(3))
    aux = [t for part in parts for t in part[3]]  # kahan_comp; unused (and unchecked) for fp32
    base = (params, grads, moms, aux)
    cpu, gpu = clone_all(*base), moved(clone_all(*base), "cuda")
    run("native", algo, gpu, "kahan")
    run("native", algo, cpu, "kahan")
    assert_same(cpu, gpu, f"mixed dtypes {algo}")


@pytest.mark.parametrize("combo", COMBOS[:3] + [(torch.bfloat16, torch.float32, "master")], ids=str)
@pytest.mark.parametrize("cls", ["K", "E", "V"])
def test_cuda_tiger_guard_accumulation_and_floor(cls, combo):
    """A NaN/Inf in one tensor's gradient (the guard shrinks it, the others update), accumulation
    over k = 3 micro-steps, rms_floor with an all-zero tensor, GradScaler with a scale of 1000."""
    requires_native("tiger_step_", "cuda")
    dtype, mom, mode = combo
    base = make_tensors([(4097,), (70000,), (20, 768), (64,)], dtype, mom, mode, seed=3)
    base[1][1][123] = float("nan")
    base[1][2][5] = float("inf")
    base[0][3].zero_()
    if base[3]:
        base[3][3].zero_()
    cpu, gpu = clone_all(*base), moved(clone_all(*base), "cuda")
    kw = dict(k=3, guard=True, rms_floor=1e-3, grad_scale=1000.0)
    steps_gpu = run("native", f"tiger{cls}", gpu, mode, n_steps=4, **kw)
    steps_cpu = run("native", f"tiger{cls}", cpu, mode, n_steps=4, **kw)
    assert_same(cpu, gpu, f"guard {cls} {combo}", fp64_close=True)
    assert [int(s) for s in steps_gpu] == [int(s) for s in steps_cpu] == [4] * 4


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_found_inf_skips_everything_without_a_sync(algo):
    requires_native("lion_step_" if algo == "lion" else "tiger_step_", "cuda")
    gpu = moved(make_tensors([(1000,), (20, 768)], torch.bfloat16, torch.float32, "master", seed=1), "cuda")
    before = [[t.clone() for t in lst] for lst in gpu]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation in the op raises
    try:
        steps = run("native", algo, gpu, "master", n_steps=1, grad_scale=2.0, found_inf=1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a_list, b_list in zip(before, gpu):
        for a, b in zip(a_list, b_list):
            assert torch.equal(a, b)
    assert all(int(s) == 0 for s in steps)


def test_cuda_steps_never_synchronise():
    requires_native("tiger_step_", "cuda")
    gpu = moved(make_tensors([(70000,), (20, 768)], torch.float32, torch.float32, "none", seed=2), "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for algo in ALGOS:
            run("native", algo, gpu, "none", n_steps=2, grad_scale=1024.0, found_inf=0.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_graph_capture_replays_the_eager_steps(algo):
    """A captured step replayed 4 times equals 4 eager steps bit for bit (steps, found_inf and
    grad_scale are read on the device, so stochastic rounding and Tiger's phase advance); with
    found_inf set before a replay, that replay changes nothing."""
    requires_native("lion_step_" if algo == "lion" else "tiger_step_", "cuda")
    base = make_tensors([(4097,), (70000,), (20, 768), "misaligned"], torch.bfloat16, torch.float32, "stochastic",
                        seed=9)
    scale = torch.tensor(1024.0, device="cuda")
    found_inf = torch.tensor(0.0, device="cuda")
    grads0 = [to_device(g, "cuda") for g in base[1]]

    def fresh():
        params, grads, moms, aux = moved(clone_all(*base), "cuda")
        return params, grads, moms, aux, [torch.zeros((), dtype=torch.int64, device="cuda") for _ in params]

    def step(state):
        params, grads, moms, aux, steps = state
        for g, g0 in zip(grads, grads0):
            g.copy_(g0)  # new scaled gradients, as after backward (the op unscales them in place)
        if algo == "lion":
            lion("native", params, grads, moms, lr=1e-3, wd=0.1, aux=aux, precision="stochastic", seed=7,
                 steps=steps, grad_scale=scale, found_inf=found_inf)
        else:
            tiger("native", params, grads, moms, lr=2e-3, cls=algo[-1], aux=aux, precision="stochastic", seed=7,
                  steps=steps, grad_scale=scale, found_inf=found_inf, k=2)

    eager = fresh()
    for _ in range(4):
        step(eager)

    graphed = fresh()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as torch.cuda.graph recommends
        step(graphed)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(graphed)
    start = fresh()  # undo the warm-up
    for dst, src in zip(sum(graphed, []), sum(start, [])):
        dst.copy_(src)
    for _ in range(4):
        graph.replay()
    torch.cuda.synchronize()
    assert_same(list(eager), list(graphed), f"graph {algo}")
    assert all(int(s) == 4 for s in graphed[4])

    found_inf.fill_(1.0)
    params, _, moms, aux, steps = graphed
    before = [t.clone() for t in params + moms + aux + steps]
    graph.replay()
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(before, params + moms + aux + steps))


@pytest.mark.parametrize("algo", ["lion", "tigerK", "tigerE"])
def test_cuda_op_compiles_fullgraph(algo):
    requires_native("lion_step_" if algo == "lion" else "tiger_step_", "cuda")
    torch._dynamo.reset()
    base = make_tensors([(4097,), (20, 768)], torch.bfloat16, torch.float32, "master", seed=4)
    eager, compiled = moved(clone_all(*base), "cuda"), moved(clone_all(*base), "cuda")

    def step(tensors, steps):
        params, grads, moms, aux = tensors
        if algo == "lion":
            lion("native", params, grads, moms, lr=1e-3, wd=0.1, aux=aux, precision="master", steps=steps)
        else:
            tiger("native", params, grads, moms, lr=2e-3, cls=algo[-1], aux=aux, precision="master", steps=steps)

    steps_e = [torch.zeros((), dtype=torch.int64, device="cuda") for _ in base[0]]
    steps_c = [torch.zeros((), dtype=torch.int64, device="cuda") for _ in base[0]]
    fn = torch.compile(step, fullgraph=True)
    for _ in range(3):
        step(eager, steps_e)
        fn(compiled, steps_c)
    assert_same(eager, compiled, f"compiled {algo}")


@pytest.mark.parametrize("name", ["lion", "tiger"])
def test_cuda_compiled_training_step(name):
    requires_native("lion_step_", "cuda")
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(64, 32), torch.nn.Flatten(), torch.nn.Linear(128, 64),
                                torch.nn.LayerNorm(64), torch.nn.Linear(64, 1)).cuda()
    opt = (Tiger(tiger_param_groups(model), lr=1e-3) if name == "tiger" else Lion(model.parameters(), lr=1e-3))
    x = torch.randint(0, 64, (8, 4), device="cuda")

    @torch.compile
    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    for _ in range(3):
        step()
    assert all(int(s["step"]) == 3 for s in opt.state.values())


def test_cuda_rejects_rms_cache_and_bumps_versions():
    requires_native("tiger_step_", "cuda")
    params, grads, moms, aux = moved(make_tensors([(64,)], torch.float32, torch.float32, "none", seed=0), "cuda")
    with pytest.raises(RuntimeError, match="rms_cache"):
        tiger("native", params, grads, moms, lr=1e-3, rms_cache=[torch.zeros(3, dtype=torch.float64)])
    v = params[0]._version, moms[0]._version
    tiger("native", params, grads, moms, lr=1e-3)
    assert params[0]._version > v[0] and moms[0]._version > v[1]
