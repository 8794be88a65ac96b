"""CUDA step ops (csrc/cuda/optim_step.cu) against the CPU-native kernels and the reference
(tigercore/reference/optim.py): every dtype, momentum dtype, precision mode and Tiger class on awkward
shapes (0, 1, 7, 4097, multi-chunk, long rows, misaligned views, 320 tensors in one call, mixed
dtypes); GradScaler, found_inf and a device lr read on the device without host synchronisation; the
guard; caller-given step sizes and flags; tiger_stats; carried sums; external writes and stamps;
torch.compile and CUDA-graph capture. Skipped without a GPU: these run the day a GPU exists. Until
then every CI run compiles the kernels, inspects them (bench/cuda_inspect.py) and runs their block
code on the CPU against the CPU kernels (csrc/tests/test_mta.cpp)."""
import pytest
import torch

from _cases import SHAPES, clone_all, make_tensors
from _helpers import lion, tiger
from conftest import requires_native
from tigercore import _checks
from tigercore.reference import optim as ref_optim
from tolerances import TOL, assert_bitwise_equal

pytestmark = pytest.mark.cuda
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from tigercore.optim import Lion, Tiger, tiger_param_groups  # noqa: E402

DEV = "cuda"
COMBOS = [(torch.float32, torch.float32, "none"), (torch.float64, torch.float64, "none"),
          (torch.float32, torch.bfloat16, "none")] + [
    (d, m, mode) for d in (torch.float16, torch.bfloat16) for m in (torch.float32, d)
    for mode in ("none", "kahan", "stochastic", "master")]
ALGOS = ["lion", "tigerK", "tigerE", "tigerV"]
# Chunks are 65536 elements (csrc/cuda/mta_plan.h): (70000,) and (3, 70001) span several chunks,
# rows of 70001 are cut into pieces, rows of 7 are not a multiple of a vector; (3, 0) has three
# Tiger E rows and no elements.
SHAPES_CUDA = SHAPES + [(70000,), (3, 70001), (90, 768), (100, 7), (2, 3, 5), (3, 0)]
VARIANTS = {  # keyword arguments of run(), per algorithm family
    "plain": dict(),
    "scaled_pow2_maximize": dict(grad_scale=1024.0, maximize=True),
    "scaled_1000": dict(grad_scale=1000.0),
    "lr_on_device_scaled_half": dict(lr_on_device=True, grad_scale=0.5),
}


def op_name(algo):
    return "lion_step_" if algo == "lion" else "tiger_step_"


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A copy on `device` that keeps t's storage offset, so misaligned views stay misaligned."""
    off = t.storage_offset()
    out = torch.empty(off + t.numel(), dtype=t.dtype, device=device)[off:].view(t.shape)
    out.copy_(t)
    return out


def moved(lists, device):
    return [[to_device(t, device) for t in lst] for lst in lists]


def zero_steps(params):
    return [torch.zeros((), dtype=torch.int64, device=p.device) for p in params]


def stamps_of(params):
    """Stamps that match the parameters as they are ([note: external writes])."""
    return [torch.tensor([p._version, p.data_ptr()], dtype=torch.int64) for p in params]


def one_step(backend, algo, tensors, mode, steps, lr, **kw):
    params, grads, moms, aux = tensors
    if algo == "lion":
        lion(backend, params, grads, moms, lr=lr, wd=0.1, aux=aux, precision=mode, seed=7, steps=steps, **kw)
    else:
        tiger(backend, params, grads, moms, lr=lr, cls=algo[-1], aux=aux, precision=mode, seed=7, steps=steps, **kw)


def call_inputs(algo, params, step0=0, grad_scale=None, found_inf=None, lr_on_device=False):
    """Step counters, lr (a float64 tensor on the CPU or, lr_on_device, on the params' device) and
    GradScaler's tensors for calls on `params`, made before the calls: copying a host value to the
    device synchronises, which the no-sync tests must not see."""
    dev = params[0].device
    return dict(steps=[torch.full((), step0, dtype=torch.int64, device=dev) for _ in params],
                lr=torch.tensor(1e-3 if algo == "lion" else 2e-3, dtype=torch.float64,
                                device=dev if lr_on_device else "cpu"),
                grad_scale=None if grad_scale is None else torch.tensor(grad_scale, dtype=torch.float32, device=dev),
                found_inf=None if found_inf is None else torch.tensor(found_inf, dtype=torch.float32, device=dev))


