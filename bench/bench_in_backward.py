"""The cost of Tiger's non-finite guard with the step inside backward (step_in_backward) against
the usual backward-then-step() loop. The guard reads each gradient once more before the update
writes it; after a whole backward that read comes from memory, inside backward the gradient was
written a moment ago and is still in cache. Each variant is a training iteration (forward,
backward, step) of a model whose backward is cheap, so the optimizer dominates: loss =
sum_i <W_i, C_i> over the parameter shapes of --shapes (gradient of W_i is C_i, written by
autograd). Variants are timed interleaved round by round (median ms per iteration); the guard's
cost is (guard on) - (guard off) in each mode, also as a fraction of the step-only time.

    python bench/bench_in_backward.py [--shapes gpt2-small] [--dtype float32] [--threads 1]
        [--rounds 15]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tigercore.benchmarks.optim import make_params
from tigercore.benchmarks.shapes import SHAPE_SETS, flat
from tigercore.optim import Tiger, step_in_backward


class Variant:
    def __init__(self, shapes, dtype, guard: bool, in_backward: bool):
        self.params = make_params(shapes, dtype)
        gen = torch.Generator().manual_seed(1)
        self.coeffs = [torch.randn(p.shape, generator=gen).to(dtype) for p in self.params]
        self.opt = Tiger(self.params, lr=1e-4, nonfinite_guard=guard)
        self.handle = step_in_backward(self.params, self.opt) if in_backward else None
        self.step_ms: list[float] = []

    def iteration(self):
        loss = sum((w * c).sum() for w, c in zip(self.params, self.coeffs))
        loss.backward()
        if self.handle is None:
            t0 = time.perf_counter()
            self.opt.step()
            self.step_ms.append((time.perf_counter() - t0) * 1e3)
            self.opt.zero_grad(set_to_none=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="gpt2-small", help=f"{sorted(SHAPE_SETS)} or flat:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = flat(int(args.shapes[5:])) if args.shapes.startswith("flat:") else SHAPE_SETS[args.shapes]()
    dtype = getattr(torch, args.dtype)
    variants = {(mode, guard): Variant(shapes, dtype, guard, mode == "in backward")
                for mode in ("after backward", "in backward") for guard in (False, True)}
    times = {k: [] for k in variants}
    for v in variants.values():  # warm-up: state, carried sums
        for _ in range(2):
            v.iteration()
    for _ in range(args.rounds):
        for k, v in variants.items():
            t0 = time.perf_counter()
            v.iteration()
            times[k].append((time.perf_counter() - t0) * 1e3)
    ms = {k: statistics.median(t) for k, t in times.items()}
    step_only = statistics.median(variants[("after backward", False)].step_ms[2:])
    print(f"Tiger, {args.shapes}, {args.dtype}, {args.threads} thread(s), median of {args.rounds} interleaved rounds")
    print(f"{'mode':<16}{'guard off ms':>14}{'guard on ms':>13}{'guard ms':>10}{'guard / step':>14}")
    for mode in ("after backward", "in backward"):
        off, on = ms[(mode, False)], ms[(mode, True)]
        print(f"{mode:<16}{off:>14.2f}{on:>13.2f}{on - off:>10.2f}{(on - off) / step_only:>13.1%}")
    print(f"(step alone, after backward, guard off: {step_only:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
