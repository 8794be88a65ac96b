"""`tigercore bench --memory` (tigercore/benchmarks/memory.py): bytes per parameter of a training step.

Known answers from the state layouts, with n parameters in k tensors: AdamW fp32 keeps params,
grads, exp_avg, exp_avg_sq (4 B each) and a float32 0-d step per tensor: 16n + 4k; Lion fp32 12n
plus per tensor an int64 0-d step and an int64 [2] parameter stamp (24k); bf16 params per precision mode as the README lists. The
peak is checked against an optimizer whose step allocates a buffer of a known size.
"""
from __future__ import annotations

import json

import pytest
import torch

from tigercore import optim as tc_optim
from tigercore.__main__ import main
from tigercore.benchmarks import memory as M

WIDTH, DEPTH, BATCH = 64, 2, 2


def _sizes():
    model = M.mlp(WIDTH, DEPTH)
    ps = list(model.parameters())
    return sum(p.numel() for p in ps), len(ps), max(p.numel() for p in ps)


N, K, BIGGEST = _sizes()
PER_TENSOR = 8 + 16  # tigercore: 'step' (int64) and 'param_stamp' (int64 [2]) per tensor


def _measure(make, dtype=torch.float32):
    return M.measure_row(M.Row("t", make, dtype), WIDTH, DEPTH, BATCH)


def test_model_size_independent():
    # depth x (LayerNorm weight+bias, Linear weight+bias)
    assert (N, K) == (DEPTH * (2 * WIDTH + WIDTH * WIDTH + WIDTH), 4 * DEPTH)


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_fp32_is_16_bytes_per_param(fused):
    r = _measure(lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=fused, foreach=None if fused else False))
    assert r["bytes"] == {"params": 4 * N, "grads": 4 * N, "state": 8 * N + 4 * K}
    assert r["persistent_bytes"] == 16 * N + 4 * K


def test_lion_fp32_is_12_bytes_per_param():
    r = _measure(lambda ps: tc_optim.Lion(ps, lr=1e-4))
    assert r["bytes"] == {"params": 4 * N, "grads": 4 * N, "state": 4 * N + PER_TENSOR * K}
    assert r["persistent_bytes"] == 12 * N + PER_TENSOR * K


# state bytes per parameter for bf16 params: momentum + master (fp32) or kahan_comp (bf16)
BF16_STATE = {("master", None): 8, ("kahan", None): 6, ("stochastic", None): 4, ("none", None): 4,
              ("stochastic", torch.bfloat16): 2, ("master", torch.bfloat16): 6}


@pytest.mark.parametrize("mode,momentum", list(BF16_STATE))
def test_bf16_params_per_precision_mode(mode, momentum):
    r = _measure(lambda ps: tc_optim.Lion(ps, lr=1e-4, precision=mode, momentum_dtype=momentum), torch.bfloat16)
    assert r["bytes"] == {"params": 2 * N, "grads": 2 * N, "state": BF16_STATE[mode, momentum] * N + PER_TENSOR * K}


class ScratchSGD(torch.optim.Optimizer):
    """SGD whose step holds a buffer of `scratch` float32 elements: a transient of known size."""

    def __init__(self, params, scratch: int):
        super().__init__(params, {"lr": 1e-3})
        self.scratch = scratch

    @torch.no_grad()
    def step(self):
        buf = torch.ones(self.scratch)
        for group in self.param_groups:
            for p in group["params"]:
                p.sub_(p.grad, alpha=group["lr"])
        del buf


def test_peak_counts_step_transients_and_not_activations():
    scratch = 10 * N  # larger than anything backward holds, so the peak is in the step
    r = _measure(lambda ps: ScratchSGD(ps, scratch))
    assert r["persistent_bytes"] == 8 * N
    assert r["peak_bytes"] == 8 * N + 4 * scratch
    assert r["peak_phase"] == "step"
    assert r["activation_bytes"] >= 4 * BATCH * WIDTH  # the forward ran, and was kept apart
    assert r["left_live_bytes"] == 0


def test_peak_sees_adamw_for_loop_temporaries():
    # the for-loop AdamW computes denom = sqrt(exp_avg_sq) / c + eps out of place, tensor by tensor;
    # the fused kernel does not
    loop = _measure(lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=False))
    fused = _measure(lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True))
    assert loop["peak_bytes"] - loop["persistent_bytes"] >= 4 * BIGGEST
    assert fused["peak_bytes"] - fused["persistent_bytes"] < 4 * BIGGEST


def test_peak_agrees_with_torch_memtracker():
    # an independent tracker (a TorchDispatchMode over op outputs, torch.distributed._tools): the
    # same peak up to the few scalar tensors kernels allocate internally, which only the allocator
    # trace sees
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed (MemTracker) is not available in this torch build")
    from torch.distributed._tools.mem_tracker import MemTracker
    row = M.Row("adamw", lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=False))
    ours = M.measure_row(row, WIDTH, DEPTH, BATCH)
    run = M._Runner(row, WIDTH, DEPTH, BATCH)
    run.iteration(), run.iteration()
    tracker = MemTracker()
    tracker.track_external(run.model, run.opt)
    with tracker:
        run.iteration()
    theirs = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    assert 0 <= ours["peak_bytes"] - theirs <= 64


