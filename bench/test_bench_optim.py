"""pytest-benchmark: one optimizer step on a flat 4M-element tensor, tigercore's fused kernels
against the torch._foreach Lion, the torch.compile'd Lion and torch's fused AdamW. Compare the
rows' means; bytes moved per step are in each benchmark's extra_info."""
import pytest
import torch

from tigercore.benchmarks import optim as bo

NUMEL = 1 << 22


def _cands():
    return {c.name: c for c in bo.candidates(precision="master", include_reference=False, include_peers=True,
                                                low_precision=True)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", list(_cands()))
def test_step(benchmark, name, dtype):
    cand = _cands()[name]
    params = bo.make_params([("flat", (NUMEL,))], dtype)
    try:
        opt = cand.make(params)
        opt.step()
    except Exception as e:  # a peer without this dtype
        pytest.skip(f"{name}: {e}")
    benchmark.extra_info["bytes_moved"] = bo.bytes_moved([(p, opt.state[p]) for p in params])
    benchmark.extra_info["threads"] = torch.get_num_threads()
    benchmark(opt.step)
