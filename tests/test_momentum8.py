"""8-bit blockwise momentum (momentum_bits=8; docs/semantics.md "8-bit momentum"): the code map of
tigercore/reference/momentum8.py against an independent float64 formula; native CPU kernels equal
to the reference bitwise for Lion and Tiger (every param dtype and precision mode, Tiger's classes,
accumulation, guard, awkward sizes, 1 and 2 threads); NaN/Inf gradients; state_dict 8 <-> 32 bits;
bitsandbytes Lion8bit state; malformed absmax refused."""
import math

import pytest
import torch

from _helpers import lion, tiger
from conftest import requires_native
from tolerances import assert_bitwise_equal

from tigercore.optim import Lion, Tiger, tiger_param_groups
from tigercore.reference import momentum8 as m8

FLT_MAX = torch.finfo(torch.float32).max


# ---- the code map against float64 ----------------------------------------------------------------
def _oracle(x: torch.Tensor):
    """Per element (k*, absmax) in float64: k* = |x| * 127 / absmax, absmax the block max of the
    non-NaN |x| with Inf saturated to FLT_MAX."""
    x64 = x.double().reshape(-1).clamp(-FLT_MAX, FLT_MAX)
    a = torch.where(torch.isnan(x64), torch.zeros_like(x64), x64.abs())
    blocks = [a[i:i + 256].max().item() if a[i:i + 256].numel() else 0.0 for i in range(0, a.numel(), 256)]
    scale = torch.tensor(blocks, dtype=torch.float64).repeat_interleave(256)[: a.numel()]
    kstar = torch.where(scale > 0, a * 127 / torch.where(scale > 0, scale, torch.ones_like(scale)), torch.zeros_like(a))
    return kstar, torch.tensor(blocks, dtype=torch.float64), x64


@pytest.mark.parametrize("n", [1, 255, 256, 257, 1000, 4096 + 7])
@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 3e30])
def test_encode_decode_against_float64_formula(n, scale):
    g = torch.Generator().manual_seed(n)
    x = (torch.randn(n, generator=g) * scale).float()
    x[::17] = 0.0
    if n > 3:
        x[1] = -0.0
        x[2] = float("nan")
    codes, absmax = m8.encode(x)
    kstar, blocks, x64 = _oracle(x)
    assert absmax.dtype == torch.float32 and absmax.numel() == math.ceil(n / 256)
    assert torch.equal(absmax.double(), blocks)  # the max of float32 values is exact
    nan = torch.isnan(x)
    c = codes.to(torch.int64)
    assert bool((c[nan] == 0x80).all())
    k = (c & 0x7F).double()[~nan]
    ks = kstar[~nan]
    # round to nearest: within 1/2 (plus float32 rounding of |x|/absmax*127 near ties)
    assert float((k - ks).abs().max()) <= 0.5 + 1e-4
    far_from_tie = ((ks - ks.floor()) - 0.5).abs() > 1e-4
    assert torch.equal(k[far_from_tie], torch.round(ks[far_from_tie]))
    sign = (c[~nan] & 0x80) != 0
    assert torch.equal(sign, (x64[~nan] < 0) & (k > 0))  # no "-0" codes: 0x80 is NaN only
    # decode: +-k/127 * absmax, each product rounded once or twice to float32
    y = m8.decode(codes, absmax)
    want = torch.where(sign, -1.0, 1.0) * k / 127 * blocks.repeat_interleave(256)[:n][~nan]
    assert torch.isnan(y[nan]).all()
    err = (y[~nan].double() - want).abs()
    assert bool((err <= 2.5 * 2.0 ** -24 * want.abs()).all())
    # quantisation error at most half a level of the block's absmax
    q = (y[~nan].double() - x64[~nan]).abs()
    lim = blocks.repeat_interleave(256)[:n][~nan] * (0.5 / 127) * (1 + 1e-5)
    assert bool((q <= lim).all())


