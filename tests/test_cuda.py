"""CUDA kernels: parity with the CPU kernels and the reference for every dtype and mode, the
GradScaler protocol on the device, torch.compile and CUDA-graph capture. Skipped without a GPU;
these run the day a GPU exists (the kernels are compiled in every CI run)."""
import pytest
import torch

from _cases import SHAPES, clone_all, make_tensors, run_case
from conftest import requires_native
from tolerances import assert_bitwise_equal

pytestmark = pytest.mark.cuda
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from _helpers import lion, tiger  # noqa: E402
from tigercore.optim import Lion  # noqa: E402

COMBOS = [(torch.float32, torch.float32, "none"), (torch.float64, torch.float64, "none")] + [
    (d, m, mode) for d in (torch.float16, torch.bfloat16) for m in (torch.float32, d)
    for mode in ("none", "kahan", "stochastic", "master")]


def _to(lists, device):
    return [[t.to(device) for t in lst] for lst in lists]


@pytest.mark.parametrize("combo", COMBOS, ids=str)
@pytest.mark.parametrize("algo", ["lion", "tigerK", "tigerE", "tigerV"])
def test_cuda_matches_cpu_native_bitwise(algo, combo):
    requires_native("lion_step_" if algo == "lion" else "tiger_step_", "cuda")
    dtype, mom, mode = combo
    tensors = make_tensors(SHAPES + [(70000,)], dtype, mom, mode, seed=5)
    cpu = clone_all(*tensors)
    gpu = _to(clone_all(*tensors), "cuda")
    run_case("native", algo, *cpu, mode, n_steps=3)
    steps = [torch.zeros((), dtype=torch.int64, device="cuda") for _ in gpu[0]]
    for _ in range(3):
        if algo == "lion":
            lion("native", *gpu[:3], lr=1e-3, wd=0.1, aux=gpu[3], precision=mode, seed=7, steps=steps)
        else:
            tiger("native", *gpu[:3], lr=2e-3, cls=algo[-1], aux=gpu[3], precision=mode, seed=7, steps=steps)
    for a_list, b_list in zip(cpu, gpu):
        for a, b in zip(a_list, b_list):
            if a.dtype == torch.float64 and algo in ("tigerK", "tigerE"):
                # the fp64 sum of squares is added in a different order on the GPU
                torch.testing.assert_close(a, b.cpu(), rtol=1e-15, atol=1e-300, equal_nan=True)
            else:
                assert_bitwise_equal(a, b.cpu(), f"{algo} {combo}")


def test_cuda_found_inf_skips_without_sync():
    requires_native("lion_step_", "cuda")
    p = [torch.randn(1000, device="cuda")]
    before = p[0].clone()
    steps = lion("native", p, [torch.randn(1000, device="cuda")], [torch.zeros(1000, device="cuda")], lr=1e-3,
                 grad_scale=torch.tensor(2.0, device="cuda"), found_inf=torch.tensor(1.0, device="cuda"))
    assert torch.equal(p[0], before) and int(steps[0]) == 0


def test_cuda_graph_capture_of_a_step():
    requires_native("lion_step_", "cuda")
    p = torch.nn.Parameter(torch.randn(4096, device="cuda"))
    opt = Lion([p], lr=1e-3)
    p.grad = torch.randn(4096, device="cuda")
    opt.step()  # state initialised outside the graph
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        opt.step()
    before = p.detach().clone()
    g.replay()
    torch.cuda.synchronize()
    assert not torch.equal(before, p.detach())


def test_cuda_compiled_step():
    requires_native("lion_step_", "cuda")
    model = torch.nn.Linear(64, 64).cuda()
    opt = Lion(model.parameters(), lr=1e-3)
    x = torch.randn(8, 64, device="cuda")

    @torch.compile
    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()

    for _ in range(3):
        step()
    assert all(int(s["step"]) == 3 for s in opt.state.values())