def run(backend, algo, tensors, mode, n_steps=3, step0=0, grad_scale=None, found_inf=None, lr_on_device=False,
        **kw):
    """n_steps calls of one op on `tensors` (params, grads, moms, aux), on their device."""
    inputs = call_inputs(algo, tensors[0], step0, grad_scale, found_inf, lr_on_device)
    for _ in range(n_steps):
        one_step(backend, algo, tensors, mode, **inputs, **kw)
    return inputs["steps"]


def assert_same(cpu_lists, other_lists, what, fp64_close=False):
    """Bitwise; with fp64_close, float64 tensors to the float64 tolerance: Tiger K/E's fp64 sums of
    squares are added in another order on the GPU ([note: Tiger RMS on CUDA], tiger_rms.cu), and
    [note: float64 reference] (tests/test_optim_fuzz.py) over several steps."""
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
    gpu = moved(clone_all(*base), DEV)
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
    requires_native(op_name(algo), "cuda")
    three_way(algo, combo, SHAPES_CUDA, seed=5, **VARIANTS[variant])


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_many_tensors_in_one_call(algo):
    """320 tensors (several launches of at most 36 tensors, two step-counter launches), a quarter of
    them misaligned views."""
    requires_native(op_name(algo), "cuda")
    shapes = [("misaligned" if i % 4 == 0 else (1 + (i * 37) % 300,)) for i in range(320)]
    for combo in [(torch.float32, torch.float32, "none"), (torch.bfloat16, torch.float32, "master"),
                  (torch.float16, torch.float16, "stochastic")]:
        three_way(algo, combo, shapes, seed=11, n_steps=2)


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_mixed_dtypes_in_one_call(algo):
    """fp32, bf16 and fp16 parameters in one call: one launch group per kernel instantiation."""
    requires_native(op_name(algo), "cuda")
    parts = [make_tensors([(4097,), "misaligned", (33, 65)], d, torch.float32, "kahan", seed=i)
             for i, d in enumerate((torch.float32, torch.bfloat16, torch.float16))]
    params, grads, moms = ([t for part in parts for t in part[k]] for k in range(3))
    aux = [t for part in parts for t in part[3]]  # kahan_comp; unused (and unchecked) for fp32
    base = (params, grads, moms, aux)
    cpu, gpu = clone_all(*base), moved(clone_all(*base), DEV)
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
    cpu, gpu = clone_all(*base), moved(clone_all(*base), DEV)
    kw = dict(k=3, guard=True, rms_floor=1e-3, grad_scale=1000.0)
    steps_gpu = run("native", f"tiger{cls}", gpu, mode, n_steps=4, **kw)
    steps_cpu = run("native", f"tiger{cls}", cpu, mode, n_steps=4, **kw)
    assert_same(cpu, gpu, f"guard {cls} {combo}", fp64_close=True)
    assert [int(s) for s in steps_gpu] == [int(s) for s in steps_cpu] == [4] * 4


def caller_inputs(params, cls, device):
    """Step sizes, one per row in call order and distinct per row, and flags marking tensor 0
    (whose gradient is finite) and the last tensor."""
    rows = sum(_checks.rms_rows(p, cls) for p in params)
    eta = 1e-3 * (1.0 + (torch.arange(rows, dtype=torch.float64) % 5) / 4.0)
    flags = torch.zeros(len(params), dtype=torch.bool)
    flags[0] = flags[-1] = True
    return eta.to(device), flags.to(device)


@pytest.mark.parametrize("given", ["eta", "nonfinite", "both", "both_guard_off"])
@pytest.mark.parametrize("combo", [(torch.float32, torch.float32, "none"), (torch.bfloat16, torch.float32, "master"),
                                   (torch.float64, torch.float64, "none")], ids=str)
@pytest.mark.parametrize("cls", ["K", "E", "V"])
def test_cuda_caller_eta_and_nonfinite_match_cpu(cls, combo, given):
    """A caller's eta replaces stages 1 and 2 (V ignores it), a caller's nonfinite replaces the flag
    reduction (ignored with the guard off): the CUDA steps equal the CPU's bit for bit, float64
    included (no sums are taken)."""
    requires_native("tiger_step_", "cuda")
    dtype, mom, mode = combo
    base = make_tensors([(4097,), (3, 0), (20, 768), (70000,), "misaligned"], dtype, mom, mode, seed=21)
    cpu, gpu = clone_all(*base), moved(clone_all(*base), DEV)
    guard = given != "both_guard_off"
    for tensors in (cpu, gpu):
        dev = tensors[0][0].device
        eta, flags = caller_inputs(tensors[0], cls, dev)
        kw = dict(eta=eta if given != "nonfinite" else None, nonfinite=flags if given != "eta" else None)
        steps = zero_steps(tensors[0])
        for _ in range(2):
            one_step("native", f"tiger{cls}", tensors, mode, steps, 2e-3, guard=guard, k=1,
                     grad_scale=torch.tensor(1000.0, device=dev), **kw)
    # no sums are taken where eta is given, so float64 agrees exactly too
    assert_same(cpu, gpu, f"caller inputs {cls} {combo} {given}", fp64_close=given == "nonfinite")