def test_encode_saturates_inf_and_handles_zero_and_nan_blocks():
    x = torch.zeros(600)
    x[3], x[4], x[5] = float("inf"), -float("inf"), 1.0
    x[300] = float("nan")  # block 1: zeros and a NaN -> absmax 0
    x[520] = -2.5
    codes, absmax = m8.encode(x)
    assert absmax.tolist() == [FLT_MAX, 0.0, 2.5]
    assert codes[3] == 127 and codes[4] == 0xFF and codes[5] == 0  # 1 / FLT_MAX rounds to level 0
    assert codes[300] == 0x80 and int(codes[256:512].to(torch.int32).sum()) == 0x80
    assert codes[520] == 0xFF
    y = m8.decode(codes, absmax)
    assert y[3] == FLT_MAX and y[4] == -FLT_MAX and y[520] == -2.5 and torch.isnan(y[300])
    assert m8.magnitudes()[127] == 1.0 and m8.magnitudes()[0] == 0.0


def test_denormal_block_absmax():
    x = torch.tensor([1e-45, -3e-45, 0.0, 2e-45], dtype=torch.float32)
    codes, absmax = m8.encode(x)
    kstar, blocks, _ = _oracle(x)
    assert absmax.item() == blocks.item() > 0
    assert torch.equal((codes.to(torch.int64) & 0x7F).double(), torch.round(kstar))


# ---- native == reference ---------------------------------------------------------------------------
SIZES = [(0,), (1,), (255,), (256,), (257,), (1000,), (3, 700), (70000,)]
MODES = [(torch.float32, "none")] + [(d, m) for d in (torch.bfloat16, torch.float16)
                                     for m in ("none", "kahan", "stochastic", "master")]


def _model(dtype, shapes, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter((torch.randn(s, generator=g) * 0.5).to(dtype).to(device)) for s in shapes]


def _grads(params, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * scale).to(p.dtype).to(p.device)


def _run(cls, backend, dtype, precision, shapes, steps=3, threads=1, seed=0, grad_hook=None, device="cpu", **kw):
    params = _model(dtype, shapes, seed, device)
    opt = cls(params, momentum_bits=8, backend=backend, precision=precision, **kw)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for t in range(steps):
            _grads(params, 100 * seed + t)
            if grad_hook is not None:
                grad_hook(t, params)
            opt.step()
    finally:
        torch.set_num_threads(old)
    return params, opt


def _assert_same(a, b, what):
    (pa, oa), (pb, ob) = a, b
    for i, (x, y) in enumerate(zip(pa, pb)):
        assert_bitwise_equal(x.detach().cpu(), y.detach().cpu(), f"{what} param[{i}]")
        sa, sb = oa.state[x], ob.state[y]
        assert torch.equal(sa["exp_avg"].cpu(), sb["exp_avg"].cpu()), f"{what} codes[{i}]"
        assert torch.equal(sa["exp_avg_absmax"].cpu(), sb["exp_avg_absmax"].cpu()), f"{what} absmax[{i}]"
        for key in ("master_param", "kahan_comp"):
            if key in sa:
                assert_bitwise_equal(sa[key].cpu(), sb[key].cpu(), f"{what} {key}[{i}]")


@pytest.mark.parametrize("dtype,precision", MODES, ids=lambda v: str(v).replace("torch.", ""))
def test_lion_native_equals_reference(dtype, precision):
    requires_native("lion_step_")
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, seed=5)
    nat = _run(Lion, "native", dtype, precision, SIZES, **kw)
    ref = _run(Lion, "reference", dtype, precision, SIZES, **kw)
    _assert_same(nat, ref, f"lion {dtype} {precision}")
    assert any(int(nat[1].state[p]["exp_avg"].count_nonzero()) > 0 for p in nat[0])


