"""Lion and Tiger under FSDP2 / tensor parallel / 2-D meshes / DDP / torch.distributed.checkpoint,
and GammaEstimator under torchrun, with real gloo processes on the CPU (docs/semantics.md,
"Distributed"). The scenarios (tests/_dist_scenarios.py) run in one spawned group of 2 and one of
4 processes; each compares the sharded optimizer with the same optimizer in one process on the
full tensors. References: single-process tigercore (itself tested against float64 formulas) and
math.fsum for Tiger's sums of squares; for GammaEstimator one process that saw all the data.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import _dist_scenarios as S

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available in this torch build")

GROUP2 = ["lion_fsdp", "lion_bf16_none", "lion_bf16_kahan", "lion_bf16_stochastic", "lion_bf16_master",
          "tiger_fsdp", "tiger_guard_off", "tiger_accum", "tiger_bf16_none", "tiger_bf16_kahan",
          "tiger_bf16_stochastic", "tiger_bf16_master", "tp_lion", "tp_tiger", "tp_tiger_bf16_kahan",
          "tp_stochastic_refused", "mixed_refused", "whole_tensor_options_refused", "ddp", "dcp", "step_in_backward",
          "full_state_load", "sharded_grad_scaler"]
GROUP4 = ["lion_fsdp", "tiger_fsdp", "fsdp_2d_tp", "hsdp"]
TIMEOUT = 400  # seconds for a whole group (a hung collective times out after 60 s in the workers)


def _run_group(world, names, out):
    import torch.multiprocessing as mp
    ctx = mp.start_processes(S.worker, args=(world, str(out), names), nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError(f"the {world}-process group did not finish within {TIMEOUT} s")
    return [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(world)]


@pytest.fixture(scope="module")
def group2(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist2")
    return out, _run_group(2, GROUP2, out)


@pytest.fixture(scope="module")
def group4(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist4")
    return out, _run_group(4, GROUP4, out)


def _failures(results, name):
    return [f"rank {r}: {msg}" for r, res in enumerate(results) for msg in res[name]]


@pytest.mark.parametrize("name", GROUP2)
def test_two_processes(group2, name):
    failures = _failures(group2[1], name)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", GROUP4)
def test_four_processes(group4, name):
    failures = _failures(group4[1], name)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", ["lion", "tiger"])
def test_checkpoint_saved_at_two_loads_at_one(group2, kind):
    """The DCP checkpoint written by 2 processes (scenario "dcp") loads into a plain single-process
    model and optimizer; the next two steps on the same gradients reproduce the 2-process run:
    bitwise for Lion; for Tiger the momentum bitwise and the parameters within one bf16 ulp (its
    float64 sums are added in another order: the fp32 step size may differ by one ulp)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    out, results = group2
    assert not _failures(results, "dcp"), "the 2-process save failed"
    torch.manual_seed(99)  # another initialisation: everything must come from the checkpoint
    model = S.Net(torch.bfloat16)
    opt = S.make_opt(kind, model, precision="master")
    sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(sd, checkpoint_id=str(out / f"dcp_{kind}"))
    set_model_state_dict(model, sd["model"])
    set_optimizer_state_dict(model, opt, sd["optim"])
    nxt = torch.load(out / f"dcp_{kind}_next.pt")
    for grads in nxt["grads"]:
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(opt.state[p]["exp_avg"], nxt["want_m"][n]), n
        if kind == "lion":
            assert torch.equal(p.detach(), nxt["want"][n]), n
        else:
            ulp = torch.finfo(torch.bfloat16).eps * nxt["want"][n].float().abs().clamp(min=2.0 ** -126)
            assert bool(((p.detach().float() - nxt["want"][n].float()).abs() <= ulp).all()), n


_GAMMA_WORKER = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from tigercore.dpm import GammaEstimator, NoiseSchedule
    sys.path.insert(0, {tests!r})
    from test_distributed import gamma_share, gamma_model
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    est = GammaEstimator(NoiseSchedule.linear(20, 5e-3, 0.5), "cv")
    table = est.estimate(gamma_model, gamma_share(rank), timesteps="all",
                         generator=torch.Generator().manual_seed(100 + rank), progress=False)
    local = est.result(sync=False)
    torch.save({{"merged": table.one_minus_gamma, "count": table.count, "stderr": table.stderr,
                 "local_count": local.count}}, {out!r} + f"/gamma{{rank}}.pt")
    dist.destroy_process_group()
""")


def gamma_share(rank):
    """Rank r's share of a small dataset: batches r, r + 2, r + 4 of x0 [5, 3] (float64)."""
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(6)]
    return batches[rank::2]


def gamma_model(x, n):
    return 0.8 * x + 0.01 * n.to(x.dtype).view(-1, 1)


def test_gamma_estimator_under_torchrun(tmp_path):
    """GammaEstimator.estimate under torchrun (2 processes on 127.0.0.1, each its share of the data)
    merges to the table of one process that saw both shares with the same noise: counts exactly,
    delta within 1e-12 relative (Chan merges in another order), identical on both ranks."""
    from tigercore.dpm import GammaEstimator, NoiseSchedule
    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("tigercore").__file__)))
    script = tmp_path / "gamma_worker.py"
    script.write_text(_GAMMA_WORKER.format(tests=os.path.dirname(os.path.abspath(__file__)), out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc-per-node=2", "--master-addr=127.0.0.1", str(script)],
                          env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    ranks = [torch.load(tmp_path / f"gamma{r}.pt") for r in range(2)]
    ref = GammaEstimator(NoiseSchedule.linear(20, 5e-3, 0.5), "cv")
    for r in range(2):
        ref.estimate(gamma_model, gamma_share(r), timesteps="all", generator=torch.Generator().manual_seed(100 + r),
                     progress=False)
    want = ref.result()
    for got in ranks:
        assert torch.equal(got["count"], want.count)
        torch.testing.assert_close(got["merged"], want.one_minus_gamma, rtol=1e-12, atol=1e-15, equal_nan=True)
        assert int(got["local_count"].sum()) == 3 * 5 * 20  # 3 batches of 5, every timestep
    assert torch.equal(ranks[0]["merged"].nan_to_num(), ranks[1]["merged"].nan_to_num())
    assert torch.equal(ranks[0]["stderr"].nan_to_num(), ranks[1]["stderr"].nan_to_num())
