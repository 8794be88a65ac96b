"""Tiger's step against Lion's on the same shapes (issue 3: <= 1.05x without the guard, <= 1.15x
with it): tigercore Lion, Tiger without the guard and Tiger with it, timed interleaved round by
round so that this VM's minute-to-minute bandwidth swings hit all three alike; median ms per step
and the ratio to Lion. Flat tensors of growing size show where the guard's second read of the
gradient stops coming from cache ([note: carried sums] (c), optim_ops.cpp).

    python bench/bench_tiger_overhead.py [--dtypes float32,bfloat16] [--threads 1,2]
        [--shapes gpt2-small,flat:262144,flat:2359296,flat:38597376] [--rounds 15]
"""
import argparse

import torch

from tigercore import optim as tc_optim
from tigercore.benchmarks.optim import make_params
from tigercore.benchmarks.shapes import configurations
from tigercore.benchmarks.timing import interleaved_step_ms

CANDIDATES = {
    "Lion": lambda ps: tc_optim.Lion(ps, lr=1e-4),
    "Tiger, no guard": lambda ps: tc_optim.Tiger(ps, lr=1e-4, nonfinite_guard=False),
    "Tiger": lambda ps: tc_optim.Tiger(ps, lr=1e-4),
}


def measure(shapes, dtype, rounds: int) -> dict:
    opts = {name: make(make_params(shapes, dtype)) for name, make in CANDIDATES.items()}
    # two warm-up steps: state, master copies and the carried RMS exist afterwards
    return interleaved_step_ms(opts, rounds)


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--shapes", default="gpt2-small,flat:262144,flat:2359296,flat:38597376")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    rows = []
    print(f"{'shapes':>16s} {'dtype':>8s} {'thr':>3s} {'Lion ms':>8s} {'no guard':>9s} {'guard':>8s} "
          f"{'no guard/Lion':>13s} {'guard/Lion':>10s}")
    for spec, shapes, dname, nt in configurations(args.shapes, args.dtypes, args.threads):
        m = measure(shapes, getattr(torch, dname), args.rounds)
        lion, ng, g = m["Lion"], m["Tiger, no guard"], m["Tiger"]
        rows.append({"shapes": spec, "dtype": dname, "threads": nt, **m})
        print(f"{spec:>16s} {dname:>8s} {nt:>3d} {lion:8.2f} {ng:9.2f} {g:8.2f} {ng / lion:13.3f} {g / lion:10.3f}",
              flush=True)
    print("bf16 rows: bf16 parameters, fp32 momentum, precision 'master' (the default).")
    return rows


if __name__ == "__main__":
    main()
