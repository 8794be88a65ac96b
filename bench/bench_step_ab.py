"""Before/after comparison of tigercore's CPU step between two checkouts (each with its built
extension): Lion and Tiger (with and without the guard) on GPT-2-small's shapes, fp32 and bf16
parameters (precision "master" and "stochastic"), median ms per step. Each checkout runs in its own
process; the processes alternate --repeats times so that a shared machine's load swings hit both,
and the median over repeats is reported with the ratio new/old.

    python bench/bench_step_ab.py OLD_ROOT NEW_ROOT [--threads 2] [--repeats 3] [--steps 9]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time, torch
sys.path.insert(0, sys.argv[1])
import tigercore
from tigercore import optim
assert tigercore.__file__.startswith(sys.argv[1]), tigercore.__file__
torch.set_num_threads(int(sys.argv[2]))
steps = int(sys.argv[3])
d, L, V, T = 768, 12, 50257, 1024
shapes = [(V, d), (T, d)]
for _ in range(L):
    shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
shapes += [(d,), (d,)]
cases = {"Lion fp32": ("Lion", torch.float32, "master", {}),
         "Tiger fp32": ("Tiger", torch.float32, "master", {}),
         "Tiger fp32, no guard": ("Tiger", torch.float32, "master", {"nonfinite_guard": False}),
         "Lion bf16 master": ("Lion", torch.bfloat16, "master", {}),
         "Lion bf16 stochastic": ("Lion", torch.bfloat16, "stochastic", {}),
         "Tiger bf16 stochastic": ("Tiger", torch.bfloat16, "stochastic", {})}
out = {}
gen = torch.Generator().manual_seed(0)
for name, (kind, dtype, precision, extra) in cases.items():
    ps = [torch.nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(dtype)) for s in shapes]
    for p in ps:
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).to(dtype)
    opt = getattr(optim, kind)(ps, lr=1e-4, precision=precision, **extra)
    for _ in range(2):
        opt.step()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter(); opt.step(); ts.append((time.perf_counter() - t0) * 1e3)
    out[name] = statistics.median(ts)
    del ps, opt
print(json.dumps(out))
"""


def run(root: str, threads: int, steps: int) -> dict:
    env = dict(os.environ, PYTHONPATH=root)
    res = subprocess.run([sys.executable, "-c", CHILD, root, str(threads), str(steps)], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=9)
    args = ap.parse_args(argv)
    old, new = os.path.abspath(args.old), os.path.abspath(args.new)
    runs = {old: [], new: []}
    for _ in range(args.repeats):
        for root in (old, new):
            runs[root].append(run(root, args.threads, args.steps))
    print(f"GPT-2-small shapes (124M params), {args.threads} thread(s), median ms per step "
          f"(median over {args.repeats} alternating processes of {args.steps} steps)")
    print(f"{'case':<26}{'old ms':>10}{'new ms':>10}{'new/old':>10}")
    for case in runs[old][0]:
        o = statistics.median(r[case] for r in runs[old])
        n = statistics.median(r[case] for r in runs[new])
        print(f"{case:<26}{o:>10.1f}{n:>10.1f}{n / o:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
