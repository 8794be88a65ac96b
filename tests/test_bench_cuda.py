"""bench/bench_cuda.py's step closures call the ops with the current schema (every configuration,
8-bit momentum included), run here on the CPU kernels with small shapes so the GPU benchmark does
not rot while no GPU exists; its bytes-per-element model against a hand count; and the shape specs
the CPU benchmarks share (tigercore/benchmarks/shapes.py)."""
import importlib.util
import os
import sys

import pytest
import torch

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "bench_cuda.py")
_spec = importlib.util.spec_from_file_location("bench_cuda", _PATH)
bc = importlib.util.module_from_spec(_spec)
sys.modules["bench_cuda"] = bc
_spec.loader.exec_module(bc)

SMALL = {"E": [(50, 16), (8, 16)], "K": [(16, 48), (300,)], "V": [(16,), (48,)]}


@pytest.mark.parametrize("config", bc.CONFIGS, ids=lambda c: c.label)
def test_step_closure_runs_and_moves_parameters(config):
    import tigercore  # noqa: F401  (registers the ops)
    step = bc.make_step(config, device="cpu", shapes=SMALL)
    before = [p.clone() for p in step.params]
    step()
    step()
    assert len(step.params) == 6
    for b, p in zip(before, step.params):
        assert torch.isfinite(p).all() and not torch.equal(b, p)  # lr > 0 and random gradients


def test_bytes_model():
    fp32 = bc.Config("lion", torch.float32, torch.float32)
    assert bc.bytes_per_element(fp32) == 4 + 2 * 4 + 2 * 4  # g; m in/out; theta in/out
    q8 = bc.Config("lion", torch.bfloat16, torch.uint8, "stochastic")
    assert bc.bytes_per_element(q8) == pytest.approx(2 + 2 * (1 + 4 / 256) + 2 * 2)
    tiger = bc.Config("tiger", torch.float32, torch.float32)
    assert bc.bytes_per_element(tiger, "K") == 20 + 4 + 4  # + stage 1: theta (RMS) and g (guard)
    assert bc.bytes_per_element(tiger, "V") == 20 + 4


def test_shape_specs_and_configurations():
    """The --shapes/--dtypes/--threads grid of bench/bench_cautious.py and bench_tiger_overhead.py."""
    from tigercore.benchmarks import shapes as sh
    assert sh.from_spec("flat:10") == [("flat", (10,))]
    assert sh.numel_of(sh.from_spec("gpt2-small")) == 124_439_808
    with pytest.raises(ValueError, match="unknown shapes"):
        sh.from_spec("gpt3")
    before = torch.get_num_threads()
    seen = [(spec, d, t, torch.get_num_threads()) for spec, _, d, t in sh.configurations("flat:4,flat:8", "float32,bfloat16", "1")]
    assert [s[:3] for s in seen] == [("flat:4", "float32", 1), ("flat:4", "bfloat16", 1), ("flat:8", "float32", 1),
                                     ("flat:8", "bfloat16", 1)]
    assert all(s[3] == 1 for s in seen) and torch.get_num_threads() == before