@pytest.mark.parametrize("grad_scale", [None, 1024.0, 0.5])
@pytest.mark.parametrize("combo", [(torch.float32, "none"), (torch.bfloat16, "master"), (torch.float16, "kahan"),
                                   (torch.float64, "none")], ids=str)
@pytest.mark.parametrize("cls", ["K", "E", "V"])
def test_cuda_tiger_stats_matches_cpu_and_reference(cls, combo, grad_scale):
    """Per-row sums of squares of the working copy (fresh on CUDA: carried sums are not read) to
    the float64 tolerance, and per-tensor flags exactly: a NaN, an Inf, and a finite gradient of 3e38
    that unscales to Inf by 0.5 (fp32, bf16)."""
    requires_native("tiger_stats", "cuda")
    dtype, mode = combo
    params, grads, _, aux = make_tensors([(4097,), (3, 0), (20, 768), (70000,), (0,), "misaligned"], dtype,
                                         torch.float32, mode, seed=8)
    grads[0][17] = float("nan")
    grads[2][3, 4] = float("inf")
    grads[3][0] = 3e38 if dtype != torch.float16 else 60000.0
    sumsq = [torch.full((_checks.rms_rows(p, cls),), 5.0, dtype=torch.float64) for p in params]  # wrong on purpose
    nonempty = [i for i, p in enumerate(params) if p.numel() > 0]  # the reference's E sums need elements
    results = {}
    for where, dev, keep in (("cpu", "cpu", range(len(params))), ("cuda", DEV, range(len(params))),
                             ("reference", DEV, nonempty)):
        p, g, a = moved([[params[i] for i in keep], [grads[i] for i in keep], [aux[i] for i in keep if aux]], dev)
        scale = None if grad_scale is None else torch.tensor(grad_scale, dtype=torch.float32, device=dev)
        fn = torch.ops.tigercore.tiger_stats if where != "reference" else ref_optim.tiger_stats
        carried = [sumsq[i].to(dev) for i in keep] if where == "cuda" else []
        results[where] = fn(p, g, a, carried, tiger_class=cls, precision=mode, grad_scale=scale)
    sums, flags = results["cuda"]
    assert sums.device.type == "cuda" and sums.dtype == torch.float64 and flags.dtype == torch.bool
    row_of = torch.repeat_interleave(torch.arange(len(params)),
                                     torch.tensor([_checks.rms_rows(p, cls) for p in params]))
    in_ref = torch.isin(row_of, torch.tensor(nonempty))
    for other, rows, tensors in (("cpu", slice(None), slice(None)), ("reference", in_ref, nonempty)):
        torch.testing.assert_close(sums.cpu()[rows], results[other][0].cpu(), rtol=1e-12, atol=0)
        assert torch.equal(flags.cpu()[tensors], results[other][1].cpu())
    assert bool(flags[0]) and bool(flags[2]) and not bool(flags[1]) and bool((sums.cpu()[row_of == 1] == 0).all())


def test_cuda_ignores_carried_sums_marks_them_unknown_and_bumps_versions():
    """[note: Tiger RMS on CUDA]: carried sums (here wrong on purpose) are not read; after the step
    every one is -1 (unknown), even when found_inf skipped the step; the versions of what the op
    may write are bumped."""
    requires_native("tiger_step_", "cuda")
    base = make_tensors([(64, 33), (4097,)], torch.float32, torch.float32, "none", seed=0)
    for cls in ("K", "E"):
        fresh, carried = moved(clone_all(*base), DEV), moved(clone_all(*base), DEV)
        sumsq = [torch.full((_checks.rms_rows(p, cls),), 1e6, dtype=torch.float64, device=DEV) for p in carried[0]]
        v = [(p._version, m._version) for p, m in zip(carried[0], carried[2])]
        one_step("native", f"tiger{cls}", fresh, "none", zero_steps(fresh[0]), 1e-3)
        one_step("native", f"tiger{cls}", carried, "none", zero_steps(carried[0]), 1e-3, sumsq=sumsq)
        assert_same(fresh, carried, f"carried sums ignored ({cls})")
        assert all(bool((s == -1.0).all()) for s in sumsq)
        assert all(p._version > vp and m._version > vm for (vp, vm), p, m in zip(v, carried[0], carried[2]))
        for s in sumsq:
            s.fill_(3.0)
        one_step("native", f"tiger{cls}", carried, "none", zero_steps(carried[0]), 1e-3, sumsq=sumsq,
                 found_inf=torch.tensor(1.0, device=DEV))
        assert all(bool((s == -1.0).all()) for s in sumsq)