def _tiger_groups(params):
    """K: the 1-D/flat tensors; E: the (3, 700) tensor (rows of 700: blocks span rows); V: a bias."""
    e = [p for p in params if p.dim() == 2]
    v = [p for p in params if p.numel() == 257]
    k = [p for p in params if all(p is not q for q in e + v)]
    return [dict(params=k, tiger_class="K"), dict(params=e, tiger_class="E"),
            dict(params=v, tiger_class="V", shrink_center=1.0)]


def _tiger(params, **kw):
    return Tiger(_tiger_groups(params), **kw)


def _run_tiger(backend, dtype, precision, shapes, steps=4, **kw):
    return _run(_tiger, backend, dtype, precision, shapes, steps=steps, **kw)


@pytest.mark.parametrize("dtype,precision", MODES, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("k", [1, 2])
def test_tiger_native_equals_reference(dtype, precision, k):
    requires_native("tiger_step_")
    kw = dict(lr=2e-2, beta=0.9, weight_decay=0.01, grad_accum_steps=k, seed=7)
    nat = _run_tiger("native", dtype, precision, SIZES, **kw)
    ref = _run_tiger("reference", dtype, precision, SIZES, **kw)
    _assert_same(nat, ref, f"tiger {dtype} {precision} k={k}")


@pytest.mark.parametrize("threads", [1, 2])
def test_tiger_e_rows_not_multiple_of_block_and_threads(threads):
    """E rows of 7 and 1000 elements (blocks of 256 span rows; chunks are lcm(row, 256)), large
    enough for several tasks; results equal the reference for 1 and 2 threads."""
    requires_native("tiger_step_")
    shapes = [(20000, 7), (90, 1000)]

    def run(backend):
        params = _model(torch.float32, shapes, 3)
        opt = Tiger([dict(params=params, tiger_class="E")], momentum_bits=8, backend=backend, lr=1e-2)
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for t in range(3):
                _grads(params, t)
                opt.step()
        finally:
            torch.set_num_threads(old)
        return params, opt

    _assert_same(run("native"), run("reference"), f"tiger E threads={threads}")


def test_lion_results_independent_of_thread_count():
    requires_native("lion_step_")
    a = _run(Lion, "native", torch.bfloat16, "stochastic", [(300000,), (513,)], threads=1, lr=1e-3)
    b = _run(Lion, "native", torch.bfloat16, "stochastic", [(300000,), (513,)], threads=2, lr=1e-3)
    _assert_same(a, b, "lion threads 1 vs 2")


def test_float64_params_close_to_reference():
    """float64 params: op-math float64, the momentum rounded to float32 before encoding. The fp64
    reference's fma is not exactly fused ([note: float64 reference]), so parameters are compared
    to 2e-15 and codes may differ by one level in rare near-tie elements."""
    requires_native("lion_step_")
    nat = _run(Lion, "native", torch.float64, "none", SIZES[:6], lr=1e-2, weight_decay=0.1)
    ref = _run(Lion, "reference", torch.float64, "none", SIZES[:6], lr=1e-2, weight_decay=0.1)
    for p, q in zip(nat[0], ref[0]):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=2e-15, atol=1e-18)
        d = (nat[1].state[p]["exp_avg"].to(torch.int32) - ref[1].state[q]["exp_avg"].to(torch.int32)).abs()
        assert int((d > 0).sum()) <= max(1, p.numel() // 1000)


# ---- NaN / Inf gradients ----------------------------------------------------------------------------
def _poison(t, params):
    if t == 1:
        params[1].grad.view(-1)[100] = float("nan")   # (1000,)
        params[2].grad.view(-1)[5] = float("inf")     # (3, 700)
        params[0].grad.view(-1)[0] = -float("inf")    # (257,)


@pytest.mark.parametrize("algo", ["lion", "tiger_guard", "tiger_noguard"])
def test_nonfinite_gradients(algo):
    requires_native("lion_step_" if algo == "lion" else "tiger_step_")
    shapes = [(257,), (1000,), (3, 700)]
    if algo == "lion":
        nat = _run(Lion, "native", torch.float32, "none", shapes, grad_hook=_poison, lr=1e-2)
        ref = _run(Lion, "reference", torch.float32, "none", shapes, grad_hook=_poison, lr=1e-2)
    else:
        guard = algo == "tiger_guard"
        nat = _run_tiger("native", torch.float32, "none", shapes, grad_hook=_poison, nonfinite_guard=guard)
        ref = _run_tiger("reference", torch.float32, "none", shapes, grad_hook=_poison, nonfinite_guard=guard)
    _assert_same(nat, ref, algo)
    params, opt = nat
    codes = opt.state[params[1]]["exp_avg"].view(-1)
    if algo == "tiger_guard":  # the guarded tensors keep finite momentum and parameters
        assert all(bool(torch.isfinite(p).all()) for p in params)
        assert int((codes == 0x80).sum()) == 0
    else:  # NaN propagates as code 0x80; +-Inf saturates to FLT_MAX in the block absmax
        assert codes[100] == 0x80
        assert bool(torch.isfinite(opt.state[params[2]]["exp_avg_absmax"]).all())


# ---- state_dict ----------------------------------------------------------------------------------
def _trained(cls, bits, steps=3, **kw):
    params = _model(torch.float32, [(300,), (2, 200)], 1)
    opt = cls(params, momentum_bits=bits, lr=1e-2, **kw)
    for t in range(steps):
        _grads(params, t)
        opt.step()
    return params, opt


@pytest.mark.parametrize("cls", [Lion, Tiger])
def test_state_dict_8_to_8_reproduces_next_step(cls):
    params, opt = _trained(cls, 8)
    sd = opt.state_dict()
    clone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = cls(clone, momentum_bits=8, lr=1e-2)
    opt2.load_state_dict(sd)
    for o, ps in ((opt, params), (opt2, clone)):
        _grads(ps, 99)
        o.step()
    _assert_same((params, opt), (clone, opt2), "8 -> 8")


@pytest.mark.parametrize("cls", [Lion, Tiger])
def test_state_dict_8_to_32_and_back(cls):
    params, opt8 = _trained(cls, 8)
    sd8 = opt8.state_dict()
    opt32 = cls(params, lr=1e-2)
    opt32.load_state_dict(sd8)
    for p in params:
        st8 = opt8.state[p]
        want = m8.decode(st8["exp_avg"], st8["exp_avg_absmax"])
        assert opt32.state[p]["exp_avg"].dtype == torch.float32
        assert torch.equal(opt32.state[p]["exp_avg"], want)
        assert "exp_avg_absmax" not in opt32.state[p]
    # 32 -> 8: the float momentum is encoded; decoding it gives the same codes back (idempotent)
    params32, opt32b = _trained(cls, 32)
    opt8b = cls(params32, momentum_bits=8, lr=1e-2)
    opt8b.load_state_dict(opt32b.state_dict())
    for p in params32:
        codes, absmax = m8.encode(opt32b.state[p]["exp_avg"])
        assert torch.equal(opt8b.state[p]["exp_avg"], codes)
        assert torch.equal(opt8b.state[p]["exp_avg_absmax"], absmax)
        assert torch.equal(m8.encode(m8.decode(codes, absmax))[0], codes)


@pytest.mark.parametrize("bad", ["nan", "negative", "inf", "size", "dtype", "missing"])
def test_bad_absmax_refused_on_load(bad):
    params, opt = _trained(Lion, 8)
    sd = opt.state_dict()
    st = sd["state"][0]
    a = st["exp_avg_absmax"].clone()
    if bad == "nan":
        a[0] = float("nan")
    elif bad == "negative":
        a[-1] = -1.0
    elif bad == "inf":
        a[0] = float("inf")
    elif bad == "size":
        a = torch.cat([a, a])
    elif bad == "dtype":
        a = a.double()
    if bad == "missing":
        del st["exp_avg_absmax"]
    else:
        st["exp_avg_absmax"] = a
    opt2 = Lion(params, momentum_bits=8, lr=1e-2)
    with pytest.raises(ValueError, match="exp_avg_absmax"):
        opt2.load_state_dict(sd)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_ops_refuse_bad_absmax(backend):
    if backend == "native":
        requires_native("lion_step_")
    p = torch.randn(300)
    g = torch.randn(300)
    m = torch.zeros(300, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="exp_avg_absmax is empty"):
        lion(backend, [p], [g], [m], lr=1e-3)
    with pytest.raises(RuntimeError, match=r"exp_avg_absmax\[0\] must be a contiguous float32 tensor of 2"):
        lion(backend, [p], [g], [m], lr=1e-3, absmax=[torch.zeros(3)])
    with pytest.raises(RuntimeError, match=r"exp_avg_absmax\[0\] must be a contiguous float32 tensor of 2"):
        tiger(backend, [p], [g], [m], lr=1e-3, absmax=[torch.zeros(2, dtype=torch.float64)])


def test_tiger_e_rows_of_2_pow_31_elements_refused():
    """The CUDA update finds an 8-bit Tiger E element's row in 32 bits; the shared host plan refuses
    longer rows on every device, before reading any data (stride-0 views: no 8 GB allocation)."""
    requires_native("tiger_step_")
    n = 2 ** 31
    p, g = torch.zeros(1).expand(1, n), torch.zeros(1).expand(1, n)
    m = torch.zeros(1, dtype=torch.uint8).expand(1, n)
    with pytest.raises(RuntimeError, match="rows shorter than 2\\^31"):
        tiger("native", [p], [g], [m], lr=1e-3, cls="E", absmax=[torch.zeros(n // 256)])


def test_momentum_bits_argument_checked():
    p = [torch.nn.Parameter(torch.randn(3))]
    with pytest.raises(ValueError, match="momentum_bits"):
        Lion(p, momentum_bits=16)
    with pytest.raises(ValueError, match="exclusive"):
        Tiger(p, momentum_bits=8, momentum_dtype=torch.bfloat16)


def test_state_bytes_per_param():
    params, opt = _trained(Lion, 8, steps=1)
    n = sum(p.numel() for p in params)
    state = sum(t.numel() * t.element_size() for p in params
                for k, t in opt.state[p].items() if k in ("exp_avg", "exp_avg_absmax"))
    assert state == n + 4 * sum(math.ceil(p.numel() / 256) for p in params)


# ---- bitsandbytes Lion8bit state ----------------------------------------------------------------------
def test_bitsandbytes_lion8bit_state_loads():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    # min_8bit_size=0 so that the small tensor is stored in 8 bits too
    params = [torch.nn.Parameter(torch.randn(4096 + 100)), torch.nn.Parameter(torch.randn(64, 80))]
    opt = bnb.optim.Lion8bit(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, min_8bit_size=0)
    for t in range(3):
        _grads(params, t)
        opt.step()
    sd = opt.state_dict()
    raw = [opt.state[p] for p in params]
    assert all(r["state1"].dtype == torch.uint8 for r in raw)
    # bitsandbytes' own dequantisation of its state, computed with its functional API
    want = [bnb.functional.dequantize_blockwise(r["state1"], absmax=r["absmax1"], code=r["qmap1"],
                                                blocksize=256).float() for r in raw]
    for bits in (32, 8):
        mine = Lion([torch.nn.Parameter(p.detach().clone()) for p in params], momentum_bits=bits)
        mine.load_state_dict(sd)
        g = mine.param_groups[0]
        assert g["lr"] == 1e-3 and tuple(g["betas"]) == (0.9, 0.99) and g["weight_decay"] == 0.1
        for p, w in zip(mine.param_groups[0]["params"], want):
            st = mine.state[p]
            if bits == 32:
                torch.testing.assert_close(st["exp_avg"], w.view(p.shape), rtol=0, atol=0)
            else:
                codes, absmax = m8.encode(w.view(-1))
                assert torch.equal(st["exp_avg"].view(-1), codes) and torch.equal(st["exp_avg_absmax"], absmax)


# ---- CUDA: the same bits as the CPU kernels (skipped without a GPU) -------------------------------
# The CUDA block code is also run on the CPU against the CPU kernels in every CI run
# (csrc/tests/test_mta.cpp); these compare the compiled kernels on a real device.
CUDA_SIZES = SIZES + [(2 * 65536 + 300,), (90, 768)]  # several flat chunks; rows across chunks


def _cuda():
    requires_native("lion_step_", "cuda")
    requires_native("tiger_step_", "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,precision", MODES, ids=lambda v: str(v).replace("torch.", ""))
def test_cuda_lion_8bit_equals_cpu_native(dtype, precision):
    _cuda()
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, seed=5)
    gpu = _run(Lion, "native", dtype, precision, CUDA_SIZES, device="cuda", **kw)
    cpu = _run(Lion, "native", dtype, precision, CUDA_SIZES, **kw)
    _assert_same(gpu, cpu, f"cuda lion {dtype} {precision}")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,precision", MODES, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("k", [1, 2])
def test_cuda_tiger_8bit_equals_cpu_native(dtype, precision, k):
    """Tiger K/E/V; the E tensors' step sizes come from CUDA's own sums of squares, which agree
    with the CPU's to ~1e-16 relative, so the parameters are compared within an ulp."""
    _cuda()
    kw = dict(lr=2e-2, beta=0.9, weight_decay=0.01, grad_accum_steps=k, seed=7)
    gpu = _run_tiger("native", dtype, precision, CUDA_SIZES, device="cuda", **kw)
    cpu = _run_tiger("native", dtype, precision, CUDA_SIZES, **kw)
    for x, y in zip(gpu[0], cpu[0]):
        torch.testing.assert_close(x.detach().cpu().float(), y.detach().float(), rtol=0,
                                   atol=float(torch.finfo(dtype).eps) * 2)


@pytest.mark.cuda
def test_cuda_tiger_8bit_with_given_step_sizes_is_bitwise():
    """With the step sizes fixed (class V: 0.5 lr), the CUDA step equals the CPU's bit for bit,
    on rows that are not a multiple of the 256-element block and chunks that start mid-row."""
    _cuda()

    def run(device):
        params = _model(torch.bfloat16, [(20000, 7), (90, 1000), (70000,)], 3, device)
        opt = Tiger([dict(params=params, tiger_class="V", shrink_center=0.0)], momentum_bits=8, backend="native",
                    lr=1e-2, precision="stochastic", seed=11)
        for t in range(3):
            _grads(params, t)
            opt.step()
        return params, opt

    _assert_same(run("cuda"), run("cpu"), "cuda tiger V bf16 stochastic")


@pytest.mark.cuda
@pytest.mark.parametrize("algo", ["lion", "tiger_guard", "tiger_noguard"])
def test_cuda_8bit_nonfinite_gradients_match_cpu(algo):
    """NaN/Inf gradients (NaN momentum code 0x80, Inf saturated, the guard's shrink) as the CPU."""
    _cuda()
    shapes = [(257,), (1000,)]  # K and V: step sizes that do not depend on a sum's order

    def run(device):
        if algo == "lion":
            return _run(Lion, "native", torch.float32, "none", shapes, grad_hook=_poison_1d, device=device, lr=1e-2)
        return _run(Tiger, "native", torch.float32, "none", shapes, grad_hook=_poison_1d, device=device, lr=1e-2,
                    tiger_class="V", nonfinite_guard=algo == "tiger_guard")

    _assert_same(run("cuda"), run("cpu"), f"cuda {algo} non-finite")


def _poison_1d(t, params):
    if t == 1:
        params[1].grad.view(-1)[100] = float("nan")
        params[0].grad.view(-1)[0] = -float("inf")


@pytest.mark.cuda
@pytest.mark.parametrize("algo", ["lion", "tiger"])
def test_cuda_8bit_steps_do_not_synchronise_and_replay_in_a_graph(algo):
    """Four eager 8-bit steps (no host synchronisation: set_sync_debug_mode("error")) equal four
    replays of one captured step bit for bit (Tiger with k = 2: the phase advances on the device)."""
    _cuda()
    shapes = [(4097,), (70000,), (20, 768)]
    lr = torch.tensor(1e-3, dtype=torch.float64, device="cuda")

    def fresh():
        g = torch.Generator().manual_seed(1)
        params = [(torch.randn(s, generator=g) * 0.5).to(torch.bfloat16).cuda() for s in shapes]
        grads = [torch.randn(s, generator=g).to(torch.bfloat16).cuda() for s in shapes]
        moms = [torch.zeros(s, dtype=torch.uint8, device="cuda") for s in shapes]
        absmax = [torch.zeros((p.numel() + 255) // 256, device="cuda") for p in params]
        steps = [torch.zeros((), dtype=torch.int64, device="cuda") for _ in shapes]
        return params, grads, moms, absmax, steps

    def step(st):
        params, grads, moms, absmax, steps = st
        if algo == "lion":
            lion("native", params, grads, moms, lr=lr, steps=steps, absmax=absmax, precision="stochastic")
        else:
            tiger("native", params, grads, moms, lr=lr, steps=steps, absmax=absmax, precision="stochastic", k=2)

    eager = fresh()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            step(eager)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graphed, start = fresh(), fresh()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step(graphed)  # warm-up
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(graphed)
    for dst, src in zip(sum(graphed, []), sum(start, [])):
        dst.copy_(src)
    for _ in range(4):
        graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(sum(eager, []), sum(graphed, [])):  # params, grads, codes, absmax, steps
        if a.is_floating_point():
            assert_bitwise_equal(a.cpu(), b.cpu(), f"graph {algo}")
        else:
            assert torch.equal(a.cpu(), b.cpu()), f"graph {algo}"


@pytest.mark.cuda
def test_cuda_8bit_auto_backend_uses_the_native_kernel():
    _cuda()
    p = torch.nn.Parameter(torch.randn(300, device="cuda"))
    p.grad = torch.ones_like(p)
    opt = Lion([p], lr=1e-2, momentum_bits=8)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert opt.state[p]["exp_avg"].device.type == "cuda"


@pytest.mark.parametrize("kind", ["lion", "tiger"])
def test_8bit_training_tracks_32bit(kind):
    """A small regression MLP trained 100 steps with 8-bit and with 32-bit momentum: the parameters'
    displacement from init points the same way (cosine > 0.97), the two end points lie within a
    quarter of the 32-bit displacement of each other, and the final losses agree within 10%."""
    def run(bits):
        torch.manual_seed(0)
        x = torch.randn(512, 64)
        y = x @ (torch.randn(64, 8) / 8) + 0.1 * torch.randn(512, 8)
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 8))
        init = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = (Lion(model.parameters(), lr=3e-3, momentum_bits=bits) if kind == "lion"
               else Tiger(tiger_param_groups(model), lr=2e-2, momentum_bits=bits))
        for t in range(100):
            i = torch.randint(0, 512, (64,), generator=torch.Generator().manual_seed(t))
            loss = ((model(x[i]) - y[i]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        end = torch.cat([p.detach().flatten() for p in model.parameters()])
        return end - init, ((model(x) - y) ** 2).mean().item()

    d32, loss32 = run(32)
    d8, loss8 = run(8)
    assert torch.nn.functional.cosine_similarity(d32, d8, dim=0) > 0.97
    assert (d32 - d8).norm() < 0.25 * d32.norm()
    assert abs(loss8 - loss32) < 0.1 * loss32