def test_state_of_a_wrapper_subclass_is_its_inner_tensors():
    from torch.testing._internal.two_tensor import TwoTensor
    a, b = torch.zeros(100), torch.zeros(100)
    assert M.storage_bytes([TwoTensor(a, b)]) == 800
    assert M.storage_bytes([TwoTensor(a, a), b]) == 800
    assert M.storage_bytes([a, a[10:], a.view(10, 10)]) == 400  # one storage counted once


def test_rows_skip_with_reason_or_raise():
    logged = []
    ok = M.Row("lion", lambda ps: tc_optim.Lion(ps))
    absent = M.Row("absent", lambda ps: tc_optim.Lion(ps), needs=lambda: "feature X is absent")
    broken = M.Row("broken peer", lambda ps: 1 / 0, optional=True)
    res = M.run_rows([ok, absent, broken], WIDTH, DEPTH, BATCH, rounds=1, reference="lion", log=logged.append)
    assert res[0]["step_x_ref"] == 1.0 and res[0]["persistent_bytes"] == 12 * N + PER_TENSOR * K
    assert res[1] == {"name": "absent", "skipped": "feature X is absent"}
    assert res[2]["skipped"].startswith("ZeroDivisionError")
    assert logged == ["skipped: absent: feature X is absent", f"skipped: broken peer: {res[2]['skipped']}"]
    with pytest.raises(ZeroDivisionError):  # a tigercore row that fails is a bug, not a skip
        M.run_rows([M.Row("broken", lambda ps: 1 / 0)], WIDTH, DEPTH, BATCH, rounds=1, log=logged.append)


def test_in_backward_rows_hold_no_gradient_buffer(monkeypatch):
    # a stand-in for tigercore.optim.step_in_backward: step each parameter when its gradient is
    # complete, then free the gradient; the harness must then see no gradient at step time and a
    # peak below params + a full gradient buffer
    def step_in_backward(model, opt):
        def hook(p):
            opt.step()
            p.grad = None
        return [p.register_post_accumulate_grad_hook(hook) for p in model.parameters()]

    monkeypatch.delattr(M.tc_optim, "step_in_backward", raising=False)
    assert "step_in_backward" in M.needs_step_in_backward()
    monkeypatch.setattr(M.tc_optim, "step_in_backward", step_in_backward, raising=False)
    assert M.needs_step_in_backward() is None
    r = M.measure_row(M.Row("sgd in backward", lambda ps: torch.optim.SGD(ps, lr=1e-3), in_backward=True,
                            needs=M.needs_step_in_backward), WIDTH, DEPTH, BATCH)
    assert r["bytes"] == {"params": 4 * N, "grads": 0, "state": 0}
    assert 4 * N < r["peak_bytes"] < 8 * N and r["peak_phase"] == "backward"


def test_default_rows_build_or_say_why_not():
    rows = M.default_rows(peers=False)
    names = [r.name for r in rows]
    assert len(set(names)) == len(names) and names[0] == "torch AdamW (fused)"
    goal = "tigercore Tiger, bf16 stochastic, 8-bit momentum, step in backward"
    assert goal in names and next(r for r in rows if r.name == goal).in_backward
    for row in rows:
        if row.needs() is None:
            opt = row.make([torch.nn.Parameter(torch.zeros(4, 4, dtype=row.dtype))])
            assert isinstance(opt, torch.optim.Optimizer), row.name
        else:
            assert isinstance(row.needs(), str) and row.needs()


def test_needs_helpers():
    assert M.needs_module("torch") is not None and M.needs_module("torch")() is None
    assert "not installed" in M.needs_module("surely_not_a_module_xyz")()
    assert M.needs_kwarg(tc_optim.Lion, "precision")() is None
    assert "no 'no_such_kwarg'" in M.needs_kwarg(tc_optim.Lion, "no_such_kwarg")()


def test_cli_memory_flag(tmp_path, monkeypatch, capsys):
    rows = [M.Row("torch AdamW (fused)", lambda ps: torch.optim.AdamW(ps, fused=True)),
            M.Row("tigercore Tiger, bf16 stochastic", lambda ps: tc_optim.Tiger(ps, precision="stochastic"),
                  torch.bfloat16),
            M.Row("needs X", lambda ps: None, needs=lambda: "X is absent")]
    monkeypatch.setattr(M, "MODEL", {"width": WIDTH, "depth": DEPTH, "batch": BATCH})
    monkeypatch.setattr(M, "default_rows", lambda peers=True: rows)
    assert main(["bench", "--memory", "--repeats", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped: X is absent" in out and "tigercore Tiger, bf16 stochastic" in out
    data = json.loads((tmp_path / "memory.json").read_text())
    tiger = data["rows"][1]
    assert tiger["bytes"]["params"] == tiger["bytes"]["grads"] == 2 * N
    # fp32 momentum, the int64 steps, and a few float64 carried sums of squares per tensor
    assert 4 * N + 8 * K <= tiger["bytes"]["state"] <= 4 * N + 8 * K + 64 * K
    assert data["rows"][0]["step_x_ref"] == 1.0 and data["rows"][2] == {"name": "needs X", "skipped": "X is absent"}