@pytest.mark.parametrize("found_inf", [None, 1.0])
@pytest.mark.parametrize("algo", ["lion", "tigerV", "tigerK"])
@pytest.mark.parametrize("mode", ["master", "kahan"])
def test_cuda_external_writes_and_stamps_match_cpu(mode, algo, found_inf):
    """[note: external writes]: a parameter written from outside between two steps (its version
    moves) re-seeds its master copy / zeroes its compensation before the step, on CUDA as on the
    CPU, also when found_inf makes the kernels skip; afterwards the stamps hold each parameter's
    version and address."""
    requires_native(op_name(algo), "cuda")
    base = make_tensors([(4097,), (20, 768), "misaligned"], torch.bfloat16, torch.float32, mode, seed=31)
    cpu, gpu = clone_all(*base), moved(clone_all(*base), DEV)
    for tensors in (cpu, gpu):
        params, dev = tensors[0], tensors[0][0].device
        stamps, steps = stamps_of(params), zero_steps(params)
        inf = None if found_inf is None else torch.tensor(found_inf, device=dev)
        one_step("native", algo, tensors, mode, steps, 1e-2, stamps=stamps)
        params[1].add_(0.25)  # an external write: the version moves, the stamp does not
        params[2].mul_(-1.0)
        one_step("native", algo, tensors, mode, steps, 1e-2, stamps=stamps, found_inf=inf)
        assert all(s.tolist() == [p._version, p.data_ptr()] for s, p in zip(stamps, params))
    assert_same(cpu, gpu, f"external writes {mode} {algo} found_inf={found_inf}", fp64_close=True)


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_found_inf_skips_everything_without_a_sync(algo):
    requires_native(op_name(algo), "cuda")
    gpu = moved(make_tensors([(1000,), (20, 768)], torch.bfloat16, torch.float32, "master", seed=1), DEV)
    before = [[t.clone() for t in lst] for lst in gpu]
    inputs = call_inputs(algo, gpu[0], grad_scale=2.0, found_inf=1.0, lr_on_device=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation in the op raises
    try:
        one_step("native", algo, gpu, "master", **inputs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a_list, b_list in zip(before, gpu):
        for a, b in zip(a_list, b_list):
            assert torch.equal(a, b)
    assert all(int(s) == 0 for s in inputs["steps"])


def test_cuda_steps_never_synchronise():
    """lr, found_inf, grad_scale, the steps, a caller's eta and flags, and the stamps of
    parameters written from outside: none is read on the host."""
    requires_native("tiger_step_", "cuda")
    gpu = moved(make_tensors([(70000,), (20, 768)], torch.bfloat16, torch.float32, "master", seed=2), DEV)
    stamps = stamps_of(gpu[0])
    eta, flags = caller_inputs(gpu[0], "E", DEV)
    inputs = {algo: call_inputs(algo, gpu[0], grad_scale=1024.0, found_inf=0.0, lr_on_device=True) for algo in ALGOS}
    gpu[0][0].add_(1.0)  # an external write, seen by the next step's sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for algo in ALGOS:
            for _ in range(2):
                one_step("native", algo, gpu, "master", stamps=stamps, **inputs[algo])
        one_step("native", "tigerE", gpu, "master", eta=eta, nonfinite=flags, stamps=stamps, **inputs["tigerE"])
    finally:
        torch.cuda.set_sync_debug_mode("default")


def capture(step, reset):
    """A CUDA graph of step(), captured after a warm-up on a side stream (then reset())."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    reset()
    return graph


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_graph_capture_replays_the_eager_steps(algo):
    """A captured step replayed 4 times equals 4 eager steps bit for bit (steps, found_inf and
    grad_scale are read on the device, so stochastic rounding and Tiger's phase advance); with
    found_inf set before a replay, that replay changes nothing."""
    requires_native(op_name(algo), "cuda")
    base = make_tensors([(4097,), (70000,), (20, 768), "misaligned"], torch.bfloat16, torch.float32, "stochastic",
                        seed=9)
    scale = torch.tensor(1024.0, device=DEV)
    found_inf = torch.tensor(0.0, device=DEV)
    grads0 = [to_device(g, DEV) for g in base[1]]

    def fresh():
        params, grads, moms, aux = moved(clone_all(*base), DEV)
        return params, grads, moms, aux, zero_steps(params)

    def step(state):
        params, grads, moms, aux, steps = state
        for g, g0 in zip(grads, grads0):
            g.copy_(g0)  # new scaled gradients, as after backward (the op unscales them in place)
        extra = dict(k=2) if algo != "lion" else {}
        one_step("native", algo, (params, grads, moms, aux), "stochastic", steps, 1e-3, grad_scale=scale,
                 found_inf=found_inf, **extra)

    eager = fresh()
    for _ in range(4):
        step(eager)

    graphed = fresh()
    start = fresh()

    def reset():
        for dst, src in zip(sum(graphed, []), sum(start, [])):
            dst.copy_(src)

    graph = capture(lambda: step(graphed), reset)
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


@pytest.mark.parametrize("algo", ALGOS)
def test_cuda_lr_tensor_is_read_on_the_device(algo):
    """[note: tensor lr]: with lr on the device, one captured step follows a schedule written into
    the lr tensor between replays, and equals eager CPU steps taking each value (a value read on
    the host at capture time would repeat the first one; a host read would fail the capture)."""
    requires_native(op_name(algo), "cuda")
    base = make_tensors([(4097,), (20, 768), "misaligned"], torch.bfloat16, torch.float32, "master", seed=12)
    schedule = [1e-3, 4e-3, 5e-4]
    cpu = clone_all(*base)
    steps_cpu = zero_steps(cpu[0])
    for lr in schedule:
        one_step("native", algo, cpu, "master", steps_cpu, lr)

    lr_dev = torch.tensor(schedule[0], dtype=torch.float64, device=DEV)
    gpu, start = moved(clone_all(*base), DEV), moved(clone_all(*base), DEV)
    steps = zero_steps(gpu[0])

    def reset():
        for dst, src in zip(sum(gpu, []), sum(start, [])):
            dst.copy_(src)
        for s in steps:
            s.zero_()

    graph = capture(lambda: one_step("native", algo, gpu, "master", steps, lr_dev), reset)
    for lr in schedule:
        lr_dev.fill_(lr)
        graph.replay()
    torch.cuda.synchronize()
    assert_same(cpu, gpu, f"device lr schedule {algo}", fp64_close=True)
    assert [int(s) for s in steps] == [len(schedule)] * len(steps)


@pytest.mark.parametrize("algo", ["lion", "tigerK", "tigerE"])
def test_cuda_op_compiles_fullgraph(algo):
    requires_native(op_name(algo), "cuda")
    torch._dynamo.reset()
    base = make_tensors([(4097,), (20, 768)], torch.bfloat16, torch.float32, "master", seed=4)
    eager, compiled = moved(clone_all(*base), DEV), moved(clone_all(*base), DEV)
    lr = torch.tensor(1e-3, dtype=torch.float64, device=DEV)

    def step(tensors, steps):
        one_step("native", algo, tensors, "master", steps, lr)

    steps_e, steps_c = zero_steps(eager[0]), zero_steps(compiled[0])
    fn = torch.compile(step, fullgraph=True)
    for _ in range(3):
        step(eager, steps_e)
        fn(compiled, steps_c)
    assert_same(eager, compiled, f"compiled {algo}")


@pytest.mark.parametrize("name", ["lion", "tiger"])
def test_cuda_compiled_training_step(name):
    requires_native("lion_step_" if name == "lion" else "tiger_step_", "cuda")
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(64, 32), torch.nn.Flatten(), torch.nn.Linear(128, 64),
                                torch.nn.LayerNorm(64), torch.nn.Linear(64, 1)).to(DEV)
    opt = (Tiger(tiger_param_groups(model), lr=1e-3) if name == "tiger" else Lion(model.parameters(), lr=1e-3))
    x = torch.randint(0, 64, (8, 4), device=DEV)

    @torch.compile
    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    for _ in range(3):
        step()
    assert all(int(s["step"]) == 3 for s in opt.state.values())
