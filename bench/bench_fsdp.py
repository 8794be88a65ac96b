"""Optimizer step time under FSDP2 (fully_shard, 2 gloo processes on the CPU by default): tigercore
Lion and Tiger against torch AdamW (its default foreach implementation) on the same sharded model,
timed interleaved round by round in the same run, so the ratios hold on a shared machine. Each
optimizer has its own copy of the model (stepping another's parameters would be an external
write for Tiger's carried sums). A step is timed from a barrier to its end on every rank; the
reported time is the median over rounds of the slower rank. Also prints Tiger's collectives per
step and their bytes, counted with a dispatch mode (docs/semantics.md, "Distributed").

    python bench/bench_fsdp.py [--shapes gpt2-small] [--dtype float32] [--world 2] [--rounds 15]
        [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tigercore.benchmarks.shapes import SHAPE_SETS, numel_of  # noqa: E402
from tigercore.optim import Lion, Tiger, tiger_param_groups  # noqa: E402


def tiny():
    """A 2-layer GPT-style shape list (d = 64) for a quick smoke run."""
    d, shapes = 64, [("wte", (1000, 64)), ("wpe", (128, 64))]
    for i in range(2):
        shapes += [(f"h{i}.ln_1.weight", (d,)), (f"h{i}.attn.qkv.weight", (d, 3 * d)), (f"h{i}.attn.qkv.bias", (3 * d,)),
                   (f"h{i}.mlp.fc.weight", (d, 4 * d))]
    return shapes


SETS = dict(SHAPE_SETS, tiny=tiny)


class Block(nn.Module):
    """The parameters of one layer (names as in the shape list), initialised like a trained net."""

    def __init__(self, shapes, dtype):
        super().__init__()
        self.names = {}
        for name, shape in shapes:
            key = name.replace(".", "_")
            self.names[key] = name
            t = torch.randn(shape, dtype=torch.float32) * 0.02 + (1.0 if name.endswith("ln_1.weight") else 0.0)
            self.register_parameter(key, nn.Parameter(t.to(dtype)))

    def forward(self, x):
        return x


def build_model(shapes, dtype):
    """One Block per layer prefix (h0., h1., ...; embeddings and final norm in their own)."""
    groups = {}
    for name, shape in shapes:
        prefix = name.split(".")[0]
        groups.setdefault(prefix, []).append((name, shape))
    return Model({k: Block(v, dtype) for k, v in groups.items()})


class Model(nn.ModuleDict):
    def forward(self, x):  # fully_shard wants a forward; the benchmark times optimizer steps only
        return x


def tiger_groups(model):
    """Tiger classes from the shape names: embeddings E, 2-D weights K, the rest V (norm weights
    with centre 1), as tiger_param_groups assigns them for a real GPT-2."""
    e, k, v1, v0 = [], [], [], []
    for block in model.values():
        for key, p in block.named_parameters():
            name = block.names[key]
            if name in ("wte", "wpe"):
                e.append(p)
            elif p.dim() >= 2:
                k.append(p)
            elif "ln" in name and name.endswith("weight"):
                v1.append(p)
            else:
                v0.append(p)
    return [{"params": e, "tiger_class": "E"}, {"params": k, "tiger_class": "K"},
            {"params": v1, "tiger_class": "V", "shrink_center": 1.0}, {"params": v0, "tiger_class": "V"}]


def count_collectives(fn):
    """The collectives (c10d and functional) dispatched while fn runs: [(op name, bytes)]."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace in ("c10d", "_c10d_functional") and "wait" not in func.name() \
                    and "wrap" not in func.name():
                t = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]
                self.calls.append((func.name().split("::")[-1], t.numel() * t.element_size()))
            return func(*args, **(kwargs or {}))

    with Count() as c:
        fn()
    return c.calls


CANDIDATES = {
    "AdamW (torch default)": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01),
    "AdamW (torch, foreach)": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01, foreach=True),
    "AdamW (torch, fused)": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01, fused=True),
    "Lion": lambda m: Lion(m.parameters(), lr=1e-4, weight_decay=0.1),
    "Tiger": lambda m: Tiger(tiger_groups(m), lr=1e-3),
}


def worker(rank, world, args, out):
    from torch.distributed.fsdp import fully_shard
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method="file://" + os.path.join(out, "store"), rank=rank, world_size=world)
    shapes = SETS[args.shapes]()
    dtype = getattr(torch, args.dtype)
    opts = {}
    for name, make in CANDIDATES.items():
        torch.manual_seed(0)
        model = build_model(shapes, dtype)
        for block in model.values():
            fully_shard(block)
        fully_shard(model)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opts[name] = make(model)
    tiger_calls = count_collectives(lambda: opts["Tiger"].step())
    for opt in opts.values():  # warm-up: state, master copies and carried sums exist afterwards
        opt.step()
        opt.step()
    times = {name: [] for name in opts}
    names = list(opts)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            dist.barrier()
            t0 = time.perf_counter()
            opts[name].step()
            dt = torch.tensor(time.perf_counter() - t0, dtype=torch.float64)
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)  # the slower rank
            times[name].append(dt.item() * 1e3)
    if rank == 0:
        ms = {name: statistics.median(v) for name, v in times.items()}
        base = ms["AdamW (torch default)"]
        print(f"{args.shapes} ({numel_of(shapes) / 1e6:.0f}M parameters), {args.dtype}, FSDP2 over {world} gloo "
              f"processes, {args.threads} thread(s) each, {args.rounds} rounds; load before: {args.load}")
        print(f"{'optimizer':>24s} {'ms/step':>9s} {'vs AdamW':>9s}")
        for name, v in ms.items():
            print(f"{name:>24s} {v:9.2f} {v / base:9.3f}")
        print(f"Tiger collectives per step: {[(c, b) for c, b in tiger_calls]} (name, bytes)")
        sys.stdout.flush()
    dist.destroy_process_group()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="gpt2-small", choices=sorted(SETS))
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    args.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(worker, args=(args.world, args, out), nprocs=args.world)


if __name__ == "__main__":
    main()
